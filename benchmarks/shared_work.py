"""Benchmark 3: work shared between trials comes from the cache.

Two trials that share model (e5-small), task (udpos), pair source (dico) and corpus (NTREX) run
one after the other with the same `cache_dir`, each in a fresh Python process (like two Ray
trials): seed 0 first (cold cache), then seed 1. Each process times the phases of
`trainables.trial.run_trial` by wrapping the trial module's functions (`load_inputs`,
`extract_pairs`, `featurize_cached`, `pretrained_alignment`, `load_model`, `fine_tune`,
`measure`, `scores_and_transfer`, the tokenizer load) and records every report with its time.

Shared work = pair extraction (`extract_pairs`) + tokenisation of the task data
(`featurize_cached`) + the pre-trained model's alignment (`pretrained_alignment`). Target: under
5% of the second trial's wall time (cache hits), against more than 30% for the first. The wall
time is `run_trial` itself (the interpreter start and imports are reported apart).

Slices (small so that the bench is short, yet the shared work is a real share of a trial):
5 languages, 150 NTREX lines per language, 30 alignment pairs, 16 training sentences (1 epoch,
one batch of 16), 8 test sentences per language.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainables.cache import DIGEST_MEMO_ENV

from benchmarks.common import (
    Context,
    Row,
    Section,
    Stopwatch,
    fmt_percent,
    read_json,
    run_python_module,
    write_json_atomic,
)

NAME = "shared"
INPUTS = ("model", "data")  # e5-small and ../shared/data (benchmarks.common.check_inputs)
SHARED_LIMIT = 0.05  # target: shared work < 5% of the second trial's wall time
FIRST_TRIAL_MINIMUM = 0.30  # ... against > 30% for the first
SHARED_PHASES = ("extract_pairs", "featurize_cached", "pretrained_alignment")
WRAPPED_FUNCTIONS = ("load_inputs", "extract_pairs", "featurize_cached", "pretrained_alignment", "load_model",
                     "fine_tune", "measure", "scores_and_transfer")
WORKER_TIMEOUT_S = 600
LANGS = ("ar", "es", "fr", "ru", "zh")


@dataclass(frozen=True)
class Sizes:
    langs: tuple[str, ...]
    in_process: bool  # smoke: both trials in this process (saves two interpreter starts)
    train_subset: int
    test_subset: int
    parallel_subset: int
    align_pairs: int
    batch_size: int


FULL = Sizes(langs=LANGS, in_process=False, train_subset=16, test_subset=8, parallel_subset=150, align_pairs=30,
             batch_size=16)
SMOKE = Sizes(langs=("es", "fr"), in_process=True, train_subset=8, test_subset=4, parallel_subset=40, align_pairs=6,
              batch_size=4)


def trial_config(context: Context, sizes: Sizes, seed: int, cache_dir: Path) -> dict[str, Any]:
    return {
        "model": "e5-small", "model_source": str(context.model), "task": "udpos", "realign": "none",
        "pairs": "dico", "corpus": context.corpus, "seed": seed,
        "settings": {
            "data_dir": str(context.data_dir), "cache_dir": str(cache_dir), "langs": list(sizes.langs), "epochs": 1,
            "batch_size": sizes.batch_size, "micro_batch_size": sizes.batch_size,
            "train_subset": sizes.train_subset, "test_subset": sizes.test_subset,
            "parallel_subset": sizes.parallel_subset, "align_pairs": sizes.align_pairs,
            "num_threads": context.threads,
        },
    }


# --------------------------------------------------------------------------------------------
# Worker (a fresh process per trial)


def timed_trial(config: dict[str, Any]) -> dict[str, Any]:
    """Run one trial with every phase timed; imports are timed apart from the trial.

    The trial module's functions are wrapped for the duration of the call and restored after.
    """
    started = time.perf_counter()
    import trainables.trial as trial

    imports = time.perf_counter() - started
    watch = Stopwatch()
    originals = {name: getattr(trial, name) for name in (*WRAPPED_FUNCTIONS, "AutoTokenizer")}
    for name in WRAPPED_FUNCTIONS:
        setattr(trial, name, watch.wrap(name, originals[name]))

    class TimedAutoTokenizer:  # the trial loads its tokenizer with AutoTokenizer.from_pretrained
        from_pretrained = staticmethod(watch.wrap("tokenizer_load", originals["AutoTokenizer"].from_pretrained))

    trial.AutoTokenizer = TimedAutoTokenizer
    reports: list[dict[str, Any]] = []
    start = time.perf_counter()

    def reporter(metrics: Any, state: Any) -> None:
        reports.append({"seconds": time.perf_counter() - start, "phase": metrics.get("phase"),
                        "checkpoint": state is not None})

    try:
        final = trial.run_trial(config, None, reporter)
    finally:
        for name, function in originals.items():
            setattr(trial, name, function)
    wall = time.perf_counter() - start
    return {"wall_seconds": wall, "imports_seconds": imports, "phases": watch.seconds, "calls": watch.calls,
            "reports": reports, "final_phase": final.get("phase"), "score_en": final.get("score", {}).get("en")}


def worker_main(argv: list[str]) -> int:
    config_path, out_path = Path(argv[0]), Path(argv[1])
    result = timed_trial(read_json(config_path))
    write_json_atomic(result, out_path)
    return 0


# --------------------------------------------------------------------------------------------
# Benchmark


def shared_share(result: dict[str, Any]) -> float:
    return sum(result["phases"].get(name, 0.0) for name in SHARED_PHASES) / result["wall_seconds"]


def run(context: Context) -> Section:
    sizes = SMOKE if context.smoke else FULL
    folder = context.scratch("shared-work")
    cache_dir = folder / "cache"  # fresh: the first trial starts cold
    # ...and so does the node's memo of file digests (trainables.cache), which the second trial,
    # a new process like a second Ray trial on the node, then reads instead of hashing the model.
    memo_env = {DIGEST_MEMO_ENV: str(folder / "file-digests")}
    results = []
    for seed in (0, 1):
        config_path, out_path = folder / f"trial-{seed}.json", folder / f"trial-{seed}-timings.json"
        config = trial_config(context, sizes, seed, cache_dir)
        if sizes.in_process:
            results.append(timed_trial(config))
            continue
        write_json_atomic(config, config_path)
        process_wall, _ = run_python_module("benchmarks.shared_work", [str(config_path), str(out_path)],
                                            timeout_s=WORKER_TIMEOUT_S, env=memo_env, threads=context.threads)
        result = read_json(out_path)
        result["process_wall_seconds"] = process_wall
        results.append(result)
    first, second = results
    first_share, second_share = shared_share(first), shared_share(second)
    passed = second_share < SHARED_LIMIT and first_share > FIRST_TRIAL_MINIMUM

    def load_share(result: dict[str, Any]) -> float:
        phases = result["phases"]
        return (phases.get("load_inputs", 0.0) + phases.get("pretrained_alignment", 0.0)) / result["wall_seconds"]

    rows = [
        Row("3. shared work share: 2nd trial / 1st", fmt_percent(second_share), fmt_percent(first_share),
            second_share / first_share if first_share else None,
            f"2nd < {SHARED_LIMIT:.0%}, 1st > {FIRST_TRIAL_MINIMUM:.0%}", passed,
            f"pairs+tokenisation+pretrained alignment; trial wall {first['wall_seconds']:.1f} s (cold) vs"
            f" {second['wall_seconds']:.1f} s (cached); {context.model_label} udpos, {len(sizes.langs)} langs,"
            f" {sizes.parallel_subset} lines, {sizes.align_pairs} pairs, {sizes.train_subset} train"),
        Row("3b. load_inputs + pretrained_alignment share (info)", fmt_percent(load_share(second)),
            fmt_percent(load_share(first)), load_share(second) / load_share(first) if load_share(first) else None,
            "info", None,
            f"includes the tokenizer load ({second['phases'].get('tokenizer_load', 0.0):.1f} s), not cacheable"),
    ]
    return Section(NAME, rows, details={"sizes": sizes.__dict__, "first": first, "second": second,
                                        "shared_phases": list(SHARED_PHASES)})


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
