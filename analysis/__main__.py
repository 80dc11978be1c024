"""``python -m analysis RESULTS [RESULTS ...] [--out DIR] [--compare-paper]``: a sweep's results ->
the tidy trials table, the paper's tables and figures, and a report (see :mod:`analysis.results`
for the table layout RESULTS may have). Several RESULTS are read as one experiment.

Bad input (a RESULTS that does not exist, is empty or is not results; an ``--out`` that is a file
or cannot be written) is one line ``error: ...`` on stderr, exit status 2, and nothing written.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from analysis import figures, files, paper, report, results, tables
from analysis.stats import BootstrapSettings
from analysis.tables import AnalysisSettings

DEFAULT_OUT_SUFFIX = "-analysis"
EXIT_BAD_INPUT = 2
EXIT_WRITE_FAILED = 1


def default_out_dir(results_path: Path) -> Path:
    """Next to RESULTS: ``<name>-analysis`` (the extension dropped for a table file)."""
    results_path = Path(results_path).resolve()
    stem = results_path.name if results_path.is_dir() else results_path.stem
    return results_path.parent / f"{stem}{DEFAULT_OUT_SUFFIX}"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    defaults = BootstrapSettings()
    parser = argparse.ArgumentParser(
        prog="python -m analysis",
        description="Turn a sweep's results (Ray Tune experiment folders, or tidy .parquet/.csv tables) into "
        "the tidy trials table, the paper's tables and figures, and a report. Several RESULTS are read as one "
        "experiment (a trial found in several is counted once, the newest kept).",
    )
    parser.add_argument("results", type=Path, nargs="+",
                        help="Ray Tune experiment folder(s), or tidy .parquet/.csv table(s)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"output folder (default with one RESULTS: RESULTS{DEFAULT_OUT_SUFFIX} next to it)")
    parser.add_argument("--compare-paper", action="store_true", help="also write tableN_vs_paper.md/.csv next to the tables")
    parser.add_argument("--keep-unlearned", action="store_true",
                        help="keep trials whose English score is at or below chance (they did not learn the task) in "
                        "the CTL correlations; by default they are left out and listed in the report")
    parser.add_argument("--resamples", type=int, default=defaults.n_resamples,
                        help=f"bootstrap resamples for the confidence intervals (default {defaults.n_resamples}, as the paper)")
    parser.add_argument("--bootstrap-seed", type=int, default=defaults.seed, help=f"bootstrap random seed (default {defaults.seed})")
    return parser.parse_args(argv)


class OutputError(ValueError):
    """An output folder that cannot be used; the message is one line naming it."""


def check_out_dir(out_dir: Path) -> None:
    """Fail, writing nothing, unless ``out_dir`` is (or can be made) a writable folder."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir}: --out is a file, not a folder")
    existing = out_dir
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{out_dir}: cannot create the output folder ({existing} is a file)")
    # os.access says yes to root for any folder; a real file creation also catches read-only
    # filesystems. The probe lives in the nearest existing folder, so nothing new remains.
    try:
        handle, probe = tempfile.mkstemp(prefix=".analysis-probe.", dir=existing)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise OutputError(f"{out_dir}: the output folder cannot be written ({error.strerror or error})") from error


def _write_or_remove_table(name: str, spec: tables.TableSpec, frame: pd.DataFrame, ctx: tables.Context,
                           table_dir: Path, compare_paper: bool,
                           settings: AnalysisSettings) -> tuple[report.Output, report.Output | None]:
    """Write table ``name`` (and its comparison with the paper) if it can be made; else remove
    any file of that name an earlier analysis left, and say why."""
    caption = spec.caption
    reason = tables.unmade_reason(spec, frame, ctx)
    if reason is not None:
        files.remove_stale([table_dir / n for n in tables.table_file_names(name)])
        return report.Output(caption, [], reason=reason), None
    paths = tables.write_table(name, frame, table_dir, caption, settings)
    output = report.Output(caption, paths, list(frame.attrs.get("notes", [])))
    comparison = None
    if compare_paper and name in paper.PAPER_TABLES:
        comparison_paths = paper.write_comparison(name, frame, table_dir, f"{caption} Ours vs the paper.")
        comparison = report.Output(f"{name} vs the paper", comparison_paths)
    return output, comparison


def run(results_paths: Path | Sequence[Path], out_dir: Path, compare_paper: bool, settings: AnalysisSettings) -> Path:
    """Write every output for ``results_paths`` (read as one experiment) into ``out_dir``;
    returns the report's path."""
    paths = [results_paths] if isinstance(results_paths, (str, Path)) else list(results_paths)
    loaded = results.load_experiment(paths)
    check_out_dir(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    trials = loaded.trials
    trial_files = results.write_trials(trials, out_dir)
    table_dir, figure_dir = out_dir / "tables", out_dir / "figures"
    table_outputs: dict[str, report.Output] = {}
    comparisons: dict[str, report.Output] = {}
    figure_outputs: dict[str, report.Output] = {}
    if trials.empty:
        ctx = None
        for name, spec in tables.TABLES.items():
            files.remove_stale([table_dir / n for n in tables.table_file_names(name)])
            table_outputs[name] = report.Output(spec.caption, [], reason=f"{spec.title}: no finished trials")
        for name, spec in figures.FIGURES.items():
            files.remove_stale([figure_dir / f"{name}.{fmt}" for fmt in figures.FIGURE_FORMATS])
            figure_outputs[name] = report.Output(spec.caption, [], reason=f"{spec.caption.split(':')[0]}: no finished trials")
    else:
        ctx = tables.prepare(trials, settings)
        for name, spec in tables.table_specs(ctx).items():
            try:
                frame = spec.build(ctx)
            except Exception as error:  # one table's failure must not cost the report the others
                message = f"{type(error).__name__}: {' '.join(str(error).split())}"
                print(f"warning: {name}: {message}", file=sys.stderr)
                files.remove_stale([table_dir / n for n in tables.table_file_names(name)])
                table_outputs[name] = report.Output(spec.caption, [], reason=f"{spec.title}: could not be computed ({message})")
                continue
            table_outputs[name], comparison = _write_or_remove_table(
                name, spec, frame, ctx, table_dir, compare_paper, settings)
            if comparison is not None:
                comparisons[name] = comparison
        for name, (written, notes, reason) in figures.write_figures(ctx, figure_dir).items():
            figure_outputs[name] = report.Output(figures.FIGURES[name].caption, written, notes, reason)
    text = report.render_report(
        loaded, out_dir, trial_files, table_outputs, figure_outputs, comparisons, ctx.notes if ctx else [],
        ctx.unlearned if ctx else None, settings.keep_unlearned,
    )
    return report.write_report(out_dir, text)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = AnalysisSettings(bootstrap=BootstrapSettings(n_resamples=args.resamples, seed=args.bootstrap_seed),
                                keep_unlearned=args.keep_unlearned)
    if args.out is None and len(args.results) > 1:
        print(f"error: {len(args.results)} RESULTS given ({', '.join(map(str, args.results))}): name the output "
              "folder with --out", file=sys.stderr)
        return EXIT_BAD_INPUT
    out_dir = args.out if args.out is not None else default_out_dir(args.results[0])
    try:
        report_path = run(args.results, out_dir, args.compare_paper, settings)
    except (results.ResultsError, OutputError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as error:  # e.g. the disk filled up mid-analysis: every file written is whole
        print(f"error: {error.filename or out_dir}: could not write the analysis ({error.strerror or error})",
              file=sys.stderr)
        return EXIT_WRITE_FAILED
    print(f"wrote {report_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
