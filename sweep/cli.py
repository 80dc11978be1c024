"""`python -m sweep EXPERIMENT.py`: a thin command line over `sweep.experiment` and `sweep.runner`."""
from __future__ import annotations

import argparse
import ast
import importlib
import sys
from pathlib import Path
from typing import Any, Sequence

from rich.console import Console
from rich.table import Table

from sweep.experiment import AXES, Experiment, ExperimentError, build_experiment, load_experiment_file
from sweep.preflight import preflight_problems

DEFAULT_STORAGE = "./results"


def parse_assignments(pairs: Sequence[str], option: str) -> dict[str, Any]:
    """KEY=VALUE strings; values parsed as Python literals when they are (3, 1e-5, [..]), else strings."""
    parsed: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ExperimentError(f"{option} {pair!r}: expected KEY=VALUE")
        try:
            parsed[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parsed[key] = value
    return parsed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sweep", description=__doc__)
    parser.add_argument("experiment", help="experiment file defining EXPERIMENT (see experiments/)")
    parser.add_argument("--storage", default=DEFAULT_STORAGE, help="results folder (default: ./results)")
    parser.add_argument("--name", help="run name (default: the experiment's name)")
    parser.add_argument("--address", help="an existing Ray cluster (default: start a local one)")
    parser.add_argument("--fresh", action="store_true", help="discard a previous run of that name")
    parser.add_argument("--dry-run", action="store_true", help="print the trials and their resources, start nothing")
    parser.add_argument("--only", action="append", default=[], metavar="KEY=VALUE",
                        help=f"keep trials whose axis matches ({', '.join(AXES)}); repeatable")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override a setting for every trial; repeatable")
    parser.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: all)")
    parser.add_argument("--no-live", action="store_true", help="plain Tune output instead of the live display")
    parser.add_argument("--no-report", action="store_true", help="don't write the analysis report at the end")
    return parser


def run_prepare_hook(prepare: Any, where: str) -> None:
    """An experiment may name a function that makes its inputs (e.g. the demo's toy data):
    `prepare=dict(call="module:function", **keyword_arguments)`."""
    if not isinstance(prepare, dict) or ":" not in str(prepare.get("call", "")):
        raise ExperimentError(f"{where}: prepare must be dict(call='module:function', **arguments)")
    module, _, function = prepare["call"].partition(":")
    getattr(importlib.import_module(module), function)(**{k: v for k, v in prepare.items() if k != "call"})


def print_trials(experiment: Experiment, console: Console) -> None:
    """The trial table; settings shared by every trial are printed once, above it."""
    common = set.intersection(*(set(t.settings) for t in experiment.trials))
    if common:
        console.print("settings of every trial: " + ", ".join(f"{k}={v}" for k, v in sorted(common)))
    table = Table(title=f"{experiment.name}: {experiment.source}")
    for column in ("#", *AXES, "CPU", "GPU", "other settings"):
        table.add_column(column)
    for index, trial in enumerate(experiment.trials):
        spec = experiment.models[trial.model]
        own = ", ".join(f"{k}={v}" for k, v in trial.settings if (k, v) not in common)
        table.add_row(str(index), *(str(getattr(trial, axis)) for axis in AXES), f"{spec.cpu:g}", f"{spec.gpu:g}", own)
    console.print(table)
    console.print("GPU shares apply only where the cluster has GPUs; elsewhere trials ask for none.")
    print(f"{len(experiment.trials)} trials")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console()
    try:
        raw = load_experiment_file(args.experiment)
        overrides = parse_assignments(args.overrides, "--set")
        only = {k: str(v) for k, v in parse_assignments(args.only, "--only").items()}
        experiment = build_experiment(raw, where=args.experiment, overrides=overrides)
        experiment = Experiment(experiment.name, experiment.description, experiment.models, experiment.trials,
                                experiment.n_grid_points, args.experiment).filtered(only)
        if not experiment.trials:
            raise ExperimentError(f"{args.experiment}: no trial left after --only {args.only}")
        if args.dry_run:
            print_trials(experiment, console)
            return 0
        if raw.get("prepare"):
            run_prepare_hook(raw["prepare"], args.experiment)
        problems = preflight_problems(experiment)
        if problems:
            for line in problems:
                print(f"error: {line}", file=sys.stderr)
            return 2
    except ExperimentError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from sweep.runner import run_sweep  # Ray is imported only once there is something to run

    name = args.name or experiment.name
    storage = Path(args.storage).expanduser().resolve()
    try:
        results = run_sweep(experiment, storage, name, address=args.address, fresh=args.fresh,
                            live=not args.no_live, num_cpus=args.num_cpus)
    except ExperimentError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    errors = [r for r in results if r.error]
    print(f"{len(results) - len(errors)} trials finished, {len(errors)} failed; results in {storage / name}")
    for result in errors:
        print(f"  failed: {result.path}: {str(result.error).splitlines()[0] if str(result.error) else 'error'}")
    if not args.no_report:
        from analysis.__main__ import main as analysis_main

        analysis_main([str(storage / name), "--out", str(storage / name / "analysis")])
        print(f"report: {storage / name / 'analysis' / 'report.md'}")
    return 1 if errors else 0
