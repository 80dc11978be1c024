"""Sweeps that grow: trials known by their content, finished ones never rerun, new ones run as
one more Tune batch in the same experiment folder, which the analysis reads as one experiment."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from sweep.cli import main as sweep_main  # noqa: E402
from sweep.experiment import build_experiment, trial_key  # noqa: E402
from sweep.ledger import (  # noqa: E402
    BATCH_RECORD,
    FINAL_FILE,
    RUN_MARKER,
    SKIPPED_FILE,
    next_batch_name,
    plan_trials,
    write_batch_record,
)
from sweep.models import ModelSpec  # noqa: E402
from sweep.trainable import STARTS_FILE  # noqa: E402


def grid(**changes):
    base = dict(model=["xlm-roberta-base"], task=["udpos"], realign=["none"], pairs=["dico"], corpus=["opus100"],
                seed=[0])
    base.update(changes)
    return base


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # the sweeps below join it
    yield
    ray.shutdown()


def test_a_trial_key_is_its_content():
    def key(settings=None, source="xlm-roberta-base", gpu=0.5, **axes):
        (trial,) = build_experiment(dict(settings=settings or {}, grids=[grid(**axes)])).trials
        return trial_key(trial, ModelSpec(name=trial.model, source=source, gpu=gpu, cpu=1.0), protocol="1")

    base = key()
    assert base == key() and len(base) == 12
    assert key(seed=[1]) != base and key(task=["wikiann"]) != base
    assert key(settings=dict(epochs=2)) != base  # a setting changes what the trial computes
    assert key(source="/models/other-xlmr") != base  # so does the model behind the name
    assert key(settings=dict(cache_dir="/elsewhere")) == base  # where shared work is cached does not
    assert key(gpu=0.25) == base  # nor the trial's share of a GPU
    (trial,) = build_experiment(dict(grids=[grid()])).trials
    spec = ModelSpec(name=trial.model, source="xlm-roberta-base", gpu=0.5, cpu=1.0)
    assert trial_key(trial, spec, protocol="2") != trial_key(trial, spec, protocol="1")  # the protocol version


def test_plan_sorts_trials_into_done_resume_and_new(tmp_path):
    run = tmp_path / "exp"
    write_batch_record(run, "run-001", {"a": "t_a", "b": "t_b", "old": "t_old"})
    write_batch_record(run, "run-002", {"c": "t_c", "d": "t_d"})  # killed before Tune saved its state
    write_batch_record(run, "run-003", {"e": "t_e"})
    for batch in ("run-001", "run-003"):
        (run / batch / "experiment_state-2026-12-01_10-00-00.json").write_text("{}")
    for batch, folder in (("run-001", "t_a"), ("run-002", "t_c")):
        (run / batch / folder).mkdir(parents=True)
        (run / batch / folder / FINAL_FILE).write_text(json.dumps({"phase": "done"}))
    (run / "run-003" / "t_e").mkdir(parents=True)
    (run / "run-003" / "t_e" / SKIPPED_FILE).write_text("{}")  # stopped while not in the experiment

    plan = plan_trials(run, ["a", "b", "c", "d", "e", "f"])
    assert sorted(plan.done) == ["a", "c"]  # a final record wherever it is
    assert {k: p.batch for k, p in plan.resume.items()} == {"b": "run-001"}
    assert plan.new == ["d", "e", "f"]  # d: its batch cannot be restored; e: skipped; f: never placed
    assert plan.stale == 1 and plan.batches_to_restore == ["run-001"]
    assert plan.summary() == "2 done, 1 to resume, 3 new (1 other trials on disk are not in this experiment)"
    assert next_batch_name(run) == "run-004"
    assert plan_trials(tmp_path / "missing", ["a"]).new == ["a"]


def write_experiment(path: Path, data: Path, model: Path, seeds: list[int], learning_rate: float = 1e-3) -> Path:
    path.write_text(
        "EXPERIMENT = dict(name='grow', "
        f"models={{'toy-bert': dict(source={str(model)!r}, cpu=1, gpu=0.5)}}, "
        f"settings=dict(data_dir={str(data)!r}, langs=['es'], epochs=1, batch_size=16, micro_batch_size=16, "
        f"learning_rate={learning_rate}, train_subset=32, test_subset=16, parallel_subset=60, align_pairs=30, "
        "num_threads=1), "
        "grids=[dict(model=['toy-bert'], task=['udpos'], realign=['none'], pairs=['dico'], corpus=['toy'], "
        f"seed={seeds})])\n"
    )
    return path


def trial_folders(run_dir: Path) -> dict[str, Path]:
    return {path.parent.name: path.parent for path in run_dir.glob(f"run-*/*/{FINAL_FILE}")}


def sweep(experiment: Path, storage: Path, *extra: str) -> int:
    return sweep_main([str(experiment), "--storage", str(storage), "--num-cpus", "1", "--no-report", "--log", *extra])


def test_grown_sweep_runs_only_new_trials_and_a_changed_setting_keeps_the_old(local_ray, tmp_path, toy_assets,
                                                                               capsys):
    from analysis.results import load_experiment

    data, model = toy_assets
    storage, run_dir = tmp_path / "results", tmp_path / "results" / "grow"
    experiment = write_experiment(tmp_path / "exp.py", data, model, seeds=[0])
    assert sweep(experiment, storage) == 0
    first = trial_folders(run_dir)
    assert len(first) == 1
    (first_dir,) = first.values()
    first_final = (first_dir / FINAL_FILE).read_text()

    # The file gains a seed: the dry run says so, the run runs that trial alone, in a new batch.
    write_experiment(experiment, data, model, seeds=[0, 1])
    capsys.readouterr()
    assert sweep(experiment, storage, "--dry-run") == 0
    assert "1 done, 0 to resume, 1 new" in capsys.readouterr().out
    assert sweep(experiment, storage) == 0
    out = capsys.readouterr().out
    assert "grow: 2 trials: 1 done, 0 to resume, 1 new" in out
    assert out.count("] start ") == 1 and "2 trials finished, 0 failed" in out
    second = trial_folders(run_dir)
    assert len(second) == 2 and {p.parent.name for p in second.values()} == {"run-001", "run-002"}
    assert (first_dir / FINAL_FILE).read_text() == first_final  # the finished trial never ran again
    assert (first_dir / STARTS_FILE).read_text() == "1"
    trials = load_experiment([run_dir]).trials  # the analysis reads both batches as one experiment
    assert sorted(trials["seed"]) == [0, 1] and trials["score/en"].between(0, 1).all()

    # Nothing left to do: no Ray, no trial.
    assert sweep(experiment, storage) == 0
    assert "2 done, 0 to resume, 0 new" in capsys.readouterr().out

    # A changed setting makes new trials; the old ones stay on disk, out of the analysis.
    write_experiment(experiment, data, model, seeds=[0], learning_rate=5e-4)
    assert sweep(experiment, storage) == 0
    assert "grow: 1 trials: 0 done, 0 to resume, 1 new (2 other trials on disk" in capsys.readouterr().out
    assert len(trial_folders(run_dir)) == 3 and all(p.is_dir() for p in second.values())
    marker = json.loads((run_dir / RUN_MARKER).read_text())
    assert list(marker["current"].values()) == ["run-003"]
    current = load_experiment([run_dir]).trials
    assert len(current) == 1 and current["seed"].tolist() == [0]
    everything = load_experiment(sorted(run_dir.glob("run-*"))).trials  # asked for: every batch
    assert sorted(everything["settings/learning_rate"]) == [5e-4, 1e-3, 1e-3]
    assert all((run_dir / batch / BATCH_RECORD).is_file() for batch in ("run-001", "run-002", "run-003"))
