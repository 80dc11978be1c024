"""The engine with a real local Ray: metrics, checkpoint resume, driver restart, GPU-less clusters."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from sweep.experiment import build_experiment  # noqa: E402
from sweep.runner import run_sweep  # noqa: E402
from sweep.trainable import CRASH_AFTER_CHECKPOINTS_ENV, FAILURE_FILE, STARTS_FILE, trial_resources  # noqa: E402

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
    history = results.results[0].metrics_dataframe
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
    for result in run_dir.glob("run-*/*/result.json"):
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


def test_deterministic_failure_shown_with_its_reason_and_not_retried(local_ray, tmp_path, toy_assets, capsys,
                                                                     monkeypatch):
    import sweep.cli
    from sweep.cli import main as sweep_main

    data, model = toy_assets
    experiment = write_toy_experiment(tmp_path / "exp.py", data, model, seeds=[0], epochs=1)
    experiment.write_text(experiment.read_text().replace("align_pairs=50", "align_pairs=50, realign_layer=9"))
    # The check before Ray would refuse this layer: let the trial meet it, as it would meet a bad input.
    monkeypatch.setattr(sweep.cli, "realign_layer_problems", lambda *args: [])
    assert sweep_main([str(experiment), "--storage", str(tmp_path / "results"), "--no-report"]) == 1
    captured = capsys.readouterr()
    reason = "ValueError: setting realign_layer=9 outside -3..2"
    (trial_dir,) = (tmp_path / "results" / "toy").glob("run-001/toy-bert_*")
    summary = [line for line in captured.out.splitlines() if line.strip().startswith("failed:")]
    assert len(summary) == 1 and summary[0].startswith(f"  failed: {trial_dir.name}: {reason}")
    assert summary[0].endswith(f" (log: {trial_dir / 'error.txt'})")
    assert "0 trials finished, 1 failed" in captured.out and "ray::" not in captured.out
    # stdout is not a terminal here: the view logs one line per event, the failure among them
    assert any(line.startswith("[") and " failed " in line and "realign_layer=9" in line
               for line in captured.out.splitlines())
    assert (trial_dir / STARTS_FILE).read_text() == "1"  # Tune's two retries ended before any work
    assert json.loads((trial_dir / FAILURE_FILE).read_text())["deterministic"] is True
    log = (trial_dir / "error.txt").read_text()
    assert log.count("Failure #") == 3 and reason in log and "RecordedFailure" in log
    analysis = ray.tune.ExperimentAnalysis(str(tmp_path / "results" / "toy" / "run-001"))
    assert [t.status for t in analysis.trials] == ["ERROR"]


def test_fresh_deletes_only_a_run_folder_of_that_experiment(tmp_path):
    from sweep.experiment import ExperimentError
    from sweep.runner import RUN_MARKER, prepare_run_folder

    def experiment(name):
        return build_experiment(dict(name=name, grids=[dict(model=["xlm-roberta-base"], task=["udpos"],
                                                           realign=["none"], pairs=["dico"], corpus=["opus100"],
                                                           seed=[0])]), where=str(tmp_path / "exp.py"))

    mine, other = experiment("mine"), experiment("other")
    unmarked = tmp_path / "unmarked"
    unmarked.mkdir()
    (unmarked / "thesis.tex").write_text("precious")
    with pytest.raises(ExperimentError, match=f"not a run folder of this engine \\(no {RUN_MARKER}\\); nothing was deleted"):
        prepare_run_folder(unmarked, mine, fresh=True)
    assert (unmarked / "thesis.tex").read_text() == "precious"

    run_dir = tmp_path / "run"
    assert prepare_run_folder(run_dir, other, fresh=False) is False  # a new run: marked
    (run_dir / "trial").mkdir()
    with pytest.raises(ExperimentError, match="is a run of experiment 'other'"):
        prepare_run_folder(run_dir, mine, fresh=True)
    assert (run_dir / "trial").is_dir()
    assert prepare_run_folder(run_dir, other, fresh=True) is False  # its own run: started over
    assert sorted(p.name for p in run_dir.iterdir()) == [RUN_MARKER]
    assert json.loads((run_dir / RUN_MARKER).read_text())["experiment"] == "other"


def test_unreachable_cluster_address_fails_in_seconds(tmp_path, toy_assets):
    data, model = toy_assets
    experiment = write_toy_experiment(tmp_path / "exp.py", data, model, seeds=[0], epochs=1)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "sweep", str(experiment), "--storage", str(tmp_path / "results"),
                           "--address", "127.0.0.1:1", "--no-report"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    err = done.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --address 127.0.0.1:1: nothing answers at 127.0.0.1:1"), err
    assert time.monotonic() - started < 60  # imports on a loaded machine; the address check itself is 5 s at most


def test_no_private_ray_api_in_the_engine():
    for source in (ROOT / "sweep").glob("*.py"):
        text = source.read_text()
        assert "_private" not in text and "_local_tuner" not in text, source
