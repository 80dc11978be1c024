"""``python -m analysis`` on partial grids: it writes what it can, never crashes, and the report
says which tables and figures cannot be made and why; no output is ever half-written."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from analysis import figures, files, tables
from analysis.__main__ import main
from analysis.synthetic import SyntheticGrid, synthetic_trials

FAST_RESAMPLES = "30"
SMALL_MODELS = {"distilbert-base-multilingual-cased": 2, "xlm-roberta-base": 3}
SMALL = dict(models=SMALL_MODELS, realigned_models=tuple(SMALL_MODELS), seeds=(0, 1, 2), pairs=("dico",),
             corpora=("opus100",), languages=("ar", "fr"))


@pytest.fixture(autouse=True)
def png_only(monkeypatch):
    """PNG only: saving PDFs too doubles the run time and tests nothing more here."""
    monkeypatch.setattr(figures, "FIGURE_FORMATS", ("png",))


def _no_alignment(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=[c for c in frame.columns if c.startswith("align/")])


def _only_before(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["realign"] == "before"]


PARTIAL_GRIDS = {
    "one task": (SyntheticGrid(**{**SMALL, "tasks": ("wikiann",)}), None,
                 ["Table 5: needs POS realign=none trials, the baselines of the before or joint trials (dico pairs); "
                  "have no POS trials"]),
    "only before": (SyntheticGrid(**{**SMALL, "methods": ("before",)}), _only_before,
                    ["Table 4: needs realign=none trials, the baselines of the before or joint trials (dico pairs); "
                     "have before only",
                     "Figure 1: needs realign=none trials with en->ar scores, the baselines of the before or joint "
                     "trials (dico pairs); have before only",
                     "Table 2: needs realign=none trials with target-language scores and alignment before and after "
                     "fine-tuning (at least 3 points per correlation, not all equal); have before only"]),
    "one seed": (SyntheticGrid(**{**SMALL, "seeds": (0,), "models": {"xlm-roberta-base": 3},
                                  "realigned_models": ("xlm-roberta-base",)}), None,
                 ["with at most 2 point(s) per correlation or constant values"]),
    "no alignment metrics": (SyntheticGrid(**SMALL), _no_alignment,
                             ["Table 3: needs realign=none trials with strong en-X alignment at the last layer before "
                              "and after fine-tuning; have none, before and joint, without alignment metrics"]),
}


def _analyse(tmp_path: Path, trials: pd.DataFrame, *extra: str) -> tuple[Path, str]:
    fixture = tmp_path / "results.csv"
    trials.to_csv(fixture, index=False)
    out = tmp_path / "out"
    assert main([str(fixture), "--out", str(out), "--resamples", FAST_RESAMPLES, "--compare-paper", *extra]) == 0
    return out, (out / "report.md").read_text()


def _check_made_or_explained(out: Path, report: str) -> None:
    assert "could not be computed" not in report and "could not be drawn" not in report
    made = {m for m in re.findall(r"- \*\*(\w+)\*\* ", report.split("## Not made")[0])}
    not_made = report.split("## Not made")[1].split("##")[0] if "## Not made" in report else ""
    for name in [*tables.TABLES, "figure1", "figure2", "figure3", "figure4", "figure5"]:
        title = tables.TABLES[name].title if name in tables.TABLES else f"Figure {name[-1]}"
        # Each table and figure is either made (and linked) or listed with its reason, never both.
        assert (name in made) != (f"- {title}: " in not_made), name
        folder = out / ("tables" if name in tables.TABLES else "figures")
        assert (folder / f"{name}.{'md' if name in tables.TABLES else 'png'}").is_file() == (name in made), name
    for link in re.findall(r"\]\(([^)]+)\)", report):
        assert (out / link).is_file(), link
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]


@pytest.mark.parametrize("name", list(PARTIAL_GRIDS))
def test_partial_grid_writes_what_it_can_and_says_why_not_the_rest(tmp_path, name):
    grid, edit, expected_reasons = PARTIAL_GRIDS[name]
    trials = synthetic_trials(grid)
    out, report = _analyse(tmp_path, edit(trials) if edit else trials)
    _check_made_or_explained(out, report)
    for reason in expected_reasons:
        assert reason in report, reason


def test_one_language_makes_the_controlled_tables(tmp_path):
    out, report = _analyse(tmp_path, synthetic_trials(SyntheticGrid(**{**SMALL, "languages": ("ar",)})))
    _check_made_or_explained(out, report)
    table4 = (out / "tables" / "table4.md").read_text()
    assert "| + before |" in table4 and "| + joint |" in table4
    assert "| + before dico |" in (out / "tables" / "table13.md").read_text()
    # The multiun tables show the baselines only: the grid realigned on opus100 only.
    assert "no realigned POS trials on multiun" in (out / "tables" / "table14.md").read_text()


def test_no_finished_trial_still_writes_the_report(tmp_path):
    trials = synthetic_trials(SyntheticGrid(**SMALL)).head(3).assign(status="ERROR", error="RuntimeError: CUDA out of memory")
    out, report = _analyse(tmp_path, trials)
    assert "0 trials;" in report and "3 failed trial(s), left out of every table" in report
    assert "- Table 2: no finished trials" in report and "- Figure 1: no finished trials" in report
    assert len(pd.read_csv(out / "trials.csv")) == 0


def test_rerun_removes_outputs_it_can_no_longer_make(tmp_path):
    full = synthetic_trials(SyntheticGrid(**{**SMALL, "seeds": (0, 1), "tasks": ("udpos",)}))
    out, _ = _analyse(tmp_path, full)
    assert (out / "tables" / "table4.md").is_file() and (out / "figures" / "figure1.png").is_file()
    out, report = _analyse(tmp_path, full[full["realign"] == "before"])
    # A table or figure of the earlier run would be read as this run's: gone, and said why.
    assert not (out / "tables" / "table4.md").exists() and not (out / "tables" / "table4_vs_paper.csv").exists()
    assert not (out / "figures" / "figure1.png").exists() and not (out / "tables" / "table2.md").exists()
    assert "- Table 4: needs realign=none trials, the baselines of the before or joint trials (dico pairs); " \
           "have before only" in report


def test_atomic_write_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "report.md"
    files.write_text(target, "old\n")

    def half_then_crash(tmp: Path) -> None:
        tmp.write_text("half")
        raise KeyboardInterrupt  # a crash mid-write, even one that is not an Exception

    with pytest.raises(KeyboardInterrupt):
        files.atomic_write(target, half_then_crash)
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]
    # Written files get ordinary permissions (the temporary file is private while written).
    assert target.stat().st_mode & 0o777 == 0o666 & ~files.UMASK


def test_every_output_goes_through_the_atomic_writer(tmp_path, monkeypatch):
    written: list[Path] = []
    original = files.atomic_write

    def recording(path, write):
        written.append(Path(path).resolve())
        return original(path, write)

    monkeypatch.setattr(files, "atomic_write", recording)
    out, _ = _analyse(tmp_path, synthetic_trials(SyntheticGrid(**{**SMALL, "seeds": (0, 1)})))
    produced = {p.resolve() for p in out.rglob("*") if p.is_file()}
    assert produced and produced <= set(written)


def test_a_crash_mid_analysis_leaves_only_whole_files(tmp_path, monkeypatch):
    trials = synthetic_trials(SyntheticGrid(**{**SMALL, "seeds": (0, 1)}))
    fixture = tmp_path / "results.csv"
    trials.to_csv(fixture, index=False)
    calls = {"n": 0}
    original = files.atomic_write

    def crash_on_the_fifth_file(path, write):
        calls["n"] += 1
        if calls["n"] == 5:
            def partial(tmp: Path) -> None:
                tmp.write_text("| half a table")
                raise OSError(28, "No space left on device", str(path))
            return original(path, partial)
        return original(path, write)

    monkeypatch.setattr(files, "atomic_write", crash_on_the_fifth_file)
    out = tmp_path / "out"
    assert main([str(fixture), "--out", str(out), "--resamples", FAST_RESAMPLES]) == 1
    on_disk = [p for p in out.rglob("*") if p.is_file()]
    assert len(on_disk) == 4 and not [p for p in on_disk if ".tmp" in p.name]
    assert not (out / "report.md").exists()
