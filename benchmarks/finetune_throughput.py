"""Benchmark 1: fine-tuning throughput, our loop against a plain `transformers.Trainer`.

Both fine-tune e5-small for POS tagging on the same first N sentences of English-EWT train,
with the same batch size, sequence limit, number of optimizer steps (one epoch over the N
sentences, so both see exactly the same examples), learning rate, warm-up and clipping.
Throughput is real tokens per second (attention-mask ones, never padding), counted by a forward
pre-hook on the model, over the steps after the first (the first allocates gradients and
optimizer state). Runs are interleaved (ours, Trainer, ours, Trainer...) and the best of each
side is kept: other processes on a shared machine only ever slow a run down.

The baseline ("the obvious Trainer run", as in HF's token-classification tutorials): a
`datasets.Dataset` pre-tokenised with `padding="max_length"` to the sequence limit and
`truncation=True`, labels on each word's first subword (-100 elsewhere, as the reference code's
LabelAlignmentMapper does), fed through `default_data_collator` (every batch is seq_limit wide),
random batches (no length grouping), `Trainer` defaults otherwise: `optim` "adamw_torch_fused"
(the Trainer's default), linear schedule, warm-up steps = ceil(10% of steps) like ours,
max_grad_norm 1.0, no saving, no logging integrations, no progress bar. The reference code
itself tokenised without padding and padded per batch: the information row "Trainer with
dynamic padding" (`DataCollatorForTokenClassification` on unpadded features) is that variant,
and shows how much of the gain is padding alone versus length grouping.

Threads: both sides run with the harness's torch thread count (`--threads`, default 1).

Model FLOP utilisation: 6 x non-embedding parameters x tokens/s over the fp32 matrix-multiply
peak measured with torch in the same run (common.matmul_peak_flops).
"""
from __future__ import annotations

import contextlib
import gc
import io
import math
import tempfile
import time
from dataclasses import dataclass, replace
from typing import Any

from benchmarks.common import (
    Context,
    Row,
    Section,
    fmt_percent,
    fmt_rate,
    matmul_peak_flops,
    non_embedding_parameters,
    SMOKE_PEAK_MATMUL_SIZE,
    PEAK_MATMUL_SIZE,
)

NAME = "finetune"
TARGET_SPEEDUP = 1.5  # issue: ours / Trainer >= 1.5 tokens per second
TASK = "udpos"
SEED = 0
WARMUP_STEPS_EXCLUDED = 1  # optimizer steps left out of the timed window


@dataclass(frozen=True)
class Sizes:
    batch_size: int  # examples per optimizer step (no accumulation)
    seq_limit: int  # subwords per example (the paper's code: 128)
    steps: int  # optimizer steps per run, the first excluded from timing
    repeats: int  # interleaved runs of ours and of the Trainer baseline
    dynamic_repeats: int  # runs of the information row's dynamic-padding Trainer


# Batch 16 rather than the paper's 32: a padded Trainer step of 32 x 128 takes ~20 s on 2 shared
# cores, and the benchmark must fit in its share of 10 minutes.
FULL = Sizes(batch_size=16, seq_limit=128, steps=4, repeats=2, dynamic_repeats=1)
SMOKE = Sizes(batch_size=4, seq_limit=32, steps=3, repeats=1, dynamic_repeats=1)


@dataclass
class RunResult:
    tokens_per_second: float
    timed_tokens: int
    timed_seconds: float
    steps: int
    padded_tokens_per_step: float  # model input positions (real + padding) per timed step

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class TokenMeter:
    """Forward pre-hook: real (attention-mask) and total input positions of each training forward."""

    def __init__(self, model: Any) -> None:
        self.real: list[int] = []
        self.positions: list[int] = []
        self.handle = model.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        if module.training:
            mask = kwargs["attention_mask"]
            self.real.append(int(mask.sum()))
            self.positions.append(int(mask.numel()))

    def close(self) -> None:
        self.handle.remove()


def summarise(meter: TokenMeter, step_ends: list[float]) -> RunResult:
    """Tokens/s over steps WARMUP_STEPS_EXCLUDED+1 .. last (one forward per step: no accumulation)."""
    if len(step_ends) <= WARMUP_STEPS_EXCLUDED or len(meter.real) != len(step_ends):
        raise RuntimeError(f"finetune benchmark: {len(step_ends)} steps and {len(meter.real)} forwards recorded;"
                           f" expected one forward per step and more than {WARMUP_STEPS_EXCLUDED} steps")
    tokens = sum(meter.real[WARMUP_STEPS_EXCLUDED:])
    seconds = step_ends[-1] - step_ends[WARMUP_STEPS_EXCLUDED - 1]
    timed_steps = len(step_ends) - WARMUP_STEPS_EXCLUDED
    return RunResult(tokens / seconds, tokens, seconds, len(step_ends),
                     sum(meter.positions[WARMUP_STEPS_EXCLUDED:]) / timed_steps)


def load_model(context: Context) -> Any:
    import torch

    from trainables.tasks import get_task

    torch.manual_seed(SEED)  # same classification-head initialisation for every run
    return get_task(TASK).load_model(str(context.model))


def run_ours(context: Context, sizes: Sizes, features: Any, tokenizer: Any) -> RunResult:
    from trainables.finetuning import fine_tune
    from trainables.settings import Settings

    settings = replace(Settings(), epochs=1, batch_size=sizes.batch_size, micro_batch_size=sizes.batch_size,
                       task_max_length=sizes.seq_limit, device="cpu", precision="fp32")
    model = load_model(context)
    meter = TokenMeter(model)
    step_ends: list[float] = []
    fine_tune(model, tokenizer, TASK, features, settings, seed=SEED,
              on_step=lambda info: step_ends.append(time.perf_counter()))
    meter.close()
    del model
    gc.collect()
    return summarise(meter, step_ends)


def trainer_dataset(examples: list[dict[str, Any]], tokenizer: Any, seq_limit: int, pad_to_limit: bool) -> Any:
    """The baseline's data: HF-tutorial style tokenisation into a `datasets.Dataset`."""
    import datasets

    from trainables.tasks import get_task

    label_ids = get_task(TASK).label_to_id
    encoded = tokenizer([e["words"] for e in examples], is_split_into_words=True, truncation=True,
                        max_length=seq_limit, padding="max_length" if pad_to_limit else False)
    labels = []
    for row, example in enumerate(examples):
        previous, row_labels = None, []
        for word in encoded.word_ids(row):
            row_labels.append(-100 if word is None or word == previous else label_ids[example["labels"][word]])
            previous = word
        labels.append(row_labels)
    columns = {name: list(values) for name, values in encoded.items()}
    columns["labels"] = labels
    return datasets.Dataset.from_dict(columns)


def run_trainer(context: Context, sizes: Sizes, dataset: Any, tokenizer: Any, pad_to_limit: bool) -> RunResult:
    from transformers import (
        DataCollatorForTokenClassification,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        default_data_collator,
    )

    step_ends: list[float] = []

    class StepClock(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            step_ends.append(time.perf_counter())

    model = load_model(context)
    meter = TokenMeter(model)
    with tempfile.TemporaryDirectory(prefix="bench-trainer-") as output_dir:
        arguments = TrainingArguments(
            output_dir=output_dir,
            per_device_train_batch_size=sizes.batch_size,
            max_steps=sizes.steps,
            learning_rate=2e-5,
            warmup_steps=math.ceil(0.1 * sizes.steps),
            max_grad_norm=1.0,
            lr_scheduler_type="linear",
            seed=SEED,
            use_cpu=True,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
        )
        collator = default_data_collator if pad_to_limit else DataCollatorForTokenClassification(tokenizer)
        trainer = Trainer(model=model, args=arguments, train_dataset=dataset, data_collator=collator,
                          callbacks=[StepClock()])
        with contextlib.redirect_stdout(io.StringIO()):  # its end-of-training metrics print
            trainer.train()
    meter.close()
    del trainer, model
    gc.collect()
    return summarise(meter, step_ends)


def best(results: list[RunResult]) -> RunResult:
    return max(results, key=lambda r: r.tokens_per_second)


def run(context: Context) -> Section:
    import torch
    from transformers import AutoTokenizer

    from trainables.data import Subset, load_task_split
    from trainables.settings import Settings
    from trainables.tasks import get_task

    sizes = SMOKE if context.smoke else FULL
    n_examples = sizes.batch_size * sizes.steps  # one epoch = `steps` optimizer steps for both sides
    examples = load_task_split(TASK, "train", "en", context.data_dir, context.scratch("cache"), Subset(n_examples))
    tokenizer = AutoTokenizer.from_pretrained(str(context.model))
    settings = replace(Settings(), task_max_length=sizes.seq_limit)
    features = get_task(TASK).featurize(tokenizer, examples, settings)
    padded = trainer_dataset(examples, tokenizer, sizes.seq_limit, pad_to_limit=True)
    dynamic = trainer_dataset(examples, tokenizer, sizes.seq_limit, pad_to_limit=False)

    peak_size = SMOKE_PEAK_MATMUL_SIZE if context.smoke else PEAK_MATMUL_SIZE
    peaks = [matmul_peak_flops(peak_size)]
    ours: list[RunResult] = []
    trainer: list[RunResult] = []
    trainer_dynamic: list[RunResult] = []
    for repeat in range(sizes.repeats):  # interleaved: slow phases of the machine hit both sides
        ours.append(run_ours(context, sizes, features, tokenizer))
        trainer.append(run_trainer(context, sizes, padded, tokenizer, pad_to_limit=True))
        if repeat < sizes.dynamic_repeats:
            trainer_dynamic.append(run_trainer(context, sizes, dynamic, tokenizer, pad_to_limit=False))
    peaks.append(matmul_peak_flops(peak_size))
    peak = max(peaks)

    model = load_model(context)
    parameters = non_embedding_parameters(model)
    del model
    ours_best, trainer_best, dynamic_best = best(ours), best(trainer), best(trainer_dynamic)
    speedup = ours_best.tokens_per_second / trainer_best.tokens_per_second

    def mfu(result: RunResult) -> float:
        return 6 * parameters * result.tokens_per_second / peak

    slice_note = (f"{context.model_label}, {TASK} EWT first {n_examples}, batch {sizes.batch_size},"
                  f" limit {sizes.seq_limit}, {sizes.steps} steps ({WARMUP_STEPS_EXCLUDED} untimed),"
                  f" best of {sizes.repeats}, torch threads {context.threads}")
    rows = [
        Row("1. fine-tuning tokens/s (ours / Trainer)", fmt_rate(ours_best.tokens_per_second, "tok/s"),
            fmt_rate(trainer_best.tokens_per_second, "tok/s"), speedup, f">= {TARGET_SPEEDUP}",
            speedup >= TARGET_SPEEDUP, slice_note),
        Row("1b. fine-tuning MFU (6 N tok/s / matmul peak)", fmt_percent(mfu(ours_best)),
            fmt_percent(mfu(trainer_best)), mfu(ours_best) / mfu(trainer_best), "info", None,
            f"peak {peak / 1e9:.0f} GFLOP/s fp32 (torch matmul, this run); N = {parameters / 1e6:.1f}M"
            " non-embedding parameters"),
        Row("1c. ours / Trainer with dynamic padding (info)", fmt_rate(ours_best.tokens_per_second, "tok/s"),
            fmt_rate(dynamic_best.tokens_per_second, "tok/s"),
            ours_best.tokens_per_second / dynamic_best.tokens_per_second, "info", None,
            "Trainer + DataCollatorForTokenClassification, no length grouping"),
    ]
    details = {
        "sizes": sizes.__dict__, "examples": n_examples, "non_embedding_parameters": parameters,
        "matmul_peak_flops": peaks, "torch_threads": torch.get_num_threads(),
        "ours": [r.as_dict() for r in ours], "trainer_max_length": [r.as_dict() for r in trainer],
        "trainer_dynamic_padding": [r.as_dict() for r in trainer_dynamic],
        "mfu": {"ours": mfu(ours_best), "trainer_max_length": mfu(trainer_best), "trainer_dynamic": mfu(dynamic_best)},
        "baseline": "transformers.Trainer, datasets.Dataset pre-tokenised with padding='max_length' to the limit,"
                    " default_data_collator, random batches, optim default",
    }
    return Section(NAME, rows, details=details)
