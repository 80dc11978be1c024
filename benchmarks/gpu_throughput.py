"""Benchmark 5 (GPU only): fine-tuning throughput of the paper's models, packed 1, 2 and 4 per GPU,
and from it the GPU-hours of experiments/full_grid.py next to the paper's budget.

Runs only where `torch.cuda.is_available()`; elsewhere the section says "skipped: no GPU".

Models: e5-small, the one real encoder of this project's machines (its folder at $E5_SMALL_PATH
when there is one; else its architecture, 12 x 384, vocab 250,037, from a hand-written config),
then the four paper architectures built from hand-written configs with random weights (no hub
access is needed, and throughput does not depend on the weights' values): DistilBERT 6 layers x
768 (vocab 119,547), mBERT 12 x 768 (vocab 119,547), XLM-R base 12 x 768 (vocab 250,002), XLM-R
large 24 x 1024 (vocab 250,002), each with a 17-label token-classification head. The GPU-hours
come from the paper architectures' rates; e5-small's are for the record.

Throughput: `trainables.finetuning.fine_tune` with bf16 autocast, batch 32, sequence limit 128,
on synthetic examples whose lengths follow a seeded log-normal (mean about 30 subwords, the range
of the three tasks' training sets). k packed trials = k processes on the one GPU at the same
time; after their warm-up steps they wait on each other (a file barrier), then the aggregate is
all their real tokens over the span from the first start to the last end.

Estimate: every trial of experiments/full_grid.py is converted to training-token equivalents:
fine-tuning tokens (epochs x examples x mean length), realignment tokens (`before` / `joint`: one
batch of 16 sentence pairs per optimizer step), and forward-only work (alignment measurements and
test sets) at one third of a training token (forward = 1/3 of forward + backward). Mean lengths
and sizes are the constants below, measured with e5-small's tokenizer (XLM-R's sentencepiece)
on ../shared/data; the training sets are the full ones (MultiNLI: 392,702 pairs). Realignment
sentence pairs use NTREX lengths (news: longer than OPUS-100's, so this errs on the high side).
GPU-hours = sum of a model's trials' tokens / that model's best packed aggregate tokens/s.
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from benchmarks.common import PROJECT_ROOT, Context, Row, Section, read_json, write_json_atomic

NAME = "gpu"
# Reads neither e5-small (only if present) nor ../shared/data: runs on a GPU node holding just the project.
INPUTS: tuple[str, ...] = ()
SKIPPED = "skipped: no GPU"
PACKINGS = (1, 2, 4)
NUM_LABELS = 17  # UPOS
BATCH_SIZE = 32
SEQ_LIMIT = 128
WARM_STEPS = 5
TIMED_STEPS = 60  # a window of seconds even for DistilBERT, whose step takes milliseconds
LENGTH_LOG_MEAN, LENGTH_LOG_STD, LENGTH_MIN = 3.2, 0.6, 4  # log-normal lengths: mean ~29 subwords
BARRIER_TIMEOUT_S = 300
WORKER_TIMEOUT_S = 600
FORWARD_ONLY_COST = 1 / 3  # a forward pass is about a third of forward + backward
FULL_GRID = PROJECT_ROOT / "experiments" / "full_grid.py"

# The paper's compute (Gaschi et al. 2023, "Computational budget"): experiment 1 on A40s, 3 GPU-days;
# experiment 2: more than 10 GPU-days on smaller GPUs (2080 Ti, 1080 Ti, T4) plus 30 A40 GPU-hours for
# XLM-R large.
PAPER_BUDGET_HOURS = {"experiment 1": "72 (A40)", "experiment 2": "> 240 (2080 Ti/1080 Ti/T4) + 30 (A40)"}


@dataclass(frozen=True)
class ModelShape:
    name: str
    kind: str  # "distilbert", "bert", "xlm-roberta"
    layers: int
    hidden: int
    heads: int
    intermediate: int
    vocab: int


PAPER_SHAPES: dict[str, ModelShape] = {
    shape.name: shape for shape in (
        ModelShape("distilbert-base-multilingual-cased", "distilbert", 6, 768, 12, 3072, 119547),
        ModelShape("bert-base-multilingual-cased", "bert", 12, 768, 12, 3072, 119547),
        ModelShape("xlm-roberta-base", "xlm-roberta", 12, 768, 12, 3072, 250002),
        ModelShape("xlm-roberta-large", "xlm-roberta", 24, 1024, 16, 4096, 250002),
    )
}
# multilingual-e5-small (../shared/tools/provision-e5-small writes it): a BERT with XLM-R's vocabulary.
E5_SMALL_SHAPE = ModelShape("multilingual-e5-small", "bert", 12, 384, 12, 1536, 250037)


def build_config(shape: ModelShape) -> Any:
    """A transformers config written by hand (AutoConfig would need the hub)."""
    from transformers import BertConfig, DistilBertConfig, XLMRobertaConfig

    if shape.kind == "distilbert":
        return DistilBertConfig(vocab_size=shape.vocab, n_layers=shape.layers, n_heads=shape.heads, dim=shape.hidden,
                                hidden_dim=shape.intermediate, num_labels=NUM_LABELS)
    if shape.kind == "bert":
        return BertConfig(vocab_size=shape.vocab, hidden_size=shape.hidden, num_hidden_layers=shape.layers,
                          num_attention_heads=shape.heads, intermediate_size=shape.intermediate, num_labels=NUM_LABELS)
    if shape.kind == "xlm-roberta":
        return XLMRobertaConfig(vocab_size=shape.vocab, hidden_size=shape.hidden, num_hidden_layers=shape.layers,
                                num_attention_heads=shape.heads, intermediate_size=shape.intermediate,
                                max_position_embeddings=514, type_vocab_size=1, pad_token_id=1, bos_token_id=0,
                                eos_token_id=2, layer_norm_eps=1e-5, num_labels=NUM_LABELS)
    raise ValueError(f"unknown model kind {shape.kind!r}; valid: distilbert, bert, xlm-roberta")


# --------------------------------------------------------------------------------------------
# Token counts of the full grid (measured with e5-small's tokenizer on ../shared/data)


@dataclass(frozen=True)
class TaskTokens:
    train_examples: int  # full training set
    train_length: float  # mean subwords per training example (limit 128, special tokens included)
    test_tokens: float  # all six test sets together


TASK_TOKENS: dict[str, TaskTokens] = {
    "udpos": TaskTokens(12544, 23.0, 2077 * 18.2 + 680 * 54.5 + 427 * 38.6 + 416 * 36.0 + 601 * 34.5 + 500 * 52.0),
    "wikiann": TaskTokens(20000, 14.0, 10000 * (14.0 + 13.1 + 12.5 + 13.4 + 15.7 + 30.4)),
    "xnli": TaskTokens(392702, 45.2, 6 * 5010 * 42.0),
}
REALIGN_PAIR_TOKENS = 31.6 + 36.1  # English + target sentence of a pair (NTREX, limit 96)
REALIGN_BATCH_PAIRS = 16
ALIGNMENT_SENTENCES_PER_SIDE = 770  # sentences holding 1000 sampled dico pairs (NTREX, measured)
ALIGNMENT_LANGS = 5


def trial_token_equivalents(task: str, realign: str, epochs: int) -> float:
    """Training-token equivalents of one trial (module docstring)."""
    stats = TASK_TOKENS[task]
    steps = math.ceil(stats.train_examples / BATCH_SIZE) * epochs
    training = epochs * stats.train_examples * stats.train_length
    realignment = steps * REALIGN_BATCH_PAIRS * REALIGN_PAIR_TOKENS if realign in ("before", "joint") else 0.0
    stages = 3 if realign == "before" else 2  # pretrained (+ realigned) + fine-tuned
    alignment = stages * ALIGNMENT_LANGS * ALIGNMENT_SENTENCES_PER_SIDE * REALIGN_PAIR_TOKENS
    return training + realignment + FORWARD_ONLY_COST * (alignment + stats.test_tokens)


def grid_tokens(experiment_path: Path = FULL_GRID) -> dict[str, dict[str, float]]:
    """Training-token equivalents of the full grid: {experiment: {model: tokens}}.

    Experiment 1 = the `none` trials at 5 epochs; everything else (realigned trials and the NLI
    baselines at 2 epochs) is experiment 2, as in the paper's budget statement.
    """
    from sweep.experiment import load_experiment

    experiment = load_experiment(experiment_path)
    tokens: dict[str, dict[str, float]] = {}
    for trial in experiment.trials:
        epochs = int(dict(trial.settings).get("epochs", 5))
        which = "experiment 1" if trial.realign == "none" and epochs == 5 else "experiment 2"
        per_model = tokens.setdefault(which, {})
        per_model[trial.model] = per_model.get(trial.model, 0.0) + trial_token_equivalents(trial.task, trial.realign,
                                                                                           epochs)
    return tokens


def grid_hours(tokens_per_second: Mapping[str, float], experiment_path: Path = FULL_GRID) -> dict[str, Any]:
    """Estimated GPU-hours of each experiment of the full grid, per model and in total (models
    without a measured rate are left out)."""
    hours: dict[str, Any] = {}
    for which, by_model in grid_tokens(experiment_path).items():
        per_model = {model: tokens / tokens_per_second[model] / 3600 for model, tokens in by_model.items()
                     if tokens_per_second.get(model)}
        hours[which] = {"by_model": per_model, "total": sum(per_model.values())}
    return hours


# --------------------------------------------------------------------------------------------
# Worker: one packed trial


def synthetic_features(vocab: int, n_examples: int, seed: int) -> Any:
    import numpy as np
    import torch

    from trainables.tasks import Features

    rng = np.random.default_rng(seed)
    lengths = np.clip(np.round(rng.lognormal(LENGTH_LOG_MEAN, LENGTH_LOG_STD, n_examples)), LENGTH_MIN,
                      SEQ_LIMIT).astype(np.int64)
    total = int(lengths.sum())
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (total,), generator=generator)
    labels = torch.randint(0, NUM_LABELS, (total,), generator=generator)
    offsets = torch.cat((torch.zeros(1, dtype=torch.long), torch.cumsum(torch.from_numpy(lengths), 0)))
    return Features("token", {"input_ids": ids}, offsets, labels, pad_token_id=1)


def worker_main(spec_path: Path, out_path: Path) -> int:
    import torch
    from dataclasses import replace

    from transformers import AutoModelForTokenClassification

    from trainables.finetuning import fine_tune
    from trainables.settings import Settings

    spec = read_json(spec_path)
    shape = ModelShape(**spec["shape"])
    device = torch.device(spec["device"])
    torch.manual_seed(spec["index"])
    if spec.get("source"):  # a real checkpoint folder
        model = AutoModelForTokenClassification.from_pretrained(spec["source"], num_labels=NUM_LABELS).to(device)
    else:
        with device:  # initialised where it runs: seconds saved per worker for XLM-R large
            model = AutoModelForTokenClassification.from_config(build_config(shape))
    steps = spec["warm_steps"] + spec["timed_steps"]
    features = synthetic_features(shape.vocab, steps * spec["batch_size"], seed=spec["index"])
    settings = replace(Settings(), epochs=1, batch_size=spec["batch_size"], micro_batch_size=spec["batch_size"],
                       task_max_length=SEQ_LIMIT, device=str(device),
                       precision="bf16" if device.type == "cuda" else "fp32")
    barrier = Path(spec["barrier_dir"])
    marks: dict[str, Any] = {"tokens": 0}

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def on_step(info: Mapping[str, Any]) -> None:
        if info["step"] == spec["warm_steps"]:
            synchronize()
            (barrier / f"ready-{spec['index']}").touch()
            deadline = time.time() + BARRIER_TIMEOUT_S
            while len(list(barrier.glob("ready-*"))) < spec["packing"]:
                if time.time() > deadline:
                    raise RuntimeError("gpu benchmark: packed workers never all became ready")
                time.sleep(0.01)
            marks["start"] = time.time()
        elif info["step"] > spec["warm_steps"]:
            marks["tokens"] += info["tokens"]
            if info["step"] == steps:
                synchronize()
                marks["end"] = time.time()

    fine_tune(model, None, "udpos", features, settings, seed=spec["index"], on_step=on_step)
    peak_memory = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    write_json_atomic({**marks, "peak_memory_bytes": peak_memory}, out_path)
    return 0


def packed_throughput(shape: ModelShape, packing: int, device: str, folder: Path, warm_steps: int = WARM_STEPS,
                      timed_steps: int = TIMED_STEPS, batch_size: int = BATCH_SIZE,
                      source: Path | None = None) -> dict[str, Any]:
    """Aggregate real tokens/s of `packing` concurrent fine-tuning processes on one device; `source`: a
    model folder to load (its architecture must be `shape`'s), else `shape` with random weights."""
    import subprocess

    run_dir = folder / f"{shape.name}-x{packing}"
    barrier = run_dir / "barrier"
    barrier.mkdir(parents=True, exist_ok=True)
    processes, outputs = [], []
    for index in range(packing):
        spec_path, out_path = run_dir / f"spec-{index}.json", run_dir / f"out-{index}.json"
        write_json_atomic({"shape": shape.__dict__, "device": device, "index": index, "packing": packing,
                           "warm_steps": warm_steps, "timed_steps": timed_steps, "batch_size": batch_size,
                           "barrier_dir": str(barrier), "source": str(source) if source else None}, spec_path)
        command = [sys.executable, "-m", "benchmarks.gpu_throughput", "worker", str(spec_path), str(out_path)]
        # on CPU (tests) the packed workers share the cores: one thread each
        env = {**os.environ, "OMP_NUM_THREADS": "1"} if device == "cpu" else None
        processes.append(subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True, env=env))
        outputs.append(out_path)
    failures = []
    for process in processes:
        _, stderr = process.communicate(timeout=WORKER_TIMEOUT_S)
        if process.returncode != 0:
            failures.append(stderr.strip().splitlines()[-1] if stderr.strip() else f"exit {process.returncode}")
    if failures:  # e.g. out of memory with 4 large models on a small GPU
        return {"packing": packing, "error": failures[0]}
    records = [read_json(path) for path in outputs]
    span = max(r["end"] for r in records) - min(r["start"] for r in records)
    return {"packing": packing, "tokens_per_second": sum(r["tokens"] for r in records) / span,
            "peak_memory_gib": max(r["peak_memory_bytes"] for r in records) / 2**30, "workers": records}


def measure_models(shapes: Sequence[ModelShape], packings: Sequence[int], device: str, folder: Path,
                   sources: Mapping[str, Path] | None = None, **step_sizes: int) -> dict[str, list[dict[str, Any]]]:
    sources = sources or {}
    return {shape.name: [packed_throughput(shape, k, device, folder, source=sources.get(shape.name), **step_sizes)
                         for k in packings]
            for shape in shapes}


def best_rates(measured: Mapping[str, list[dict[str, Any]]]) -> dict[str, float]:
    return {name: max((r.get("tokens_per_second", 0.0) for r in runs), default=0.0) for name, runs in measured.items()}


def summary_rows(measured: Mapping[str, list[dict[str, Any]]], estimate: Mapping[str, Any],
                 weights: Mapping[str, str] | None = None) -> list[Row]:
    rows = []
    weights = weights or {}
    for name, runs in measured.items():
        by_packing = {r["packing"]: r for r in runs}
        single = by_packing.get(1, {}).get("tokens_per_second")
        packed = [f"x{k}: " + (f"{r['tokens_per_second']:,.0f}" if "tokens_per_second" in r else r["error"][:40])
                  for k, r in by_packing.items()]
        best = max((r.get("tokens_per_second", 0.0) for r in runs), default=0.0)
        rows.append(Row(f"5. {name} tok/s (best packing / 1 per GPU)", f"{best:,.0f} tok/s",
                        f"{single:,.0f} tok/s" if single else "-", best / single if single else None, "info", None,
                        f"bf16, batch 32, limit 128, {weights.get(name, 'random weights')}; " + ", ".join(packed)))
    for which, values in estimate.items():
        rows.append(Row(f"5. {which} estimated GPU-hours", f"{values['total']:.1f} h",
                        f"paper: {PAPER_BUDGET_HOURS.get(which, '?')} h", None, "info", None,
                        ", ".join(f"{model} {hours:.1f} h" for model, hours in values["by_model"].items())))
    return rows


def run(context: Context) -> Section:
    import torch

    if not torch.cuda.is_available():  # the token count of the grid needs no GPU: kept for the record
        return Section(NAME, [Row("5. GPU throughput and full-grid GPU-hours", SKIPPED, "-", None, "-", None)],
                       status=SKIPPED, details={"grid_training_token_equivalents": grid_tokens()})
    folder = context.scratch("gpu")
    shapes = [E5_SMALL_SHAPE, *PAPER_SHAPES.values()]
    # e5-small's own weights where its folder is on this machine (a GPU node that reaches no network
    # may hold none: then its architecture, whose throughput is the same)
    e5_folder = context.e5_path if (context.e5_path / "config.json").is_file() else None
    sources = {E5_SMALL_SHAPE.name: e5_folder} if e5_folder else {}
    weights = {E5_SMALL_SHAPE.name: f"weights of {e5_folder}" if e5_folder else
               "e5-small's architecture, random weights"}
    step_sizes = {"warm_steps": 1, "timed_steps": 2} if context.smoke else {}
    packings = (1,) if context.smoke else PACKINGS
    measured = measure_models(shapes, packings, "cuda", folder, sources, **step_sizes)
    paper_rates = {name: rate for name, rate in best_rates(measured).items() if name in PAPER_SHAPES}
    estimate = grid_hours(paper_rates)
    return Section(NAME, summary_rows(measured, estimate, weights),
                   details={"device": torch.cuda.get_device_name(0), "measured": measured, "estimate": estimate,
                            "weights": weights,
                            "paper_budget_hours": PAPER_BUDGET_HOURS, "grid_training_token_equivalents": grid_tokens()})


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] != "worker":
        print("usage: python -m benchmarks.gpu_throughput worker SPEC.json OUT.json", file=sys.stderr)
        return 2
    return worker_main(Path(argv[1]), Path(argv[2]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
