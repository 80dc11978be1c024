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
