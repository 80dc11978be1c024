"""Fine-tuning (optionally with joint realignment), sequential realignment, evaluation, CTL.

Optimisation follows App. B.3 (Wu & Dredze's setup): Adam at `learning_rate` (torch's AdamW,
which with the default `weight_decay` 0 is exactly the reference's Adam, betas (0.9, 0.999), eps
1e-8; a nonzero decay skips biases and norms, the usual convention), batch `batch_size` (32)
reached by accumulating `micro_batch_size` forward passes, `epochs` epochs, learning rate linearly
warmed up over `warmup_ratio` of the *optimizer* steps then linearly decayed to 0. No gradient
clipping: neither the paper nor the reference clips; `max_grad_norm` None (the default) or 0 means
none, a positive value clips the global norm of every optimised parameter (fine-tuning and
realignment alike).

Step counting: an epoch of n examples is ceil(n / batch_size) optimizer steps; the last, partial
batch of an epoch counts as one step. Warm-up is ceil(warmup_ratio * total) steps. With
`schedule_micro_batch_size` = k the schedule is the reference's instead
(training_loops.realignment_training_loop): sized in m = ceil(n / k) micro-batches per epoch
with 5 epochs hard-coded, warm-up int(warmup_ratio * 5 * m) and zero at 5 * m, while the
scheduler still steps once per optimizer step; with accumulation or fewer than 5 epochs the run
ends before the learning rate reaches 0 (or before its warm-up ends).

A loss that is not finite stops the run at once with `NonFiniteLossError` (phase, optimizer step,
epoch, value), before the optimizer applies it: a diverged run cannot recover and would only
waste its remaining steps. The check reads the step's accumulated loss once per optimizer step
(one device synchronisation a step, none per micro-batch).

Loss of an optimizer step: the mean of its micro-batch losses weighted by their example counts
(equal weights when micro-batches are full), which with batch_size == micro_batch_size is exactly
the model's loss on the batch. Joint realignment (Eq. 3) adds `joint_weight` times the loss of one
realignment batch per optimizer step, with its own backward pass (gradients add up, as with one);
with `joint_realign_stream="restart"` (the reference) the batch stream starts over at every epoch.

Batches are length-grouped: each epoch the examples are shuffled (seeded by seed and epoch), cut
into chunks of `length_group_factor * batch_size`, sorted by length inside a chunk, and cut into
optimizer batches, whose order is then shuffled; each batch is padded to its own longest example.

Resuming: `fine_tune` and `realign_sequentially` take and produce one state dict (model,
optimizer, scheduler, counters, RNG states, realignment stream position and head). The data order
of an epoch depends only on (seed, epoch) and the RNGs are restored, so a run resumed from an
epoch-end state ends with exactly the weights of an uninterrupted run (on CPU).
"""
from __future__ import annotations

import math
import random
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from trainables.errors import NonFiniteLossError
from trainables.models import model_family
from trainables.optimizer import LazyRowsAdamW, sparse_embedding_gradients
from trainables.realignment import Realigner
from trainables.runtime import autocast, eval_mode, resolve_device, seed_everything
from trainables.settings import Settings
from trainables.tasks import Features, Task, get_task

StepCallback = Callable[[dict[str, Any]], None]
StateCallback = Callable[[dict[str, Any]], None]
FINETUNE_PHASE = "finetune"
REALIGN_PHASE = "realign"
REALIGN_SCHEDULES = ("linear", "constant")
# The reference sized its fine-tuning schedule for 5 epochs whatever the number of epochs
# (training_loops.realignment_training_loop: `len(task_dataloader) * 5`).
CODE_SCHEDULE_EPOCHS = 5


# --------------------------------------------------------------------------------------------
# Optimizer and schedule


def schedule_steps(n_examples: int, settings: Settings) -> tuple[int, int, int]:
    """(optimizer steps per epoch, total optimizer steps, warm-up steps) for n training examples.

    E.g. 100 examples, batch 32 (micro 8), 5 epochs: 4 steps per epoch (the last one of 4
    examples), 20 in total, 2 of warm-up.
    """
    if n_examples < 1:
        raise ValueError("no training example: cannot fine-tune on an empty set")
    per_epoch = math.ceil(n_examples / settings.batch_size)
    total = per_epoch * settings.epochs
    code = _code_micro_batches(n_examples, settings)
    if code is not None:
        # the reference's own expression and rounding: int(0.1 * len(task_dataloader) * 5)
        return per_epoch, total, int(settings.warmup_ratio * code * CODE_SCHEDULE_EPOCHS)
    return per_epoch, total, warmup_steps(total, settings)


def decay_end_step(n_examples: int, settings: Settings) -> int:
    """The optimizer step at which the learning rate reaches 0: the last one, or with
    `schedule_micro_batch_size` the reference's 5 epochs of micro-batches (module docstring)."""
    code = _code_micro_batches(n_examples, settings)
    return schedule_steps(n_examples, settings)[1] if code is None else CODE_SCHEDULE_EPOCHS * code


def _code_micro_batches(n_examples: int, settings: Settings) -> int | None:
    """Micro-batches per epoch as the reference's schedule counted them, None for ours."""
    k = settings.schedule_micro_batch_size
    if k is None:
        return None
    if k > settings.batch_size:
        raise ValueError(f"setting schedule_micro_batch_size={k} must be <= batch_size={settings.batch_size}")
    return math.ceil(n_examples / k)


def warmup_steps(total_steps: int, settings: Settings) -> int:
    # round() first: 0.1 * 30 is 3.0000000000000004 in floating point, which must give 3, not 4.
    return math.ceil(round(settings.warmup_ratio * total_steps, 9))


class LinearWarmupDecay:
    """LR factor: 0 -> 1 linearly over `warmup` steps, then 1 -> 0 linearly at step `total`.

    A callable object (not a lambda) so that `LambdaLR.state_dict()` saves it.
    """

    def __init__(self, warmup: int, total: int) -> None:
        self.warmup, self.total = warmup, total

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return step / self.warmup
        return max(0.0, (self.total - step) / max(1, self.total - self.warmup))


FUSED_ADAMW_DEVICES = ("cpu", "cuda")  # where torch has a fused AdamW kernel


def make_optimizer(parameters: Sequence[nn.Parameter], settings: Settings) -> torch.optim.AdamW:
    """AdamW; matrices get `weight_decay`, vectors (biases, norm weights) none.

    Frozen parameters (requires_grad False) are left out. The fused kernel (same update rule) is used
    on CPU and CUDA: one pass over all parameters instead of a dozen; on CPU it is ~10x faster than
    the default per-tensor loop for an XLM-R-sized embedding matrix (250k x 384: 0.08 s vs 0.85 s
    a step, measured on this 2-core machine). With `sparse_embedding_updates`, a parameter whose
    gradient is sparse (the word embeddings, `sparse_embedding_gradients`) is updated on the rows
    that ever had a gradient (trainables/optimizer.py: exact with weight decay 0).
    """
    trainable = [p for p in parameters if p.requires_grad]
    groups = [
        {"params": [p for p in trainable if p.ndim >= 2], "weight_decay": settings.weight_decay},
        {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0},
    ]
    fusable = bool(trainable) and all(p.device.type in FUSED_ADAMW_DEVICES for p in trainable)
    kind = LazyRowsAdamW if _sparse_embedding_updates(settings) else torch.optim.AdamW
    return kind(groups, lr=settings.learning_rate, fused=fusable or None)


class ConstantRate:
    """LR factor 1 at every step: the reference's sequential realignment, plain Adam with no
    scheduler (training_loops.realignment_training_loop, `before_optimizer`)."""

    def __call__(self, step: int) -> float:
        return 1.0


def make_scheduler(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, LinearWarmupDecay(warmup, total))


def _apply_step(parameters: Sequence[nn.Parameter], optimizer: torch.optim.Optimizer,
                scheduler: torch.optim.lr_scheduler.LRScheduler, settings: Settings) -> None:
    """One optimizer step of fine-tuning or of sequential realignment, gradients then cleared."""
    # max_grad_norm None or 0: no clipping (the paper and the reference code do not clip).
    if settings.max_grad_norm:
        nn.utils.clip_grad_norm_(parameters, settings.max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def _sparse_embedding_updates(settings: Settings) -> bool:
    # Clipping needs the gradient's norm, which torch does not compute for sparse gradients; with
    # weight decay every row moves at every step, so the touched-rows update would not be AdamW's.
    return settings.sparse_embedding_updates and not settings.max_grad_norm and not settings.weight_decay


def _check_finite(loss: torch.Tensor, where: str, parts: Mapping[str, torch.Tensor | None]) -> None:
    """Raise NonFiniteLossError if `loss` is NaN or infinite (one device sync).

    `where` names the phase and the step; `parts` are the losses summed into it (joint
    realignment), shown in the message so that the failing one is visible.
    """
    loss = loss.detach()
    if bool(torch.isfinite(loss)):
        return
    shown = ", ".join(f"{name} {float(value):g}" for name, value in parts.items() if value is not None)
    raise NonFiniteLossError(f"{where}: the loss is {float(loss):g}{f' ({shown})' if shown else ''}; the run"
                             " diverged (learning_rate too high for this model?)")


def optimizer_batches(lengths: np.ndarray, settings: Settings, seed: int, epoch: int) -> list[np.ndarray]:
    """Example indices of each optimizer step of an epoch, length-grouped (module docstring)."""
    if settings.length_group_factor < 1:
        raise ValueError(f"setting length_group_factor={settings.length_group_factor} must be >= 1")
    rng = np.random.default_rng((seed, epoch))
    shuffled = rng.permutation(len(lengths))
    chunk = settings.length_group_factor * settings.batch_size
    grouped = []
    for start in range(0, len(shuffled), chunk):
        part = shuffled[start : start + chunk]
        grouped.append(part[np.argsort(-lengths[part], kind="stable")])
    ordered = np.concatenate(grouped)
    batches = [ordered[i : i + settings.batch_size] for i in range(0, len(ordered), settings.batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


# --------------------------------------------------------------------------------------------
# Resumable state


def capture_rng() -> dict[str, Any]:
    """Python, NumPy and torch (and CUDA) RNG states, as plain objects (loadable weights_only)."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (kind, keys.tolist(), position, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    random.setstate(_as_tuple(state["python"]))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), position, has_gauss, cached))
    # RNG states must be CPU byte tensors, even if the checkpoint was loaded with map_location="cuda"
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _as_tuple(value: Any) -> Any:
    """random.setstate wants nested tuples; a checkpoint round trip may have made them lists."""
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def _snapshot(
    phase: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    realigner: Realigner | None,
    schedule: dict[str, int],
    **counters: int,
) -> dict[str, Any]:
    """The resumable state. Tensors are the live ones: save it (torch.save) or deepcopy it before
    training goes on."""
    return {
        "phase": phase,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": capture_rng(),
        "realigner": realigner.state_dict() if realigner is not None else None,
        "schedule": dict(schedule),
        **counters,
    }


def _resume(
    state: Mapping[str, Any],
    phase: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    realigner: Realigner | None,
    schedule: Mapping[str, int],
) -> None:
    if state.get("phase") != phase:
        raise ValueError(f"checkpoint is of phase {state.get('phase')!r}, expected {phase!r}")
    if dict(state["schedule"]) != dict(schedule):
        raise ValueError(
            f"checkpoint schedule {dict(state['schedule'])} differs from this run's {dict(schedule)}:"
            " resume with the same settings (epochs, batch_size, warmup_ratio, ...) and data"
        )
    if (state["realigner"] is None) != (realigner is None):
        raise ValueError("checkpoint and this run disagree on whether realignment is used")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if realigner is not None:
        realigner.load_state_dict(state["realigner"])
    restore_rng(state["rng"])


def _to_device(batch: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {name: value.to(device, non_blocking=True) for name, value in batch.items()}


# --------------------------------------------------------------------------------------------
# Fine-tuning


def fine_tune(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    task: str | Task,
    train_examples: Sequence[Mapping[str, Any]] | Features,
    settings: Settings,
    state: Mapping[str, Any] | None = None,
    *,
    seed: int,
    realign: Realigner | None = None,
    on_step: StepCallback | None = None,
    on_epoch_end: StateCallback | None = None,
) -> dict[str, Any]:
    """Fine-tune `model` on `task`; with `realign`, joint realignment (Eq. 3). Returns the final state.

    `state`: None/empty for a fresh run (everything seeded from `seed`), or a state produced at an
    epoch end (given to `on_epoch_end`, possibly through torch.save/torch.load) to resume from.
    `on_step(info)` after each optimizer step, info = {phase, epoch, step, lr, tokens, loss,
    task_loss, realign_loss}; the losses are detached 0-d device tensors (converting one to a float
    waits for the device: do it only when logging). `on_epoch_end(state)` after each epoch: the
    place to checkpoint.
    """
    task = get_task(task)
    if realign is not None and realign.encoder is not model_family(model).encoder(model):
        raise ValueError("fine_tune: joint realignment must use the fine-tuned model's own encoder (model.base_model)")
    features = train_examples if isinstance(train_examples, Features) else task.featurize(tokenizer, train_examples, settings)
    device = resolve_device(settings)
    model.to(device)
    per_epoch, total, warmup = schedule_steps(len(features), settings)
    decay_end = decay_end_step(len(features), settings)
    schedule = {"steps_per_epoch": per_epoch, "total_steps": total, "warmup_steps": warmup, "decay_end": decay_end}
    parameters = list(model.parameters()) + (realign.parameters() if realign is not None else [])
    optimizer = make_optimizer(parameters, settings)
    scheduler = make_scheduler(optimizer, warmup, decay_end)
    if state:
        _resume(state, FINETUNE_PHASE, model, optimizer, scheduler, realign, schedule)
        epoch, step = int(state["epoch"]), int(state["step"])
    else:
        seed_everything(seed)
        epoch, step = 0, 0

    # sparse word-embedding gradients for the optimizer's touched-rows update (trainables/optimizer.py)
    with sparse_embedding_gradients(model, _sparse_embedding_updates(settings)):
        model.train()
        if realign is not None:
            realign.train()
        while epoch < settings.epochs:
            if realign is not None and settings.joint_realign_stream == "restart":
                # the reference's epoch loop made a new iterator of its realignment data at every epoch
                # (training/epoch_loop.py): each epoch reads the same first batches of the stream
                realign.batches.restart()
            for indices in optimizer_batches(features.lengths, settings, seed, epoch):
                lr = scheduler.get_last_lr()[0]
                task_loss = torch.zeros((), device=device)
                for start in range(0, len(indices), settings.micro_batch_size):
                    micro = indices[start : start + settings.micro_batch_size]
                    inputs = _to_device(features.collate(micro), device)
                    with autocast(settings, device):
                        loss = model(**inputs).loss * (len(micro) / len(indices))
                    loss.backward()
                    task_loss += loss.detach()
                realign_loss = None
                total_loss = task_loss
                if realign is not None:
                    realign_loss = realign()  # one realignment batch per optimizer step (App. A)
                    (settings.joint_weight * realign_loss).backward()
                    realign_loss = realign_loss.detach()
                    total_loss = task_loss + settings.joint_weight * realign_loss
                parts = {} if realign is None else {"task loss": task_loss, "realignment loss": realign_loss}
                _check_finite(total_loss, f"fine-tuning, optimizer step {step + 1} of {total} (epoch {epoch + 1} of"
                              f" {settings.epochs})", parts)
                _apply_step(parameters, optimizer, scheduler, settings)
                step += 1
                if on_step is not None:
                    on_step({
                        "phase": FINETUNE_PHASE, "epoch": epoch, "step": step, "total": total, "lr": lr,
                        "tokens": int(features.lengths[indices].sum()),
                        "loss": total_loss, "task_loss": task_loss, "realign_loss": realign_loss,
                    })
            epoch += 1
            if on_epoch_end is not None:
                on_epoch_end(_snapshot(FINETUNE_PHASE, model, optimizer, scheduler, realign, schedule, epoch=epoch, step=step))
    return _snapshot(FINETUNE_PHASE, model, optimizer, scheduler, realign, schedule, epoch=epoch, step=step)


# --------------------------------------------------------------------------------------------
# Sequential realignment (`before`, `l2`, `linear`: a method whose schedule is "before")


def sequential_realign_steps(n_train_examples: int, settings: Settings) -> int:
    """`realign_steps`, or by default as many steps as fine-tuning will take (the reference's
    `realignment_steps_before`)."""
    if settings.realign_steps is not None:
        return settings.realign_steps
    return schedule_steps(n_train_examples, settings)[1]


def realign_sequentially(
    model: PreTrainedModel,
    realigner: Realigner,
    steps: int,
    settings: Settings,
    state: Mapping[str, Any] | None = None,
    *,
    seed: int,
    on_step: StepCallback | None = None,
    on_checkpoint: StateCallback | None = None,
    checkpoint_every: int | None = None,
) -> dict[str, Any]:
    """Realignment alone for `steps` optimizer steps, before fine-tuning. Returns the final state.

    Same optimizer and learning rate as fine-tuning (App. B.3: "the same learning rate and
    schedule as for fine-tuning"). `realign_schedule` "linear" (the paper): warm-up over
    `warmup_ratio` of `steps`, linear decay to 0; "constant" (the reference code): `learning_rate`
    at every step, no warm-up nor decay. The loss is the method's objective unweighted (Eq. 2 for
    `before`; `joint_weight` is for joint realignment only, as in the reference). Only the encoder
    (the model family's, `model.base_model`, which `realigner` must wrap) and the objective's own
    parameters (the projection head; `linear`'s maps, the encoder then getting no gradient) are
    optimised; the optimizer is discarded
    afterwards, fine-tuning starts its own. `on_checkpoint(state)` is called every
    `checkpoint_every` steps (if given) and at the end; `state` resumes from any of those.
    """
    if steps < 0:
        raise ValueError(f"setting realign_steps={steps} must be >= 0")
    if settings.realign_schedule not in REALIGN_SCHEDULES:
        raise ValueError(f"setting realign_schedule={settings.realign_schedule!r}: valid are "
                         f"{', '.join(map(repr, REALIGN_SCHEDULES))}")
    encoder = model_family(model).encoder(model)
    if realigner.encoder is not encoder:
        raise ValueError("realign_sequentially: the realigner must wrap the model's encoder (its family's, model.base_model)")
    device = resolve_device(settings)
    model.to(device)
    constant = settings.realign_schedule == "constant"
    warmup = 0 if constant else warmup_steps(steps, settings)
    schedule = {"total_steps": steps, "warmup_steps": warmup, "schedule": settings.realign_schedule}
    parameters = list(encoder.parameters()) + realigner.parameters()
    optimizer = make_optimizer(parameters, settings)
    scheduler = (torch.optim.lr_scheduler.LambdaLR(optimizer, ConstantRate()) if constant
                 else make_scheduler(optimizer, warmup, steps))
    if state:
        _resume(state, REALIGN_PHASE, model, optimizer, scheduler, realigner, schedule)
        step = int(state["step"])
    else:
        seed_everything(seed)
        step = 0

    with sparse_embedding_gradients(model, _sparse_embedding_updates(settings)):
        model.train()
        realigner.train()
        while step < steps:
            lr = scheduler.get_last_lr()[0]
            loss = realigner()
            _check_finite(loss, f"sequential realignment, optimizer step {step + 1} of {steps}", {})
            loss.backward()
            _apply_step(parameters, optimizer, scheduler, settings)
            step += 1
            if on_step is not None:
                on_step({"phase": REALIGN_PHASE, "step": step, "total": steps, "lr": lr, "loss": loss.detach(),
                         "realign_loss": loss.detach()})
            if on_checkpoint is not None and checkpoint_every and step % checkpoint_every == 0 and step < steps:
                on_checkpoint(_snapshot(REALIGN_PHASE, model, optimizer, scheduler, realigner, schedule, step=step))
    final = _snapshot(REALIGN_PHASE, model, optimizer, scheduler, realigner, schedule, step=step)
    if on_checkpoint is not None:
        on_checkpoint(final)
    return final


# --------------------------------------------------------------------------------------------
# Evaluation


def predict(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    task: str | Task,
    examples: Sequence[Mapping[str, Any]] | Features,
    settings: Settings,
) -> tuple[list[list[str]], list[list[str]]]:
    """(gold, predicted) label strings per example, in example order, as the task decodes them
    (`Task.decode`: token tasks one label per word, whole sentences stitched back from their
    windows; sentence tasks one label per example).

    Batched by `eval_batch_size`, longest rows first (little padding), in eval mode on the
    model's device; what the task keeps of each batch (`Task.batch_predictions`) stays there and
    is brought back to the host once, at the end.
    """
    task = get_task(task)
    features = examples if isinstance(examples, Features) else task.featurize(tokenizer, examples, settings)
    if len(features) == 0:
        raise ValueError(f"no {task.name} example to evaluate")
    device = next(model.parameters()).device
    order = np.argsort(-features.lengths, kind="stable")
    batches = [order[i : i + settings.eval_batch_size] for i in range(0, len(order), settings.eval_batch_size)]
    predictions = []
    with eval_mode(model), autocast(settings, device):
        for indices in batches:
            inputs = features.collate(indices)
            inputs.pop("labels")
            predictions.append(task.batch_predictions(model(**_to_device(inputs, device))))
    return task.decode(features, batches, predictions)


def evaluate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    task: str | Task,
    examples: Sequence[Mapping[str, Any]] | Features,
    settings: Settings,
) -> float:
    """The task's metric (accuracy or entity F1, in [0, 1]) of `model` on `examples`.

    Predictions go through the task's `postprocess` hook first, if it has one (WikiANN: the
    reference's IOB2 repair before seqeval, setting `ner_post_processing`); gold labels never do.
    """
    task = get_task(task)
    gold, predicted = predict(model, tokenizer, task, examples, settings)
    if task.postprocess is not None:
        predicted = task.postprocess(predicted, settings)
    return task.metric(gold, predicted)


def cross_lingual_transfer(
    scores: Mapping[str, float], source: str = "en", reference: float | None = None
) -> dict[str, float]:
    """CTL of each target language: (m_tgt - m_src) / m_src (paper §3.1, Eq. 1).

    m_src is `reference` when given (the English dev-set score, setting ctl_reference_split="dev"),
    else scores[source] (the English test set, as the reference code). A source score of 0
    (nothing learned) leaves relative transfer undefined: NaN, which the analysis drops, rather
    than an error that would fail the whole trial.
    """
    if source not in scores:
        raise ValueError(f"no score for the source language {source!r} (have {', '.join(scores) or 'none'})")
    reference = scores[source] if reference is None else reference
    if reference == 0:
        return {lang: float("nan") for lang in scores if lang != source}
    return {lang: (score - reference) / reference for lang, score in scores.items() if lang != source}
