"""Which trials are results: failed and unfinished trials set aside, trials that did not learn
left out of the CTL correlations, NaN never averaged in, names outside the paper's kept, several
results read as one experiment, and one-line errors for bad paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import figures, results, tables
from analysis.__main__ import main
from analysis.stats import BootstrapSettings
from analysis.synthetic import SyntheticGrid, synthetic_trials
from analysis.tables import AnalysisSettings

FAST = AnalysisSettings(bootstrap=BootstrapSettings(n_resamples=30))
GRID = SyntheticGrid(models={"xlm-roberta-base": 2, "bert-base-multilingual-cased": 2}, tasks=("udpos",),
                     languages=("ar", "fr"), seeds=(0, 1, 2), realigned_models=("xlm-roberta-base",),
                     methods=("before",), pairs=("dico",), corpora=("opus100",))


@pytest.fixture(autouse=True)
def png_only(monkeypatch):
    """PNG only: saving PDFs too doubles the run time and tests nothing more here."""
    monkeypatch.setattr(figures, "FIGURE_FORMATS", ("png",))


def _analyse(tmp_path: Path, *tables_or_args) -> tuple[Path, str]:
    args = []
    for i, item in enumerate(tables_or_args):
        if isinstance(item, pd.DataFrame):
            path = tmp_path / f"results{i}.csv"
            item.to_csv(path, index=False)
            args.append(str(path))
        else:
            args.append(str(item))
    out = tmp_path / "out"
    assert main([*args, "--out", str(out), "--resamples", "30"]) == 0
    return out, (out / "report.md").read_text()


# --------------------------------------------------------------------------------------------
# Failed and unfinished trials
# --------------------------------------------------------------------------------------------
def _with_failed_and_unfinished() -> pd.DataFrame:
    trials = synthetic_trials(GRID).assign(status="TERMINATED", error=None)
    failed = trials.index[(trials["realign"] == "before") & (trials["seed"] == 2)][0]
    trials.loc[failed, "status"] = "ERROR"
    trials.loc[failed, "error"] = "RuntimeError: CUDA out of memory"
    running = trials.index[(trials["realign"] == "none") & (trials["seed"] == 1)][0]
    score_columns = [c for c in trials.columns if c.startswith(("score/", "ctl/", "align/finetuned"))]
    trials.loc[running, score_columns] = np.nan  # its final report has not come yet
    trials.loc[running, "status"] = "PENDING"
    return trials


def test_failed_and_unfinished_trials_are_set_aside():
    frame = results.tidy(_with_failed_and_unfinished(), "t", drop_constant_settings=False)
    assert list(results.trial_outcomes(frame).value_counts().sort_index().items()) == [
        ("failed", 1), ("finished", len(frame) - 2), ("unfinished", 1)]


def test_report_lists_failed_trials_and_counts_unfinished(tmp_path):
    trials = _with_failed_and_unfinished()
    out, report = _analyse(tmp_path, trials)
    written = pd.read_csv(out / "trials.csv")
    assert len(written) == len(trials) - 2 and set(written["status"]) == {"TERMINATED"}
    assert "error" not in written.columns
    assert "1 failed trial(s), left out of every table:" in report
    assert "  - XLM-R Base POS before dico opus100 seed 2: RuntimeError: CUDA out of memory" in report
    assert "1 unfinished trial(s) (no final scores yet; 1 PENDING), left out of every table" in report
    # The failed seed is in no table: XLM-R Base + before has 2 seeds left.
    table13 = pd.read_csv(out / "tables" / "table13.csv")
    before = table13[(table13["realign"] == "before") & (table13["lang"] == "ar")]
    assert list(before["n_seeds"]) == [2]


# --------------------------------------------------------------------------------------------
# Trials that did not learn; NaN scores
# --------------------------------------------------------------------------------------------
def test_chance_levels_flag_trials_that_did_not_learn():
    frame = pd.DataFrame({
        "task": ["udpos", "udpos", "wikiann", "wikiann", "xnli", "xnli", "qa"],
        "score/en": [1 / 17, 0.07, 0.0, 0.01, 0.33, 0.34, 0.0],
    })
    assert list(results.did_not_learn(frame)) == [True, False, True, False, True, False, False]


def _with_unlearned() -> pd.DataFrame:
    trials = synthetic_trials(GRID)
    stuck = trials.index[(trials["realign"] == "none") & (trials["seed"] == 0)]
    trials.loc[stuck, "score/en"] = 0.05  # POS chance is 1/17 ~ 0.059
    return results.tidy(trials.drop(columns=[c for c in trials.columns if c.startswith("ctl/")]), "t")


def test_unlearned_trials_leave_the_ctl_correlations_unless_kept():
    trials = _with_unlearned()
    points = tables.prepare(trials, FAST).points
    kept = tables.prepare(trials, AnalysisSettings(bootstrap=FAST.bootstrap, keep_unlearned=True)).points
    # 2 models x seed 0 x 2 languages leave every (stage, kind, direction, layer) group.
    group = ["stage", "kind", "direction", "depth"]
    assert (kept.groupby(group).size() - points.groupby(group).size() == 4).all()
    assert 0 not in set(points["seed"]) and 0 in set(kept["seed"])
    # Scores themselves stay measured: the baseline's mean still has its three seeds.
    assert (tables.controlled_table(trials, "udpos", "opus100", FAST).query("realign == 'none'")["n_seeds"] == 3).all()


def test_report_flags_unlearned_trials(tmp_path):
    _, report = _analyse(tmp_path, _with_unlearned())
    assert "2 trial(s) did not learn (English score at or below chance" in report
    assert "left out of the CTL correlations and Figures 2-3 (--keep-unlearned keeps them)" in report
    assert "  - mBERT POS none dico opus100 seed 0: English score 0.050" in report
    assert "points per correlation (N): 8 (paper: 100)" in report  # 2 models x 2 seeds x 2 languages


def test_nan_scores_are_never_averaged_in():
    trials = synthetic_trials(GRID)
    first = trials.index[(trials["realign"] == "before") & (trials["seed"] == 0)][0]
    trials.loc[first, "score/ar"] = np.nan
    trials = results.tidy(trials.drop(columns=[c for c in trials.columns if c.startswith("ctl/")]), "t")
    frame = tables.controlled_table(trials, "udpos", "opus100", FAST)
    cell = frame[(frame["realign"] == "before") & (frame["lang"] == "ar")].iloc[0]
    others = trials[(trials["realign"] == "before") & (trials["seed"] != 0)]["score/ar"] * 100
    assert cell["n_seeds"] == 2 and cell["mean"] == pytest.approx(others.mean())
    # The trial's average over languages needs every language: it has none.
    average = tables.table4(trials, FAST)
    assert average[(average["realign"] == "before")]["n_seeds"].tolist() == [2]


# --------------------------------------------------------------------------------------------
# Names outside the paper's
# --------------------------------------------------------------------------------------------
def test_a_new_method_and_task_are_kept_and_shown(tmp_path):
    trials = synthetic_trials(SyntheticGrid(**{**GRID.__dict__, "tasks": ("udpos", "qa"), "methods": ("before", "l2")}))
    out, report = _analyse(tmp_path, trials)
    written = pd.read_csv(out / "trials.csv")
    assert {"l2", "before", "none"} == set(written["realign"]) and {"udpos", "qa"} == set(written["task"])
    assert "realignment: none, before, l2;" in report and "- tasks: POS, qa" in report
    assert "| + l2 dico |" in (out / "tables" / "table13.md").read_text()
    table4 = (out / "tables" / "table4.md").read_text()
    assert "| + l2 |" in table4 and "| qa |" in table4.splitlines()[2].replace(" POS ", " ")
    assert "| + l2 dico |" in (out / "tables" / "controlled_qa_opus100.md").read_text()
    assert "| qa | last |" in (out / "tables" / "table2.md").read_text()
    for name in ("table5", "table6"):
        assert "+ l2" in (out / "tables" / f"{name}.md").read_text(), name


def test_paper_method_names_in_another_case_get_the_papers_spelling():
    tidy = results.tidy(synthetic_trials(GRID).assign(realign=lambda f: f["realign"].str.upper()), "t")
    assert set(tidy["realign"]) == {"none", "before"}


# --------------------------------------------------------------------------------------------
# Several results at once
# --------------------------------------------------------------------------------------------
def test_several_results_are_one_experiment_with_each_trial_once(tmp_path):
    trials = synthetic_trials(GRID).assign(timestamp=1000.0)
    none, before = trials[trials["realign"] == "none"], trials[trials["realign"] == "before"]
    # The second run re-ran seed 0 of the realigned trials later, and a failed copy of seed 1.
    rerun = before[before["seed"] == 0].assign(timestamp=2000.0, **{"score/ar": 0.123})
    failed = before[before["seed"] == 1].assign(timestamp=3000.0, status="ERROR")
    loaded = results.load_experiment([_csv(tmp_path, "a", none), _csv(tmp_path, "b", before),
                                      _csv(tmp_path, "c", pd.concat([rerun, failed]))])
    assert len(loaded.trials) == len(trials) and loaded.duplicates == 2
    row = loaded.trials[(loaded.trials["realign"] == "before") & (loaded.trials["seed"] == 0)]
    assert list(row["score/ar"]) == [0.123]  # the newest copy
    assert loaded.failed.empty  # a finished copy beats a newer failed one
    # Trials of different settings are different trials, and those settings become conditions.
    other = before[before["seed"] == 0].assign(**{"settings/epochs": 2})
    again = results.load_experiment([_csv(tmp_path, "b", before.assign(**{"settings/epochs": 5})),
                                     _csv(tmp_path, "d", other)])
    assert len(again.trials) == len(before) + 1 and again.duplicates == 0
    assert set(again.trials["settings/epochs"]) == {2, 5}


def _csv(folder: Path, name: str, frame: pd.DataFrame) -> Path:
    path = folder / f"{name}.csv"
    frame.to_csv(path, index=False)
    return path


def test_cli_reads_several_results(tmp_path):
    trials = synthetic_trials(GRID)
    _, report = _analyse(tmp_path, trials[trials["realign"] == "none"], trials[trials["realign"] != "none"], trials)
    assert f"{len(trials)} trials;" in report
    assert f"{len(trials)} trial(s) found in more than one results source: counted once" in report
    assert "results0.csv" in report and "results2.csv" in report


def test_nested_sweep_settings_become_conditions():
    row = {"config/trial/model": "m", "config/trial/task": "udpos", "config/trial/realign": "none",
           "config/trial/seed": 0, "score/en": 0.9, "score/ar": 0.5}
    frame = pd.DataFrame([
        {**row, "config/trial/settings/epochs": 5, "config/trial/settings/cache_dir": "/a"},
        {**row, "config/trial/settings/epochs": 2, "config/trial/settings/cache_dir": "/b"},
    ])
    tidy = results.tidy(frame, "ray")
    assert list(tidy["settings/epochs"]) == [5, 2]
    assert "settings/cache_dir" not in tidy.columns  # where the cache lives is no condition


# --------------------------------------------------------------------------------------------
# One-line errors, nothing written
# --------------------------------------------------------------------------------------------
def _bad_results(tmp_path: Path, kind: str) -> Path:
    if kind == "missing":
        return tmp_path / "nowhere"
    if kind == "empty folder":
        (tmp_path / "empty").mkdir()
        return tmp_path / "empty"
    if kind == "empty file":
        (tmp_path / "empty.csv").write_text("")
        return tmp_path / "empty.csv"
    if kind == "header only":
        (tmp_path / "header.csv").write_text("model,task,realign,pairs,corpus,seed\n")
        return tmp_path / "header.csv"
    if kind == "not results":
        (tmp_path / "notes.csv").write_text("a,b\n1,2\n")
        return tmp_path / "notes.csv"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["missing", "empty folder", "empty file", "header only", "not results"])
def test_bad_results_is_one_line_exit_2_and_nothing_written(tmp_path, kind, capsys):
    bad = _bad_results(tmp_path, kind)
    out = tmp_path / "out"
    assert main([str(bad), "--out", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}") and not out.exists()


@pytest.mark.parametrize("kind", ["a file", "under a file"])
def test_bad_out_is_one_line_exit_2_and_nothing_written(tmp_path, kind, capsys):
    good = _csv(tmp_path, "results", synthetic_trials(GRID))
    blocker = tmp_path / "taken.txt"
    blocker.write_text("mine\n")
    out = blocker if kind == "a file" else blocker / "analysis"
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main([str(good), "--out", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {out}: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == before and blocker.read_text() == "mine\n"


def test_several_results_need_out(tmp_path, capsys):
    good = _csv(tmp_path, "results", synthetic_trials(GRID))
    assert main([str(good), str(good)]) == 2
    assert "name the output folder with --out" in capsys.readouterr().err


def test_a_storage_folder_points_to_the_experiments_inside(tmp_path, capsys):
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "experiment_state-2024.json").write_text("{}")
    assert main([str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.strip().endswith("it holds experiment folders (demo): pass those")
