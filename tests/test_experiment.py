"""Experiment files: expansion, deduplication, validation (no Ray needed)."""
from __future__ import annotations

from pathlib import Path

import pytest

from sweep.cli import main as sweep_main
from sweep.experiment import ExperimentError, build_experiment, load_experiment

ROOT = Path(__file__).resolve().parents[1]

# Worked out by hand (see experiments/full_grid.py):
#   experiment 1: 4 models x 3 tasks x 5 seeds                                  =  60
#   experiment 2, POS+NER: 3 models x 2 tasks x 5 seeds x
#       (none: 1, collapsed pairs/corpus; before+joint: 2 x 3 sources x 2 corpora = 12) = 390, of which
#       the 30 `none` trials are experiment 1's                                   -> 360 new
#   experiment 2, NLI 2 epochs: 3 models x 2 methods x 5 seeds (30) + 4 none x 5 (20) = 50
FULL_GRID_TRIALS = 60 + 360 + 50
FULL_GRID_POINTS = 60 + 3 * 2 * 3 * 3 * 2 * 5 + 30 + 20  # before deduplication: 650


def test_full_grid_count_and_deduplication():
    experiment = load_experiment(ROOT / "experiments" / "full_grid.py")
    assert experiment.n_grid_points == FULL_GRID_POINTS
    assert len(experiment.trials) == FULL_GRID_TRIALS
    assert len(set(experiment.trials)) == len(experiment.trials)
    none = [t for t in experiment.trials if t.realign == "none"]
    assert {(t.pairs, t.corpus) for t in none} == {("dico", "opus100")}
    # NLI baselines at 2 epochs are distinct trials from experiment 1's 5-epoch ones.
    nli_none = [t for t in none if t.task == "xnli"]
    assert len(nli_none) == 40
    assert {dict(t.settings)["epochs"] for t in nli_none} == {2, 5}
    assert len(experiment.filtered({"model": "xlm-roberta-large"}).trials) == 3 * 5 + 5


def test_dry_run_prints_table_and_count(capsys):
    assert sweep_main([str(ROOT / "experiments" / "full_grid.py"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1] == f"{FULL_GRID_TRIALS} trials"
    assert sweep_main([str(ROOT / "experiments" / "full_grid.py"), "--dry-run", "--only", "task=xnli",
                       "--only", "realign=joint"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "15 trials"


def grid(**changes):
    base = dict(model=["xlm-roberta-base"], task=["udpos"], realign=["none"], pairs=["dico"],
                corpus=["opus100"], seed=[0])
    base.update(changes)
    return base


@pytest.mark.parametrize(
    "raw, message",
    [
        (dict(grids=[grid(task=["udpso"])]), "unknown task 'udpso' (did you mean 'udpos'?)"),
        (dict(grids=[grid(model=["xlm-roberta-bas"])]), "did you mean 'xlm-roberta-base'?"),
        (dict(grids=[grid(realign=["join"])]), "unknown realign 'join' (did you mean 'joint'?)"),
        (dict(grids=[grid(pairs=["fastalgn"])]), "unknown pairs 'fastalgn' (did you mean 'fastalign'?)"),
        (dict(grids=[grid()], settings=dict(epoch=3)), "unknown key 'epoch' (did you mean 'epochs'?)"),
        (dict(grids=[grid()], settings=dict(langs=["es", "xx"])), "unknown target language 'xx'"),
        (dict(grid=[grid()]), "unknown key 'grid' (did you mean 'grids'?)"),
        (dict(grids=[dict(grid(), sed=[1])]), "unknown key 'sed' (did you mean 'seed'?)"),
        (dict(grids=[{k: v for k, v in grid().items() if k != "corpus"}]), "missing axis 'corpus'"),
    ],
)
def test_invalid_experiments_fail_with_one_clear_line(raw, message):
    with pytest.raises(ExperimentError) as error:
        build_experiment(raw, where="exp.py")
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_set_overrides_and_unknown_axis_filter():
    experiment = build_experiment(dict(grids=[grid(seed=[0, 1])]), overrides={"epochs": 1})
    assert all(dict(t.settings)["epochs"] == 1 for t in experiment.trials)
    with pytest.raises(ExperimentError, match="did you mean 'seed'"):
        experiment.filtered({"seeds": "0"})


def test_cli_reports_bad_file_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.py"
    bad.write_text("EXPERIMENT = dict(grids=[dict(model=['x'], task=['udpos'], realign=['none'], "
                   "pairs=['dico'], corpus=['opus100'], seed=[0])])\n")
    assert sweep_main([str(bad), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown model 'x'" in err[0]
    assert sweep_main([str(tmp_path / "missing.py"), "--dry-run"]) == 2
    assert "no such experiment file" in capsys.readouterr().err


def test_missing_local_data_reported_before_ray(tmp_path, capsys):
    exp = tmp_path / "exp.py"
    exp.write_text(
        f"EXPERIMENT = dict(settings=dict(data_dir={str(tmp_path / 'nodata')!r}, langs=['es']), "
        "grids=[dict(model=['xlm-roberta-base'], task=['udpos'], realign=['none'], pairs=['dico'], "
        "corpus=['ntrex'], seed=[0])])\n"
    )
    assert sweep_main([str(exp)]) == 2
    err = capsys.readouterr().err
    assert "nodata" in err and "error:" in err


# --- errors a user can read, before Ray starts --------------------------------------------------


def write_experiment(path: Path, **changes) -> Path:
    raw = dict(name="toyexp", grids=[grid()])
    raw.update(changes)
    path.write_text(f"EXPERIMENT = {raw!r}\n")
    return path


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: ")
    return err[0]


def test_only_repeated_key_is_a_union_and_keys_intersect(capsys):
    experiment = build_experiment(dict(grids=[grid(seed=[0, 1, 2], task=["udpos", "wikiann"])]))
    from sweep.cli import parse_only

    only = parse_only(["seed=0", "seed=1", "task=udpos"])
    assert only == {"seed": {"0", "1"}, "task": {"udpos"}}
    kept = experiment.filtered(only).trials
    assert sorted((t.task, t.seed) for t in kept) == [("udpos", 0), ("udpos", 1)]
    assert sweep_main([str(ROOT / "experiments" / "full_grid.py"), "--dry-run", "--only", "seed=0",
                       "--only", "seed=1"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"{FULL_GRID_TRIALS * 2 // 5} trials"


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(models={"m": dict(source="/nowhere/m", gpu="half")}), "models['m']['gpu'] = 'half': expected a number"),
        (dict(models={"m": dict(source="/nowhere/m", cpu=-1)}), "models['m']['cpu'] = -1: expected a number > 0"),
        (dict(models={"m": dict(source="/nowhere/m", gpu=-0.5)}), "models['m']['gpu'] = -0.5: expected a number >= 0"),
        (dict(models={"m": dict(source="/nowhere/m", gpu=1.5)}), "a share above 1 GPU must be a whole number"),
        (dict(grids=[dict(grid(), settings=5)]), "grids[0]: settings = 5: expected a dict"),
        (dict(settings=[1, 2]), "settings = [1, 2]: expected a dict"),
        (dict(models=["m"]), "models must be a dict"),
    ],
)
def test_bad_resources_and_settings_fail_in_one_line(tmp_path, capsys, changes, message):
    path = write_experiment(tmp_path / "exp.py", **changes)
    assert sweep_main([str(path), "--dry-run"]) == 2
    assert message in one_error_line(capsys)


@pytest.mark.parametrize(
    "call, message",
    [("no_such_module_xyz:make", "cannot import 'no_such_module_xyz'"),
     ("toyworld:no_such_function", "'toyworld' has no 'no_such_function'")],
)
def test_prepare_naming_a_missing_module_or_function(tmp_path, capsys, call, message):
    path = write_experiment(tmp_path / "exp.py", prepare=dict(call=call))
    assert sweep_main([str(path), "--storage", str(tmp_path / "results")]) == 2
    assert message in one_error_line(capsys)


@pytest.mark.parametrize("value", ["-1", "0"])
def test_num_cpus_must_be_positive(tmp_path, capsys, value):
    path = write_experiment(tmp_path / "exp.py")
    assert sweep_main([str(path), "--num-cpus", value]) == 2
    assert f"--num-cpus {value}: expected a whole number >= 1" in one_error_line(capsys)


def test_storage_that_is_a_file_or_cannot_be_made(tmp_path, capsys):
    path = write_experiment(tmp_path / "exp.py")
    a_file = tmp_path / "results.txt"
    a_file.write_text("not a folder")
    assert sweep_main([str(path), "--storage", str(a_file)]) == 2
    assert "is a file, not a folder" in one_error_line(capsys)
    assert sweep_main([str(path), "--storage", str(a_file / "sub")]) == 2
    assert "cannot make" in one_error_line(capsys)
    assert a_file.read_text() == "not a folder"


@pytest.mark.parametrize("name", [".", "..", "", "a/b", "../x"])
def test_fresh_with_a_name_that_is_not_one_folder_deletes_nothing(tmp_path, capsys, name):
    path = write_experiment(tmp_path / "exp.py")
    storage = tmp_path / "deep" / "results"
    (storage / "cache").mkdir(parents=True)
    (storage / "cache" / "keep.txt").write_text("shared work")
    (tmp_path / "deep" / "sibling.txt").write_text("someone else's")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert sweep_main([str(path), "--fresh", "--name", name, "--storage", str(storage)]) == 2
    assert "expected one folder name" in one_error_line(capsys)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_every_trial_settings_built_before_ray_with_its_preset(tmp_path, capsys):
    from sweep.experiment import trial_settings

    experiment = build_experiment(dict(grids=[grid(model=["xlm-roberta-base", "bert-base-multilingual-cased"])],
                                       settings=dict(preset="acl2023-code")))
    built = trial_settings(experiment)
    rates = {t.model: s.learning_rate for t, s in built.items()}
    assert rates == {"xlm-roberta-base": 7.5e-6, "bert-base-multilingual-cased": 2e-5}
    path = write_experiment(tmp_path / "exp.py")
    assert sweep_main([str(path), "--dry-run", "--set", "micro_batch_size=5"]) == 2
    assert "micro_batch_size" in one_error_line(capsys)


def tiny_model_folder(path: Path, layers: int) -> Path:
    path.mkdir()
    (path / "config.json").write_text(
        f'{{"model_type": "bert", "num_hidden_layers": {layers}, "hidden_size": 8, "num_attention_heads": 2, '
        '"intermediate_size": 16, "vocab_size": 10}')
    return path


def test_realign_layer_checked_against_the_model_config(tmp_path):
    from sweep.experiment import realign_layer_problems, trial_settings

    model = tiny_model_folder(tmp_path / "tiny", layers=2)
    for layer, ok in ((2, True), (-3, True), (3, False), (-4, False)):
        experiment = build_experiment(dict(
            models={"tiny": dict(source=str(model))}, settings=dict(realign_layer=layer),
            grids=[grid(model=["tiny"], realign=["none", "joint"])]))
        problems = realign_layer_problems(experiment, trial_settings(experiment))
        if ok:
            assert problems == []
        else:
            assert problems == [f"setting realign_layer={layer} (1 trial(s) of model 'tiny'): outside -3..2 for its "
                                "2 layers (0 = embeddings, -1 = last layer)"]


def test_cuda_refused_where_there_is_no_gpu(tmp_path, capsys, monkeypatch):
    import sweep.cli
    from sweep.experiment import device_problems, trial_settings

    monkeypatch.setattr(sweep.cli, "local_gpu_count", lambda: 0)
    monkeypatch.setattr(sweep.cli, "preflight_problems", lambda experiment: [])
    model = tiny_model_folder(tmp_path / "tiny", layers=2)
    path = write_experiment(tmp_path / "exp.py", models={"tiny": dict(source=str(model))},
                            settings=dict(device="cuda:0"), grids=[grid(model=["tiny"])])
    assert sweep_main([str(path), "--storage", str(tmp_path / "results")]) == 2
    assert "setting device='cuda:0': this machine has no GPU" in one_error_line(capsys)
    experiment = build_experiment(dict(models={"tiny": dict(source=str(model), gpu=0.5)},
                                       settings=dict(device="cuda:1"), grids=[grid(model=["tiny"])]))
    assert "sees only that one" in device_problems(experiment, trial_settings(experiment), 4, "the cluster")[0]
    assert "the cluster has no GPU" in device_problems(experiment, trial_settings(experiment), 0, "the cluster")[0]
