"""The model registry: names the experiments use, where the weights come from, what a trial needs.

Resource shares follow the issue: distilmBERT 0.25 of a GPU, base models 0.5, large 1. An
experiment file can add local models (aliases) and override any share.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSpec:
    name: str  # the name in results tables
    source: str  # hub id or local folder
    gpu: float  # share of one GPU per trial, used only where the cluster has GPUs
    cpu: float = 1.0  # CPU cores per trial; also the torch thread count of the trial


PAPER_MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("distilbert-base-multilingual-cased", "distilbert-base-multilingual-cased", gpu=0.25),
        ModelSpec("bert-base-multilingual-cased", "bert-base-multilingual-cased", gpu=0.5),
        ModelSpec("xlm-roberta-base", "xlm-roberta-base", gpu=0.5),
        ModelSpec("xlm-roberta-large", "xlm-roberta-large", gpu=1.0),
    )
}

DEFAULT_LOCAL_GPU_SHARE = 0.25  # a local alias without a share: assume a small model
