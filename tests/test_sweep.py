"""The engine with a real local Ray: metrics, checkpoint resume, driver restart, GPU-less clusters."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from sweep.experiment import build_experiment  # noqa: E402
from sweep.runner import run_sweep  # noqa: E402
from sweep.trainable import CRASH_AFTER_CHECKPOINTS_ENV, trial_resources  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STAGES_BEFORE = ("pretrained", "realigned", "finetuned")
SWEEP_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def expected_align_names(stages, langs, n_layers):
    return {
        f"align/{stage}/{kind}/{direction}/{lang}/{layer}"
        for stage in stages for kind in ("strong", "weak") for direction in ("en-x", "x-en")
        for lang in langs for layer in range(n_layers + 1)
    }


def test_two_trial_sweep_on_real_data_reports_every_metric(local_ray, tmp_path, e5_small, shared_data):
    langs = ["es", "zh"]
    experiment = build_experiment(dict(
        name="two",
        models={"e5-small": dict(source=str(e5_small), cpu=1, gpu=0.25)},
        settings=dict(data_dir=str(shared_data), langs=langs, epochs=1, batch_size=8, micro_batch_size=8,
                      train_subset=16, test_subset=8, parallel_subset=80, align_pairs=40),
        grids=[dict(model=["e5-small"], task=["udpos"], realign=["before", "joint"], pairs=["dico"],
                    corpus=["ntrex"], seed=[0])],
    ))
    results = run_sweep(experiment, tmp_path, "two", live=False)
    assert len(results) == 2 and not results.errors
    frame = results.get_dataframe()
    by_method = {row["config/trial/realign"]: row for _, row in frame.iterrows()}
    n_layers = 12
    for method, row in by_method.items():
        stages = STAGES_BEFORE if method == "before" else ("pretrained", "finetuned")
        names = expected_align_names(stages, langs, n_layers)
        names |= {f"score/{lang}" for lang in ["en", *langs]} | {f"ctl/{lang}" for lang in langs}
        missing = names - set(frame.columns[row.notna()])
        assert not missing, f"{method}: missing {sorted(missing)[:5]}"
        for name in names:
            assert 0.0 <= row[name] <= 1.0 or name.startswith("ctl/"), name
        assert row["num_layers"] == n_layers
    # while training, loss/step/epoch were reported
    history = results[0].metrics_dataframe
    assert {"loss", "step", "epoch"} <= set(history.columns)
    # shared work is cached under the storage folder
    assert any((tmp_path / "cache" / "pairs").glob("ntrex-en-es-*dico*.parquet"))
    assert any((tmp_path / "cache" / "alignment").glob("pretrained-*.parquet"))


def test_gpu_less_cluster_is_never_asked_for_gpus():
    config = {"trial": {"resources": {"CPU": 1.0, "GPU": 0.5}}}
    assert trial_resources(gpus_available=False)(config).required_resources == {"CPU": 1.0}
    assert trial_resources(gpus_available=True)(config).required_resources == {"CPU": 1.0, "GPU": 0.5}


def write_toy_experiment(path: Path, data: Path, model: Path, seeds: list[int], epochs: int,
                         train_subset: int = 64) -> Path:
    path.write_text(
        "EXPERIMENT = dict(name='toy', "
        f"models={{'toy-bert': dict(source={str(model)!r}, cpu=1, gpu=0.5)}}, "
        f"settings=dict(data_dir={str(data)!r}, langs=['es', 'fr'], epochs={epochs}, batch_size=16, "
        f"micro_batch_size=16, learning_rate=1e-3, train_subset={train_subset}, test_subset=16, parallel_subset=100, "
        "align_pairs=50), "
        f"grids=[dict(model=['toy-bert'], task=['udpos'], realign=['joint'], pairs=['dico'], corpus=['toy'], "
        f"seed={seeds})])\n"
    )
    return path


def sweep_command(experiment: Path, storage: Path) -> list[str]:
    return [sys.executable, "-m", "sweep", str(experiment), "--storage", str(storage), "--no-live", "--no-report",
            "--num-cpus", "1"]


def final_results(run_dir: Path) -> dict[str, list[dict]]:
    """Each trial folder's reported rows (result.json, one JSON object a line)."""
    rows = {}
    for result in run_dir.glob("*/result.json"):
        rows[result.parent.name] = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
    return rows


def test_trial_killed_midway_continues_from_checkpoint(tmp_path, toy_assets):
    data, model = toy_assets
    experiment = write_toy_experiment(tmp_path / "exp.py", data, model, seeds=[0], epochs=3)
    env = {**os.environ, CRASH_AFTER_CHECKPOINTS_ENV: "1"}  # the worker dies after its first epoch checkpoint
    done = subprocess.run(sweep_command(experiment, tmp_path / "results"), env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=SWEEP_TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (trial_rows,) = final_results(tmp_path / "results" / "toy").values()
    final = trial_rows[-1]
    assert final["phase"] == "done"
    assert final["trial_starts"] == 2  # started once, died, restored once
    assert final["resumed_at"] == "finetune:1"  # continued after epoch 1, not from scratch
    assert set(final["score"]) == {"en", "es", "fr"}


def test_driver_killed_then_rerun_finishes_without_rerunning(tmp_path, toy_assets):
    data, model = toy_assets
    seeds = list(range(6))
    experiment = write_toy_experiment(tmp_path / "exp.py", data, model, seeds=seeds, epochs=3,
                                      train_subset=300)  # long enough trials to kill the driver between two
    storage = tmp_path / "results"
    run_dir = storage / "toy"
    driver = subprocess.Popen(sweep_command(experiment, storage), cwd=ROOT, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + SWEEP_TIMEOUT_S
    finished: dict[str, str] = {}
    while time.monotonic() < deadline and not finished:
        time.sleep(0.2)
        finished = {name: (run_dir / name / "result.json").read_text()
                    for name, rows in final_results(run_dir).items() if rows and rows[-1].get("phase") == "done"}
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and its local Ray die at once
    driver.wait()
    assert finished, "no trial finished before the deadline"
    assert len(finished) < len(seeds), "the sweep finished before the driver could be killed"

    rerun = subprocess.run(sweep_command(experiment, storage), cwd=ROOT, capture_output=True, text=True,
                           timeout=SWEEP_TIMEOUT_S)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    assert "resuming" in rerun.stdout
    rows = final_results(run_dir)
    assert len(rows) == len(seeds) and all(r[-1]["phase"] == "done" for r in rows.values())
    for name, text in finished.items():  # finished trials were not run again
        assert (run_dir / name / "result.json").read_text() == text
