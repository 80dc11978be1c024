"""``python -m analysis RESULTS [--out DIR] [--compare-paper]``: a sweep's results -> the tidy
trials table, the paper's tables and figures, and a report (see :mod:`analysis.results` for the
table layout RESULTS may have)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from analysis import figures, paper, report, results, tables
from analysis.stats import BootstrapSettings
from analysis.tables import AnalysisSettings

DEFAULT_OUT_SUFFIX = "-analysis"


def default_out_dir(results_path: Path) -> Path:
    """Next to RESULTS: ``<name>-analysis`` (the extension dropped for a table file)."""
    results_path = Path(results_path).resolve()
    stem = results_path.name if results_path.is_dir() else results_path.stem
    return results_path.parent / f"{stem}{DEFAULT_OUT_SUFFIX}"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    defaults = BootstrapSettings()
    parser = argparse.ArgumentParser(
        prog="python -m analysis",
        description="Turn a sweep's results (Ray Tune experiment folder, or a tidy .parquet/.csv table) into "
        "the tidy trials table, the paper's tables and figures, and a report.",
    )
    parser.add_argument("results", type=Path, help="Ray Tune experiment folder, or a tidy .parquet/.csv table")
    parser.add_argument("--out", type=Path, default=None, help=f"output folder (default: RESULTS{DEFAULT_OUT_SUFFIX} next to RESULTS)")
    parser.add_argument("--compare-paper", action="store_true", help="also write tableN_vs_paper.md/.csv next to the tables")
    parser.add_argument("--resamples", type=int, default=defaults.n_resamples,
                        help=f"bootstrap resamples for the confidence intervals (default {defaults.n_resamples}, as the paper)")
    parser.add_argument("--bootstrap-seed", type=int, default=defaults.seed, help=f"bootstrap random seed (default {defaults.seed})")
    return parser.parse_args(argv)


def run(results_path: Path, out_dir: Path, compare_paper: bool, settings: AnalysisSettings) -> Path:
    """Write every output for ``results_path`` into ``out_dir``; returns the report's path."""
    trials = results.load_results(results_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    trial_files = results.write_trials(trials, out_dir)
    ctx = tables.prepare(trials, settings)
    table_dir, figure_dir = out_dir / "tables", out_dir / "figures"
    table_outputs: dict[str, report.Output] = {}
    comparisons: dict[str, report.Output] = {}
    for name, frame in tables.build_tables(ctx, settings).items():
        caption = tables.caption(name, ctx)
        paths = tables.write_table(name, frame, table_dir, caption, settings)
        table_outputs[name] = report.Output(caption, paths, list(frame.attrs.get("notes", [])))
        if compare_paper and name in paper.PAPER_TABLES:
            comparison_paths = paper.write_comparison(name, frame, table_dir, f"{caption} Ours vs the paper.")
            comparisons[name] = report.Output(f"{name} vs the paper", comparison_paths)
    figure_outputs = {
        name: report.Output(figures.FIGURES[name].caption, paths, notes)
        for name, (paths, notes) in figures.write_figures(ctx, figure_dir).items()
    }
    text = report.render_report(
        trials, str(results_path), out_dir, trial_files, table_outputs, figure_outputs, comparisons, ctx.notes
    )
    return report.write_report(out_dir, text)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = AnalysisSettings(bootstrap=BootstrapSettings(n_resamples=args.resamples, seed=args.bootstrap_seed))
    out_dir = args.out if args.out is not None else default_out_dir(args.results)
    try:
        report_path = run(args.results, out_dir, args.compare_paper, settings)
    except results.ResultsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {report_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
