"""Benchmark 4: the sweep engine against a plain loop, same 8 trials, 2 CPUs.

Engine: `sweep.runner.run_sweep(..., num_cpus=2, live=False)` in a fresh Python process, 8 toy
trials (`toyworld.write_toy`: tiny BERT, synthetic 5-language data), each asking 1 CPU
(so torch uses 1 thread and 2 trials run at a time), with Tune's checkpointing and result
handling. The target row's trials fine-tune for `TARGET_EPOCHS` epochs (a few seconds each: the
smallest trials a sweep of this project runs, e5-small on tiny slices, take about a minute); an
information row repeats both runs with 3-epoch trials (about 1.5 s each), where the engine's
fixed start-up (Ray, the first imports in each worker) outweighs the trials themselves. Baseline, the reference code's way: one fresh Python process that calls
`trainables.trial.run_trial` for the same 8 configurations one after another, torch with 2
threads, no checkpoint (a no-op reporter). Both are timed as whole processes, from launch to
exit (interpreter start, imports, Ray start and shutdown included). Target: engine <= 1.0 x loop.

Per-trial overhead of the engine, measured inside it: the benchmark hands `run_sweep` a
trainable that wraps the engine's own `sweep.trainable.run_trial_in_tune` (patched in through
`sweep.runner.make_trainable`) and records, per trial: entry and exit times, the imports of the
science in the worker, the time spent in `report_to_tune` with a checkpoint (checkpointing) and
without (result sync), and `run_trial`'s own time. Process start and scheduling = the gap
between a trial slot freeing up and the next trial entering the trainable.

Noise: on 2 shared cores, 2 torch threads on small matrices can be far slower than 1 (the threads
spin-wait on each other whenever another process holds a core), which flatters the engine; the
loop's per-trial times are in the JSON, and RESULTS.md says what load the run had.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from benchmarks.common import Context, Row, Section, fmt_seconds, read_json, run_python_module, write_json_atomic

NAME = "sweep"
INPUTS = ("model", "data")  # e5-small and ../shared/data (benchmarks.common.check_inputs)
TARGET_RATIO = 1.0  # target: engine wall time <= 1.0 x the plain loop, overhead included
TIMINGS_ENV = "BENCH_SWEEP_TIMINGS_DIR"  # where the engine's wrapped trainable writes per-trial timings
ENGINE_CPUS = 2
SUBPROCESS_TIMEOUT_S = 900
TOY_FOLDER = "benchmarks-toy"  # under the cache dir: the toy model is trained once per machine
REALIGN_METHODS = ["none", "joint"]


@dataclass(frozen=True)
class Sizes:
    seeds: tuple[int, ...]  # trials = realign methods x seeds
    langs: tuple[str, ...]
    tiny_epochs: int | None  # also run the information row with trials of this many epochs
    loop_threads: int  # torch threads of the baseline loop (2, the machine's cores; smoke: 1, it measures nothing)
    loop_budget_s: float | None  # a loop still running after this stops after its current trial (extrapolated)
    epochs: int
    align_pairs: int
    toy: Mapping[str, int]  # write_toy arguments


TARGET_EPOCHS = 24  # about 6 s a trial at 1 thread here (none 2.7 s, joint 10 s)
TINY_EPOCHS = 3  # about 1.5 s a trial
FULL = Sizes(seeds=(0, 1, 2, 3), langs=("ar", "es", "fr", "ru", "zh"), tiny_epochs=TINY_EPOCHS, loop_threads=2,
             loop_budget_s=120.0, epochs=TARGET_EPOCHS, align_pairs=100, toy={})
SMOKE = Sizes(seeds=(0,), langs=("es", "fr"), tiny_epochs=None, loop_threads=1, loop_budget_s=None, epochs=1,
              align_pairs=10, toy={"pretrain_steps": 5, "n_train": 24, "n_test": 6, "n_parallel": 30})


def toy_assets(sizes: Sizes, smoke: bool) -> tuple[Path, Path]:
    from toyworld import toy_key, write_toy
    from trainables.data import resolve_cache_dir

    # Named by what it is made of (`toy_key`: parameters, generator versions, the toy world's
    # code and libraries): a folder made by another version of the toy world is never reused,
    # nor deleted, by a newer one.
    key = toy_key(**sizes.toy)
    folder = resolve_cache_dir() / TOY_FOLDER / f"{'smoke' if smoke else 'full'}-{key}"
    return write_toy(folder, **sizes.toy)


def raw_experiment(data_dir: Path, model_dir: Path, sizes: Sizes, epochs: int) -> dict[str, Any]:
    return dict(
        name="bench",
        models={"toy-bert": dict(source=str(model_dir), cpu=1, gpu=0.25)},
        settings=dict(data_dir=str(data_dir), langs=list(sizes.langs), epochs=epochs, batch_size=16,
                      micro_batch_size=16, learning_rate=1e-3, align_pairs=sizes.align_pairs),
        grids=[dict(model=["toy-bert"], task=["udpos"], realign=REALIGN_METHODS, pairs=["dico"], corpus=["toy"],
                    seed=list(sizes.seeds))],
    )


# --------------------------------------------------------------------------------------------
# The engine's trainable, timed (runs in Ray workers)


def timed_run_trial_in_tune(config: dict[str, Any], run_dir: str, driver_run: str, wanted: Any = None) -> None:
    """`sweep.trainable.run_trial_in_tune`, with its imports, reports and run_trial timed."""
    entered = time.time()
    started = time.perf_counter()
    import sweep.trainable as engine
    import trainables.trial as trial

    timings: dict[str, Any] = {"entered": entered, "imports_seconds": time.perf_counter() - started,
                               "checkpoint_seconds": 0.0, "checkpoints": 0, "report_seconds": 0.0, "reports": 0,
                               "pid": os.getpid()}
    report, run_trial = engine.report_to_tune, trial.run_trial

    def timed_report(metrics: Any, state: Any = None) -> None:
        start = time.perf_counter()
        try:
            report(metrics, state)
        finally:
            kind = "checkpoint" if state is not None else "report"
            timings[f"{kind}_seconds"] += time.perf_counter() - start
            timings[f"{kind}s"] += 1

    def timed_run_trial(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return run_trial(*args, **kwargs)
        finally:
            timings["run_trial_seconds"] = time.perf_counter() - start

    engine.report_to_tune, trial.run_trial = timed_report, timed_run_trial
    try:
        from ray import tune

        engine.run_trial_in_tune(config, Path(run_dir) / tune.get_context().get_trial_name(), driver_run, wanted)
    finally:
        engine.report_to_tune, trial.run_trial = report, run_trial
        timings["exited"] = time.time()
        folder = os.environ.get(TIMINGS_ENV)
        if folder:
            name = f"{config['trial']['realign']}-s{config['trial']['seed']}-{os.getpid()}-{int(entered * 1e6)}.json"
            write_json_atomic(timings, Path(folder) / name)


def engine_main(spec_path: Path, out_path: Path) -> int:
    """Driver process of the engine run: run_sweep with the timed trainable; driver phases timed."""
    marks = {"driver_started": time.time()}
    spec = read_json(spec_path)
    os.environ[TIMINGS_ENV] = spec["timings_dir"]  # inherited by the local Ray's workers
    import ray
    from ray import tune

    import sweep.runner as runner
    from sweep.experiment import build_experiment
    from sweep.trainable import trial_resources

    marks["driver_imports_done"] = time.time()
    original_start_ray = runner.start_ray

    def timed_start_ray(*args: Any, **kwargs: Any) -> Any:
        marks["ray_start_begin"] = time.time()
        try:
            return original_start_ray(*args, **kwargs)
        finally:
            marks["ray_started"] = time.time()

    runner.start_ray = timed_start_ray
    def timed_trainable(gpus_available: bool, run_dir: Path, driver_run: str, wanted: Any = None) -> Any:
        run_dir_text = str(run_dir)
        return tune.with_resources(lambda config: timed_run_trial_in_tune(config, run_dir_text, driver_run, wanted),
                                   trial_resources(gpus_available))

    runner.make_trainable = timed_trainable
    experiment = build_experiment(spec["experiment"], where="benchmark")
    results = runner.run_sweep(experiment, Path(spec["storage"]), "bench", live=False, num_cpus=ENGINE_CPUS)
    marks["fit_done"] = time.time()
    errors = [str(r.error).splitlines()[0] for r in results if r.error]
    ray.shutdown()
    marks["ray_stopped"] = time.time()
    write_json_atomic({"marks": marks, "trials": len(results), "errors": errors}, out_path)
    return 1 if errors else 0


# --------------------------------------------------------------------------------------------
# The plain loop (the reference code's way)


def loop_main(spec_path: Path, out_path: Path) -> int:
    started = time.time()
    spec = read_json(spec_path)
    import torch

    torch.set_num_threads(spec["threads"])
    from trainables.trial import run_trial

    imports_done = time.time()
    seconds: list[float] = []
    budget = spec.get("budget_s")
    for config in spec["configs"]:
        if budget is not None and sum(seconds) > budget:
            break  # the rest is extrapolated by the caller
        start = time.perf_counter()
        run_trial(config, None, lambda metrics, state: None)  # no checkpoints, nothing kept
        seconds.append(time.perf_counter() - start)
    write_json_atomic({"started": started, "imports_done": imports_done, "trial_seconds": seconds,
                       "threads": torch.get_num_threads()}, out_path)
    return 0


# --------------------------------------------------------------------------------------------
# Analysis of the engine's timings


def overhead_breakdown(trials: list[dict[str, Any]], marks: Mapping[str, float], launched: float,
                       finished: float, slots: int) -> dict[str, Any]:
    """Per-trial and fixed overheads of the engine run, from the wrapped trainable's records.

    Trials are replayed onto `slots` slots in order of entry: a trial's start gap is the time from
    its slot freeing up (the previous trial's exit; for a slot's first trial, Ray being up) to its
    entry into the trainable: actor process start and Tune scheduling.
    """
    ordered = sorted(trials, key=lambda t: t["entered"])
    free = [marks["ray_started"]] * slots
    start_gaps = []
    for timing in ordered:
        slot = min(range(slots), key=lambda s: free[s])
        start_gaps.append(max(0.0, timing["entered"] - free[slot]))
        free[slot] = timing["exited"]
    n = len(ordered)

    def mean(key: str) -> float:
        return sum(t.get(key, 0.0) for t in ordered) / n

    compute = [t["run_trial_seconds"] - t["checkpoint_seconds"] - t["report_seconds"] for t in ordered]
    return {
        "trials": n,
        "fixed": {
            "driver_start_and_imports": marks["driver_imports_done"] - launched,
            "ray_start": marks["ray_started"] - marks["ray_start_begin"],
            "after_last_trial": finished - max(t["exited"] for t in ordered),
        },
        "per_trial": {
            "process_start_and_scheduling": sum(start_gaps) / n,
            "imports": mean("imports_seconds"),
            "checkpointing": mean("checkpoint_seconds"),
            "result_sync": mean("report_seconds"),
            "unaccounted": sum(t["exited"] - t["entered"] - t["imports_seconds"] - t["run_trial_seconds"]
                               for t in ordered) / n,
        },
        "per_trial_compute": sum(compute) / n,
        "checkpoints_per_trial": mean("checkpoints"),
        "reports_per_trial": mean("reports"),
    }


# --------------------------------------------------------------------------------------------
# Benchmark


def run_loop(folder: Path, name: str, configs: list[dict[str, Any]], threads: int,
             budget_s: float | None = None) -> dict[str, Any]:
    """The plain loop in a fresh process. Past `budget_s` of trials it stops after the current
    trial, and the wall time is extrapolated: the remaining trials at the mean of the finished
    ones after the first (the first also fills the cold cache, like the engine's first trials)."""
    spec_path, out_path = folder / f"{name}-spec.json", folder / f"{name}-out.json"
    write_json_atomic({"configs": configs, "threads": threads, "budget_s": budget_s}, spec_path)
    launched = time.time()
    wall, _ = run_python_module("benchmarks.sweep_overhead", ["loop", str(spec_path), str(out_path)],
                                timeout_s=SUBPROCESS_TIMEOUT_S, threads=threads)
    result = read_json(out_path)
    done = result["trial_seconds"]
    remaining = len(configs) - len(done)
    warm = done[1:] or done
    result.update(measured_wall_seconds=wall, startup_seconds=result["imports_done"] - launched,
                  trials_run=len(done), extrapolated=remaining > 0,
                  wall_seconds=wall + remaining * sum(warm) / len(warm))
    return result


def run_engine(folder: Path, name: str, raw: dict[str, Any]) -> dict[str, Any]:
    timings_dir = folder / f"{name}-timings"
    timings_dir.mkdir(parents=True, exist_ok=True)
    spec_path, out_path = folder / f"{name}-spec.json", folder / f"{name}-out.json"
    write_json_atomic({"experiment": raw, "storage": str(folder / f"{name}-storage"),
                       "timings_dir": str(timings_dir)}, spec_path)
    launched = time.time()
    wall, _ = run_python_module("benchmarks.sweep_overhead", ["engine", str(spec_path), str(out_path)],
                                timeout_s=SUBPROCESS_TIMEOUT_S)
    finished = launched + wall
    driver = read_json(out_path)
    trials = [read_json(path) for path in sorted(timings_dir.glob("*.json"))]
    if len(trials) != driver["trials"] or driver["errors"]:
        raise RuntimeError(f"sweep benchmark: {driver['trials']} trials, {len(trials)} timing records,"
                           f" errors: {driver['errors']}")
    return {"wall_seconds": wall, "driver": driver, "trial_timings": trials,
            "breakdown": overhead_breakdown(trials, driver["marks"], launched, finished, ENGINE_CPUS)}


def engine_and_loop(folder: Path, name: str, raw: dict[str, Any], sizes: Sizes) -> tuple[dict[str, Any], dict[str, Any]]:
    """The same trials through the engine and through the plain loop, each from a cold cache."""
    from sweep.experiment import build_experiment
    from sweep.runner import trial_configs

    experiment = build_experiment(raw, where="benchmark")
    # the loop runs the engine's own trial configs, with a cache of its own (cold, like the engine's)
    loop = run_loop(folder, f"{name}-loop", trial_configs(experiment, folder / f"{name}-loop-storage"),
                    sizes.loop_threads, sizes.loop_budget_s)
    return run_engine(folder, f"{name}-engine", raw), loop


def run(context: Context) -> Section:
    sizes = SMOKE if context.smoke else FULL
    data_dir, model_dir = toy_assets(sizes, context.smoke)
    folder = context.scratch("sweep-overhead")
    engine, loop = engine_and_loop(folder, "target", raw_experiment(data_dir, model_dir, sizes, sizes.epochs), sizes)
    tiny = (engine_and_loop(folder, "tiny", raw_experiment(data_dir, model_dir, sizes, sizes.tiny_epochs), sizes)
            if sizes.tiny_epochs else None)

    ratio = engine["wall_seconds"] / loop["wall_seconds"]
    breakdown = engine["breakdown"]
    per_trial = breakdown["per_trial"]
    per_trial_total = sum(per_trial.values())
    n = engine["driver"]["trials"]

    def loop_wall(result: dict[str, Any]) -> str:
        text = fmt_seconds(result["wall_seconds"])
        return f"{text} (est., {result['trials_run']}/{n} run)" if result["extrapolated"] else text

    def mean_trial(result: dict[str, Any]) -> str:
        return f"{result['breakdown']['per_trial_compute']:.1f} s"

    rows = [
        Row(f"4. sweep engine / plain loop ({n} trials)", fmt_seconds(engine["wall_seconds"]),
            loop_wall(loop), ratio, f"<= {TARGET_RATIO}", ratio <= TARGET_RATIO,
            f"toy BERT, udpos, {'/'.join(REALIGN_METHODS)} x {len(sizes.seeds)} seeds, {sizes.epochs} epochs"
            f" ({mean_trial(engine)} a trial); engine {ENGINE_CPUS} CPUs, 1 thread/trial; loop 1 process, torch"
            f" {sizes.loop_threads} threads; whole processes; a loop past {sizes.loop_budget_s} s of trials is"
            " stopped and the rest extrapolated"),
        Row("4b. engine per-trial overhead (info)", fmt_seconds(per_trial_total),
            fmt_seconds(breakdown["per_trial_compute"]), per_trial_total / max(breakdown["per_trial_compute"], 1e-9),
            "info", None,
            "overhead vs the trial's own run_trial time; " + ", ".join(
                f"{name.replace('_', ' ')} {value:.2f} s" for name, value in per_trial.items())),
        Row(f"4c. the same with {sizes.tiny_epochs}-epoch trials (info)",
            fmt_seconds(tiny[0]["wall_seconds"]) if tiny else "not run (smoke)",
            loop_wall(tiny[1]) if tiny else "-",
            tiny[0]["wall_seconds"] / tiny[1]["wall_seconds"] if tiny else None,
            "info", None, f"{mean_trial(tiny[0]) if tiny else '-'} a trial: the engine's fixed start-up dominates"),
    ]
    details = {"sizes": {"seeds": list(sizes.seeds), "langs": list(sizes.langs), "epochs": sizes.epochs,
                         "tiny_epochs": sizes.tiny_epochs, "align_pairs": sizes.align_pairs, "toy": dict(sizes.toy),
                         "loop_threads": sizes.loop_threads, "loop_budget_s": sizes.loop_budget_s},
               "trials": n, "engine": engine, "loop": loop,
               "tiny": {"engine": tiny[0], "loop": tiny[1]} if tiny else None}
    notes = ["sweep engine fixed overhead: " + ", ".join(f"{k.replace('_', ' ')} {v:.1f} s"
                                                          for k, v in breakdown["fixed"].items()),
             "sweep engine per-trial overhead: " + ", ".join(f"{k.replace('_', ' ')} {v:.2f} s"
                                                            for k, v in per_trial.items())
             + f" (trial compute {breakdown['per_trial_compute']:.2f} s)"]
    return Section(NAME, rows, details=details, notes=notes)


def main(argv: list[str]) -> int:
    modes = {"engine": engine_main, "loop": loop_main}
    if len(argv) != 3 or argv[0] not in modes:
        print(f"usage: python -m benchmarks.sweep_overhead {{{'|'.join(modes)}}} SPEC.json OUT.json", file=sys.stderr)
        return 2
    return modes[argv[0]](Path(argv[1]), Path(argv[2]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
