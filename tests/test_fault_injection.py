"""The driver killed (SIGKILL, with its local Ray) at random moments, then resumed to completion:
no trial lost, no finished trial run again, and the same metrics as an uninterrupted run."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")

from sweep.experiment import load_experiment  # noqa: E402
from sweep.trainable import FINAL_FILE, STARTS_FILE  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SEEDS = [0, 1, 2]
KILLS = 3
KILL_SEED = 20230709
RUN_TIMEOUT_S = 300
# Bookkeeping that differs between an interrupted and an uninterrupted run by design.
RUN_FIELDS = ("trial_starts", "seconds_this_start", "resumed_at")


def write_experiment(path: Path, data: Path, model: Path) -> Path:
    path.write_text(
        "EXPERIMENT = dict(name='faults', "
        f"models={{'toy-bert': dict(source={str(model)!r}, cpu=1, gpu=0.5)}}, "
        f"settings=dict(data_dir={str(data)!r}, langs=['es'], epochs=3, batch_size=16, micro_batch_size=16, "
        "learning_rate=1e-3, train_subset=96, test_subset=16, parallel_subset=60, align_pairs=40, num_threads=1), "
        "grids=[dict(model=['toy-bert'], task=['udpos'], realign=['joint'], pairs=['dico'], corpus=['toy'], "
        f"seed={SEEDS})])\n"
    )
    return path


def command(experiment: Path, storage: Path) -> list[str]:
    return [sys.executable, "-m", "sweep", str(experiment), "--storage", str(storage), "--no-live", "--no-report",
            "--num-cpus", "2"]


def finals(run_dir: Path) -> dict[str, dict]:
    """Each finished trial's final record, by its folder relative to the run (batch/trial)."""
    return {str(path.parent.relative_to(run_dir)): json.loads(path.read_text())
            for path in run_dir.glob(f"run-*/*/{FINAL_FILE}")}


def science(final: dict) -> dict:
    return {k: v for k, v in final.items() if k not in RUN_FIELDS}


def uninterrupted_metrics(experiment_file: Path, cache: Path) -> dict[int, dict]:
    """Each trial run straight through, in this process (no Ray, no kill)."""
    from sweep.runner import trial_configs
    from trainables.trial import run_trial

    metrics = {}
    for config in trial_configs(load_experiment(experiment_file), cache):
        metrics[config["seed"]] = run_trial(config, None, lambda row, state: None)
    return metrics


def test_driver_killed_at_random_moments_loses_and_reruns_nothing(tmp_path, toy_assets):
    data, model = toy_assets
    experiment = write_experiment(tmp_path / "exp.py", data, model)
    storage = tmp_path / "results"
    run_dir = storage / "faults"
    rng = random.Random(KILL_SEED)
    started = time.monotonic()
    seen: dict[str, dict] = {}  # trial folder -> its final result, when first seen
    killed = 0
    for _ in range(KILLS):
        driver = subprocess.Popen(command(experiment, storage), cwd=ROOT, start_new_session=True,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Kill at a random moment once trials run: while a trial trains, as it finishes, between two.
        finished_before = set(finals(run_dir))
        while not any(run_dir.glob(f"run-*/*/{STARTS_FILE}")) and driver.poll() is None:
            time.sleep(0.2)
        # ... at the latest when a trial finishes, so that a fast machine, whose three trials end a
        # few seconds after the first start, still leaves work for the next driver
        deadline = time.monotonic() + rng.uniform(0.5, 8.0)
        while driver.poll() is None and time.monotonic() < deadline and set(finals(run_dir)) <= finished_before:
            time.sleep(0.05)
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)  # the driver and its local Ray die at once
            killed += 1
        driver.wait()
        for name, final in finals(run_dir).items():
            seen.setdefault(name, final)
    resumed = subprocess.run(command(experiment, storage), cwd=ROOT, capture_output=True, text=True,
                             timeout=RUN_TIMEOUT_S)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    elapsed = time.monotonic() - started

    done = finals(run_dir)
    assert len(done) == len(SEEDS), sorted(done)  # no trial lost
    for name, final in done.items():
        assert final["phase"] == "done"
        # a finished trial never starts again: its final record and its start count stay as they were
        assert int((run_dir / name / STARTS_FILE).read_text()) == final["trial_starts"], name
        if name in seen:
            assert final == seen[name], name
    assert killed >= 1, "the sweep finished before any kill"

    reference = uninterrupted_metrics(experiment, tmp_path / "reference-cache")
    for name, final in done.items():
        seed = json.loads((run_dir / name / "params.json").read_text())["trial"]["seed"]
        assert as_json(science(final)) == as_json(science(reference[seed])), seed
    print(f"{killed} kills, {sum(f['trial_starts'] for f in done.values())} starts of {len(SEEDS)} trials, "
          f"{elapsed:.0f} s")


def as_json(metrics: dict) -> str:
    return json.dumps(metrics, sort_keys=True, default=lambda v: v.item())
