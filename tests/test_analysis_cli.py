"""``python -m analysis`` end to end on tidy table fixtures: every output file, the report's
links, missing data and single seeds, bad paths, and no heavy imports."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from analysis import figures, paper, tables
from analysis.__main__ import default_out_dir, main
from analysis.synthetic import SyntheticGrid, synthetic_trials

REPO = Path(__file__).resolve().parents[1]
PAPER_TABLE_NAMES = [f"table{n}" for n in (2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17)]
FAST_RESAMPLES = "100"


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> Path:
    """The paper's grid (4 models, 3 tasks, 5 languages, realignment x 3 pair sources x 2
    corpora), 2 seeds, small models: analysed once for the tests below."""
    folder = tmp_path_factory.mktemp("full")
    fixture = folder / "results.csv"
    synthetic_trials(SyntheticGrid(seeds=(0, 1))).to_csv(fixture, index=False)
    out = folder / "out"
    assert main([str(fixture), "--out", str(out), "--compare-paper", "--resamples", FAST_RESAMPLES]) == 0
    return out


def test_every_output_file_is_written(full_run):
    expected = [full_run / "trials.parquet", full_run / "trials.csv", full_run / "report.md"]
    for name in PAPER_TABLE_NAMES:
        expected += [full_run / "tables" / f"{name}.{ext}" for ext in ("md", "tex", "csv")]
        expected += [full_run / "tables" / f"{name}_vs_paper.{ext}" for ext in ("md", "csv")]
    for name in figures.FIGURES:
        expected += [full_run / "figures" / f"{name}.{ext}" for ext in ("png", "pdf")]
    for path in expected:
        assert path.is_file() and path.stat().st_size > 0, path
    # No temporary files left behind by the atomic writes.
    assert not [p for p in full_run.rglob("*") if ".tmp" in p.name]
    assert (full_run / "figures" / "figure1.png").read_bytes()[:4] == b"\x89PNG"
    assert (full_run / "figures" / "figure1.pdf").read_bytes()[:4] == b"%PDF"


def test_trials_table_has_one_row_per_trial(full_run):
    trials = pd.read_parquet(full_run / "trials.parquet")
    # 4 models x 3 tasks x 2 seeds baselines + 3 models x 3 tasks x 2 methods x 3 pairs x 2 corpora x 2 seeds.
    assert len(trials) == 4 * 3 * 2 + 3 * 3 * 2 * 3 * 2 * 2
    assert list(trials.columns[:6]) == ["model", "task", "realign", "pairs", "corpus", "seed"]
    assert len(pd.read_csv(full_run / "trials.csv")) == len(trials)


def test_report_links_resolve_and_state_the_run_size(full_run):
    report = (full_run / "report.md").read_text()
    assert "240 trials; 4 model(s); 3 task(s); 5 target language(s); 2 seed(s)." in report
    links = re.findall(r"\]\(([^)]+)\)", report)
    assert len(links) >= 2 + 3 * len(PAPER_TABLE_NAMES) + 2 * len(figures.FIGURES) + 2 * len(PAPER_TABLE_NAMES)
    for link in links:
        assert (full_run / link).is_file(), link
    # Two seeds instead of the paper's five is reported as missing.
    assert "fewer than 5 seeds" in report


def test_table_csv_matches_the_table_function(full_run):
    trials = pd.read_parquet(full_run / "trials.parquet")
    settings = tables.AnalysisSettings()
    ours = tables.controlled_table(trials, "udpos", "opus100", settings)
    written = pd.read_csv(full_run / "tables" / "table13.csv", keep_default_na=True)
    assert len(written) == len(ours)
    assert written["mean"].to_numpy() == pytest.approx(ours["mean"].to_numpy())
    comparison = pd.read_csv(full_run / "tables" / "table13_vs_paper.csv")
    assert len(comparison) == len(paper.load_paper_numbers("table13"))
    assert comparison["mean_ours"].notna().all()  # the synthetic grid has every published cell


def test_partial_single_seed_run_reports_missing_instead_of_crashing(tmp_path):
    trials = synthetic_trials(SyntheticGrid(tasks=("udpos",), seeds=(0,), realigned_models=(), languages=("ar", "fr")))
    fixture = tmp_path / "partial.parquet"
    trials.to_parquet(fixture, index=False)
    out = tmp_path / "out"
    assert main([str(fixture), "--out", str(out), "--compare-paper", "--resamples", FAST_RESAMPLES]) == 0
    report = (out / "report.md").read_text()
    assert "paper's tasks not run: NER, NLI" in report
    assert "paper's target languages not run: es, ru, zh" in report
    assert "std over seeds is NaN" in report
    # Baselines only: the controlled tables show them; no NLI trial at all: no Table 17, and why.
    table13 = (out / "tables" / "table13.md").read_text()
    assert "± n/a" in table13 and "no realigned POS trials on opus100" in table13
    assert not (out / "tables" / "table17.md").exists() and not (out / "tables" / "table17_vs_paper.md").exists()
    assert "- Table 17: needs NLI realign=none trials, the baselines of the realigned trials on opus100; " \
           "have no NLI trials" in report
    table2 = (out / "tables" / "table2.md").read_text()
    assert "| NER | last | missing | missing | missing | missing |" in table2
    assert "missing" in (out / "tables" / "table13_vs_paper.md").read_text()
    assert (out / "figures" / "figure4.png").is_file()
    assert not (out / "figures" / "figure2.png").exists()
    assert "- Figure 2: no NLI alignment-after-fine-tuning x CTL points" in report.split("## Not made")[1]


def test_default_output_folder_is_next_to_the_results(tmp_path):
    assert default_out_dir(tmp_path / "sweep.csv") == (tmp_path / "sweep-analysis").resolve()
    (tmp_path / "exp").mkdir()
    assert default_out_dir(tmp_path / "exp") == (tmp_path / "exp-analysis").resolve()


def test_bad_results_path_is_one_line_and_exit_code_2(tmp_path):
    missing = tmp_path / "nowhere"
    completed = subprocess.run(
        [sys.executable, "-m", "analysis", str(missing)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 2
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and str(missing) in lines[0] and "expected a Ray Tune experiment folder" in lines[0]


def test_package_imports_neither_torch_transformers_nor_ray():
    code = (
        "import sys, analysis, analysis.__main__, analysis.tables, analysis.figures, analysis.paper, analysis.report;"
        "heavy = [m for m in ('torch', 'transformers', 'ray') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    completed = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == ""
