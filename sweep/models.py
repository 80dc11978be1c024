"""The model registry: names the experiments use, where the weights come from, what a trial needs.

The paper's four models and their GPU shares (distilmBERT 0.25 of a GPU, base models 0.5, large
1) come from `trainables.models.PAPER_MODELS`. An experiment file can add local models (aliases)
and override any share.
"""
from __future__ import annotations

from dataclasses import dataclass

from trainables.models import PAPER_MODELS as PAPER_MODEL_LIST


@dataclass(frozen=True)
class ModelSpec:
    name: str  # the name in results tables
    source: str  # hub id or local folder
    gpu: float  # share of one GPU per trial, used only where the cluster has GPUs
    cpu: float = 1.0  # CPU cores per trial; also the torch thread count of the trial


PAPER_MODELS: dict[str, ModelSpec] = {model.name: ModelSpec(model.name, model.name, gpu=model.gpu)
                                      for model in PAPER_MODEL_LIST}

DEFAULT_LOCAL_GPU_SHARE = 0.25  # a local alias without a share: assume a small model
