"""The disk a sweep's checkpoints take, estimated before it runs (`python -m sweep ... --dry-run`).

While a trial trains, its checkpoint is the whole training state (`trainables.finetuning._snapshot`):
the fp32 weights and AdamW's two fp32 moments of every trained parameter, 12 bytes a parameter.
Sequential realignment (`before`) checkpoints the same (its own optimizer over the encoder); the
realigned model it then keeps (4 bytes a parameter) is dropped from the state at the first
fine-tuning checkpoint (`trainables.trial.run_trial`, `checkpoint_now`), so no checkpoint holds
more than 12 bytes a parameter. Tune keeps the newest checkpoint only (sweep/runner.py,
`CHECKPOINTS_KEPT`) but writes it before it deletes the one it replaces
(ray/train/_internal/checkpoint_manager.py, `register_checkpoint`): two at once, for a moment.
A finished trial keeps its small final state (metrics, no tensors: `trainables.trial.final_state`)
and, with `--keep-models`, its fine-tuned model (safetensors, 4 bytes a parameter).

A model's parameter count is that of the task model built from its config on the meta device (no
weights read, no memory); the paper's hub models have theirs listed, so no hub is asked.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:
    from sweep.experiment import Experiment, Trial
    from trainables.settings import Settings

CHECKPOINT_BYTES_PER_PARAMETER = 12  # fp32 weights + AdamW's exp_avg and exp_avg_sq
CHECKPOINTS_AT_ONCE = 2  # the new one is on disk before Tune deletes the old one
MODEL_BYTES_PER_PARAMETER = 4  # --keep-models: fp32 safetensors, no optimizer
# A final state (torch.save of `final_state`): its config and scores, then each alignment value
# (stage x kind x direction x language x layer) as a pickled float under a string key. Measured
# on toy trials: 3.9 KB with 72 alignment values, 5.0 KB with 120; rounded up.
FINAL_STATE_BASE_BYTES = 4096
FINAL_STATE_BYTES_PER_VALUE = 24
# The paper's hub models: parameters of the encoder as on the hub (embeddings, layers, pooler;
# from each config.json: vocabulary x hidden size + 6 / 12 / 24 layers), and layer count. The
# task head (at most hidden size x labels) is left out: below 0.01% of these.
KNOWN_MODELS: dict[str, tuple[int, int]] = {
    "distilbert-base-multilingual-cased": (134_734_080, 6),
    "bert-base-multilingual-cased": (177_853_440, 12),
    "xlm-roberta-base": (278_043_648, 12),
    "xlm-roberta-large": (559_890_432, 24),
}
UNITS = ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "KB"))


@dataclass(frozen=True)
class ModelSize:
    parameters: int
    layers: int


@functools.lru_cache(maxsize=None)
def model_size(source: str, task_name: str) -> ModelSize | None:
    """Parameters of the model `task_name` fine-tunes from `source` (its config, read from a local
    folder or the hub when online; the paper's hub models' known sizes), and its layer count;
    None when neither is available."""
    from trainables.models import paper_model

    try:
        return _size_from_config(source, task_name)
    except Exception:  # unreadable or unreachable config: fall back to what is known of the model
        paper = paper_model(source)
        known = KNOWN_MODELS.get(paper.name) if paper is not None else None
        return ModelSize(*known) if known else None


def _size_from_config(source: str, task_name: str) -> ModelSize:
    import torch
    from transformers import AutoConfig

    from trainables.data import is_offline
    from trainables.models import model_family, paper_model
    from trainables.tasks import get_task

    local = os.path.isdir(source)
    if not local and paper_model(source) is not None:
        raise LookupError(source)  # its size is known: no hub request (a dry run must not wait on one)
    task = get_task(task_name)
    config = AutoConfig.from_pretrained(source, local_files_only=local or is_offline(), **task.model_kwargs())
    with torch.device("meta"):  # shapes only: nothing allocated, nothing initialised
        model = task.model_class.from_config(config)
    return ModelSize(sum(p.numel() for p in model.parameters()), model_family(config).num_layers(config))


def final_state_bytes(layers: int, langs: int, stages: int) -> int:
    """The estimated size of one finished trial's checkpoint."""
    values = stages * 2 * 2 * langs * (layers + 1)  # kind (strong, weak) x direction (en-x, x-en)
    return FINAL_STATE_BASE_BYTES + FINAL_STATE_BYTES_PER_VALUE * values


def human_bytes(size: float) -> str:
    """Three significant digits in decimal units: 1.23 GB, 456 MB, 7.8 KB."""
    for scale, unit in UNITS:
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size:.0f} B"


@dataclass(frozen=True)
class TrialDisk:
    peak: int  # bytes while it trains: CHECKPOINTS_AT_ONCE training checkpoints
    final: int  # bytes of its final state
    model: int  # bytes of its saved model (--keep-models)
    cpu: float
    gpu: float


def trial_disk(experiment: "Experiment", trial: "Trial", settings: "Settings") -> TrialDisk | None:
    from trainables.realignment import get_realign_method

    spec = experiment.models[trial.model]
    size = model_size(spec.source, trial.task)
    if size is None:
        return None
    stages = 3 if get_realign_method(trial.realign).sequential else 2  # pretrained, (realigned,) finetuned
    return TrialDisk(peak=CHECKPOINTS_AT_ONCE * CHECKPOINT_BYTES_PER_PARAMETER * size.parameters,
                     final=final_state_bytes(size.layers, len(settings.langs), stages),
                     model=MODEL_BYTES_PER_PARAMETER * size.parameters, cpu=spec.cpu, gpu=spec.gpu)


def running_at_once(trials: list[TrialDisk], cpus: float, gpus: float) -> list[TrialDisk]:
    """The trials that can run at once on a machine of `cpus` and `gpus` with the most checkpoint
    disk: the largest first, as long as their CPU and GPU requests fit (a trial asks for its GPU
    share only where there are GPUs, sweep.trainable.trial_resources)."""
    chosen: list[TrialDisk] = []
    used_cpu = used_gpu = 0.0
    for trial in sorted(trials, key=lambda t: t.peak, reverse=True):
        gpu = trial.gpu if gpus > 0 else 0.0
        if used_cpu + trial.cpu <= cpus + 1e-9 and used_gpu + gpu <= gpus + 1e-9:
            chosen.append(trial)
            used_cpu, used_gpu = used_cpu + trial.cpu, used_gpu + gpu
    return chosen


def disk_plan_lines(experiment: "Experiment", settings: Mapping["Trial", "Settings"], keep_models: bool,
                    cpus: float | None, gpus: float) -> list[str]:
    """The dry run's two lines: checkpoint disk at peak and at the end. `cpus` None: a cluster not
    known here (`--address`): the peak is given per concurrent trial."""
    disks, unknown = [], set()
    for trial in experiment.trials:
        disk = trial_disk(experiment, trial, settings[trial])
        if disk is None:
            unknown.add(trial.model)
        else:
            disks.append(disk)
    if not disks:
        return [f"checkpoint disk: unknown (no parameter count for {', '.join(sorted(unknown))}: its config cannot "
                "be read here)"]
    if cpus is None:
        largest = max(t.peak for t in disks)
        peak = f"peak ~{human_bytes(largest)} per concurrent trial (the cluster decides how many run at once)"
    else:
        running = running_at_once(disks, cpus, gpus)
        sizes = {t.peak for t in running}
        each = f"x {human_bytes(running[0].peak)}" if len(sizes) == 1 else f"up to {human_bytes(running[0].peak)} each"
        trials = f"{len(running)} trial{'s' if len(running) != 1 else ''}"
        peak = (f"peak ~{human_bytes(sum(t.peak for t in running))} ({trials} at once {each}: "
                f"{CHECKPOINT_BYTES_PER_PARAMETER} bytes a parameter, two checkpoints while one replaces the other)")
    models = sum(t.model for t in disks)
    finals = sum(t.final for t in disks)
    if keep_models:
        end = (f"at the end ~{human_bytes(finals + models)} ({len(disks)} final states, {human_bytes(finals)}, "
               f"and their models, {human_bytes(models)}: --keep-models)")
    else:
        end = f"at the end ~{human_bytes(finals)} ({len(disks)} final states; +{human_bytes(models)} with --keep-models)"
    missing = f" (not counted: model {', '.join(sorted(unknown))}, whose config cannot be read here)" if unknown else ""
    return [f"checkpoint disk: {peak}{missing}", f"checkpoint disk: {end}"]

