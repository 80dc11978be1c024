"""Disk use of a sweep: a finished trial keeps its metrics, not its weights; `--keep-models` saves
the fine-tuned model; the dry run estimates the checkpoint disk at peak and at the end."""
from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
import torch

from trainables.trial import FINAL_STATE_KEYS, run_trial

ROOT = Path(__file__).resolve().parents[1]
UNIT_BYTES = {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}


def tensors_in(value, path="state"):
    """Where a nested checkpoint holds tensors (or arrays), by path."""
    if isinstance(value, torch.Tensor) or type(value).__module__.startswith("numpy"):
        return [path]
    if isinstance(value, dict):
        return [p for key, item in value.items() for p in tensors_in(item, f"{path}[{key!r}]")]
    if isinstance(value, (list, tuple)):
        return [p for i, item in enumerate(value) for p in tensors_in(item, f"{path}[{i}]")]
    return []


def frozen(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)  # as the engine stores it: the live tensors copied at that moment
    buffer.seek(0)
    return torch.load(buffer, weights_only=False), buffer.getbuffer().nbytes


def toy_config(data, model, cache, realign="before", **settings):
    base = dict(data_dir=str(data), cache_dir=str(cache), langs=["es"], epochs=1, batch_size=16, micro_batch_size=16,
                learning_rate=1e-3, train_subset=32, test_subset=16, parallel_subset=60, align_pairs=40,
                realign_steps=2, num_threads=1)
    base.update(settings)
    return dict(model="toy", model_source=str(model), task="udpos", realign=realign, pairs="dico", corpus="toy",
                seed=0, settings=base)


def test_finished_trial_checkpoint_is_small_restores_without_work_and_the_kept_model_loads(toy_assets, tmp_path,
                                                                                       monkeypatch):
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    import trainables.trial as trial

    data, model = toy_assets
    config = {**toy_config(data, model, tmp_path / "cache"), "model_dir": str(tmp_path / "model")}
    checkpoints = []
    final = run_trial(config, None, lambda m, s: s is not None and checkpoints.append((m["phase"], *frozen(s))))
    phases = [phase for phase, _, _ in checkpoints]
    assert phases[-1] == "done" and "finetune" in phases and "realigned" in phases
    (_, epoch_state, epoch_bytes), = [c for c in checkpoints if c[0] == "finetune"]
    _, last, last_bytes = checkpoints[-1]
    # the walk finds tensors where they are: the epoch checkpoint holds the weights and Adam's moments
    assert any("['model']" in p for p in tensors_in(epoch_state)) and any("'exp_avg'" in p for p in tensors_in(epoch_state))
    assert tensors_in(last) == []
    assert set(last) == {*FINAL_STATE_KEYS, "in_progress"} and last["in_progress"] is None
    assert last["done"] == ["pretrained", "realigned", "finetuned"] and last["metrics"]["score"] == final["score"]
    assert last_bytes < epoch_bytes / 50  # ~4 KB against ~1.2 MB for the toy model's 100k parameters

    # Restored from that checkpoint, the trial reports its metrics again and does no work.
    def no_work(*args, **kwargs):
        raise AssertionError("a finished trial loaded its inputs again")

    monkeypatch.setattr(trial, "load_inputs", no_work)
    reports = []
    again = run_trial(config, last, lambda m, s: reports.append((m, s)))
    assert len(reports) == 1 and reports[0][0]["phase"] == "done" and tensors_in(reports[0][1]) == []
    science = lambda m: {k: v for k, v in m.items() if k not in ("trial_starts", "seconds_this_start")}  # noqa: E731
    as_text = lambda m: json.dumps(science(m), sort_keys=True, default=str)  # noqa: E731 (NaN == NaN as text)
    assert as_text(again) == as_text(final) and again["trial_starts"] == 2
    monkeypatch.undo()

    # The kept model: safetensors and the tokenizer, no optimizer; it scores what the trial scored.
    saved = tmp_path / "model"
    assert (saved / "model.safetensors").is_file() and not list(saved.glob("*.pt")) and not list(saved.glob("*.bin"))
    loaded = AutoModelForTokenClassification.from_pretrained(saved)
    assert AutoTokenizer.from_pretrained(saved).get_vocab() == AutoTokenizer.from_pretrained(model).get_vocab()
    weights = {k: v for k, v in loaded.state_dict().items()}
    assert all(torch.equal(weights[k], v) for k, v in epoch_state["in_progress"]["state"]["model"].items())
    settings = trial.make_settings(config["settings"], model="toy")
    inputs = trial.load_inputs(config, settings)
    assert trial.scores_and_transfer(loaded, inputs)["score"] == final["score"]


def test_keep_models_is_a_run_option_outside_the_trial_key():
    from sweep.experiment import build_experiment
    from sweep.trainable import keeps_model

    experiment = build_experiment(dict(models={"toy": dict(source="/nonexistent/toy")},
                                       grids=[dict(model=["toy"], task=["udpos"], realign=["none", "joint"],
                                                   pairs=["dico"], corpus=["toy"], seed=[0, 1])]))
    keeping = experiment.keeping_models()
    assert list(keeping.keys().values()) == list(experiment.keys().values())
    trial = keeping.trials[0]
    spec = keeping.models[trial.model]
    assert trial.config(spec)["keep_models"] is True and "keep_models" not in experiment.trials[0].config(spec)
    # a restored trial follows the current driver run's choice, given its configs by key
    assert keeps_model({"key": "k"}, {"k": {"keep_models": True}}) is True
    assert keeps_model({"key": "k", "keep_models": True}, {"k": {}}) is False
    assert keeps_model({"key": "k", "keep_models": True}, frozenset({"k"})) is True


def write_toy_experiment(path: Path, data: Path, model: Path, realign: list[str], seeds: list[int]) -> Path:
    path.write_text(
        "EXPERIMENT = dict(name='disk', "
        f"models={{'toy-bert': dict(source={str(model)!r}, cpu=1, gpu=0.5)}}, "
        f"settings=dict(data_dir={str(data)!r}, langs=['es', 'fr'], epochs=2, batch_size=16, micro_batch_size=16, "
        "learning_rate=1e-3, train_subset=32, test_subset=16, parallel_subset=60, align_pairs=40, realign_steps=2, "
        "num_threads=1), "
        f"grids=[dict(model=['toy-bert'], task=['udpos'], realign={realign}, pairs=['dico'], corpus=['toy'], "
        f"seed={seeds})])\n"
    )
    return path


def test_sweep_leaves_small_checkpoints_and_keep_models_saves_a_loadable_model(tmp_path, toy_assets, capsys):
    ray = pytest.importorskip("ray")
    from transformers import AutoModelForTokenClassification

    from sweep.cli import main as sweep_main

    data, model = toy_assets
    experiment = write_toy_experiment(tmp_path / "exp.py", data, model, realign=["before"], seeds=[0])
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        assert sweep_main([str(experiment), "--storage", str(tmp_path / "results"), "--no-report",
                           "--keep-models"]) == 0
    finally:
        ray.shutdown()
    (trial_dir,) = (tmp_path / "results" / "disk").glob("run-001/toy-bert_*")
    model_bytes = (model / "model.safetensors").stat().st_size  # the toy encoder in fp32, ~400 KB
    (checkpoint,) = trial_dir.glob("checkpoint_*")  # Tune deleted the training checkpoints
    checkpoint_bytes = sum(f.stat().st_size for f in checkpoint.rglob("*") if f.is_file())
    assert checkpoint_bytes < model_bytes / 20, checkpoint_bytes
    state = torch.load(checkpoint / "state.pt", weights_only=False)
    assert tensors_in(state) == [] and "finetuned" in state["done"]
    loaded = AutoModelForTokenClassification.from_pretrained(trial_dir / "model")
    pretrained = AutoModelForTokenClassification.from_pretrained(model, num_labels=loaded.config.num_labels)
    trained = loaded.state_dict()
    changed = [k for k, v in pretrained.state_dict().items() if k in trained and not torch.equal(trained[k], v)]
    assert any(k.startswith("bert.encoder") for k in changed)  # fine-tuned weights, not the pre-trained ones
    assert (trial_dir / "model" / "tokenizer.json").is_file()


def disk_lines(out: str) -> tuple[str, str]:
    peak, end = [line for line in out.splitlines() if line.startswith("checkpoint disk: ")]
    return peak, end


def amounts(line: str) -> list[float]:
    """Every amount of bytes in a line ("1.23 MB" -> 1.23e6), in order."""
    return [float(n) * UNIT_BYTES[u] for n, u in re.findall(r"([\d.]+) (B|KB|MB|GB|TB)\b", line)]


def test_dry_run_prints_the_checkpoint_disk_at_peak_and_at_the_end(tmp_path, toy_assets, capsys, monkeypatch):
    from transformers import AutoModelForTokenClassification

    import sweep.cli
    from sweep.cli import main as sweep_main
    from trainables.tasks import get_task

    monkeypatch.setattr(sweep.cli, "local_gpu_count", lambda: 0)
    data, model = toy_assets
    experiment = write_toy_experiment(tmp_path / "exp.py", data, model, realign=["none", "before"], seeds=[0, 1, 2])
    # By hand: the udpos model of the toy encoder (its weights loaded, not the dry run's meta build)
    n_labels = len(get_task("udpos").labels)
    params = sum(p.numel() for p in AutoModelForTokenClassification.from_pretrained(model, num_labels=n_labels)
                 .parameters())
    at_once = 2  # --num-cpus 2, one CPU a trial, no GPU
    peak = at_once * 2 * 12 * params  # two checkpoints of fp32 weights + two Adam moments each
    values = lambda stages: stages * 2 * 2 * 2 * (2 + 1)  # noqa: E731  kinds x directions x 2 langs x 3 states
    finals = 3 * (4096 + 24 * values(2)) + 3 * (4096 + 24 * values(3))  # 3 `none`, 3 `before`
    models = 6 * 4 * params

    assert sweep_main([str(experiment), "--dry-run", "--num-cpus", "2", "--storage", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1] == "6 trials"
    line_peak, line_end = disk_lines(out)
    assert f"({at_once} trials at once x " in line_peak
    got_peak, per_trial = amounts(line_peak)[:2]
    assert got_peak == pytest.approx(peak, rel=5e-3) and per_trial == pytest.approx(peak / at_once, rel=5e-3)
    assert "6 final states" in line_end and "with --keep-models" in line_end
    assert amounts(line_end) == [pytest.approx(finals, rel=5e-3), pytest.approx(models, rel=5e-3)]

    assert sweep_main([str(experiment), "--dry-run", "--keep-models", "--address", "10.0.0.1:6379",
                       "--storage", str(tmp_path / "r")]) == 0
    line_peak, line_end = disk_lines(capsys.readouterr().out)
    assert "per concurrent trial" in line_peak and amounts(line_peak)[0] == pytest.approx(peak / at_once, rel=5e-3)
    assert amounts(line_end) == [pytest.approx(finals + models, rel=5e-3), pytest.approx(finals, rel=5e-3),
                                 pytest.approx(models, rel=5e-3)]


def test_dry_run_of_the_paper_grid_uses_the_known_sizes(capsys, monkeypatch):
    import sweep.cli
    from sweep.cli import main as sweep_main

    monkeypatch.setattr(sweep.cli, "local_gpu_count", lambda: 1)
    # XLM-R large on udpos: its 5 `none` trials (1 GPU each: one at a time on one GPU)
    assert sweep_main([str(ROOT / "experiments" / "full_grid.py"), "--dry-run", "--only", "model=xlm-roberta-large",
                       "--only", "task=udpos", "--num-cpus", "8"]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1] == "5 trials"
    line_peak, line_end = disk_lines(out)
    params = 559_890_432  # XLM-R large's hub checkpoint
    assert "(1 trial at once x " in line_peak and amounts(line_peak)[0] == pytest.approx(24 * params, rel=5e-3)
    finals = 5 * (4096 + 24 * 2 * 2 * 2 * 5 * 25)  # 2 stages, 5 languages, 24 layers + embeddings
    assert amounts(line_end) == [pytest.approx(finals, rel=5e-3), pytest.approx(5 * 4 * params, rel=5e-3)]
