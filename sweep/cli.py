"""`python -m sweep EXPERIMENT.py`: a thin command line over `sweep.experiment` and `sweep.runner`."""
from __future__ import annotations

import argparse
import ast
import importlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from rich.console import Console
from rich.table import Table

from sweep.experiment import (
    AXES,
    Experiment,
    ExperimentError,
    build_experiment,
    check_run_name,
    device_problems,
    load_experiment_file,
    realign_layer_problems,
    trial_settings,
)
from sweep.ledger import plan_trials
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


def parse_only(pairs: Sequence[str]) -> dict[str, set[str]]:
    """`--only KEY=VALUE`, repeatable: the values of one key are a union (`seed=0 --only seed=1`
    keeps both seeds), different keys intersect."""
    only: dict[str, set[str]] = {}
    for pair in pairs:
        for key, value in parse_assignments([pair], "--only").items():
            only.setdefault(key, set()).add(str(value))
    return only


def check_storage(storage: str) -> Any:
    """The results folder, made if absent; it must be a folder this process can write in.

    It is what Ray Tune takes as `storage_path`: a local or network path (a `Path` is returned;
    `file://` URIs too), or a URI pyarrow opens (s3://, gs://, hdfs://, ...: a
    `sweep.ledger.Location` is returned, once a probe file was written and deleted there)."""
    from sweep.ledger import location  # the ledger reads and writes through pyarrow.fs

    try:
        where = location(storage)
    except ValueError as error:
        raise ExperimentError(f"--storage {error}") from None
    if where.local is None:
        probe = where / f".sweep-write-check-{os.getpid()}"
        try:
            where.mkdir()
            probe.write_text("")
            probe.unlink()
        except OSError as error:
            raise ExperimentError(f"--storage {storage}: cannot write there ({' '.join(str(error).split())})") from None
        return where
    path = where.local
    if path.exists() and not path.is_dir():
        raise ExperimentError(f"--storage {storage}: {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ExperimentError(f"--storage {storage}: cannot make {path} ({error.strerror or error})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ExperimentError(f"--storage {storage}: {path} is not writable")
    return path


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
    parser.add_argument("--keep-models", action="store_true",
                        help="save each fine-tuned model (safetensors and tokenizer) in its trial folder, model/; "
                             "without it a finished trial keeps its metrics only")
    parser.add_argument("--no-live", action="store_true", help="plain Tune output instead of the live display")
    parser.add_argument("--log", action="store_true",
                        help="one plain line per event instead of the live display (the default when stdout is "
                             "not a terminal)")
    parser.add_argument("--no-report", action="store_true", help="don't write the analysis report at the end")
    parser.add_argument("--report-every", type=int, default=0, metavar="N",
                        help="also refresh the analysis report every N finished trials, while the sweep runs")
    return parser


class ReportRefresher:
    """`--report-every N`: after every N trials finished in this run, `python -m analysis` on the
    experiment folder (finished trials only) in a separate process, so the sweep never waits
    for it; a refresh due while one runs starts when that one has ended."""

    def __init__(self, run_dir: Path, every: int) -> None:
        self.run_dir, self.every = run_dir, every
        self.process: subprocess.Popen | None = None
        self.due = False
        self.refreshes = 0

    def __call__(self, finished: int) -> None:
        if finished % self.every == 0:
            self.due = True
        self.poll()

    def poll(self) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        if self.due:
            self.due = False
            self.refreshes += 1
            with open(self.run_dir / "analysis-refresh.log", "a") as log:
                self.process = subprocess.Popen(
                    [sys.executable, "-m", "analysis", str(self.run_dir), "--out", str(self.run_dir / "analysis")],
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def wait(self) -> None:
        """Until no refresh runs or is due."""
        while self.process is not None and self.process.poll() is None or self.due:
            if self.process is not None:
                self.process.wait()
            self.poll()


def run_prepare_hook(prepare: Any, where: str) -> None:
    """An experiment may name a function that makes its inputs (e.g. the demo's toy data):
    `prepare=dict(call="module:function", **keyword_arguments)`."""
    if not isinstance(prepare, dict) or ":" not in str(prepare.get("call", "")):
        raise ExperimentError(f"{where}: prepare must be dict(call='module:function', **arguments)")
    module, _, function = prepare["call"].partition(":")
    try:
        target = getattr(importlib.import_module(module), function)
    except ImportError as error:
        raise ExperimentError(f"{where}: prepare call={prepare['call']!r}: cannot import {module!r} ({error})") from None
    except AttributeError:
        raise ExperimentError(f"{where}: prepare call={prepare['call']!r}: {module!r} has no {function!r}") from None
    if not callable(target):
        raise ExperimentError(f"{where}: prepare call={prepare['call']!r} is not a function")
    target(**{k: v for k, v in prepare.items() if k != "call"})


def print_trials(experiment: Experiment, console: Console, status: str | None = None,
                 notes: Sequence[str] = ()) -> None:
    """The trial table; settings shared by every trial are printed once, above it; `status`
    (what is done, to resume, new) and `notes` (the disk plan) just above the count."""
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
    if status:
        print(status)
    for line in notes:
        print(line)
    print(f"{len(experiment.trials)} trials")


def local_gpu_count() -> int:
    import torch

    return torch.cuda.device_count()


def dry_run_disk(experiment: Experiment, settings: Mapping[Any, Any], args: argparse.Namespace) -> list[str]:
    """The checkpoint disk of the sweep at peak and at the end (sweep.disk): on the local Ray
    (`--num-cpus` or every core, this machine's GPUs) or per concurrent trial on a cluster."""
    from sweep.disk import disk_plan_lines

    if args.address is not None:
        return disk_plan_lines(experiment, settings, args.keep_models, cpus=None, gpus=0.0)
    cpus = float(args.num_cpus or os.cpu_count() or 1)
    return disk_plan_lines(experiment, settings, args.keep_models, cpus=cpus, gpus=float(local_gpu_count()))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console()
    try:
        if args.num_cpus is not None and args.num_cpus < 1:
            raise ExperimentError(f"--num-cpus {args.num_cpus}: expected a whole number >= 1")
        raw = load_experiment_file(args.experiment)
        overrides = parse_assignments(args.overrides, "--set")
        only = parse_only(args.only)
        experiment = build_experiment(raw, where=args.experiment, overrides=overrides)
        experiment = Experiment(experiment.name, experiment.description, experiment.models, experiment.trials,
                                experiment.n_grid_points, args.experiment).filtered(only)
        if not experiment.trials:
            raise ExperimentError(f"{args.experiment}: no trial left after --only {' --only '.join(args.only)}")
        if args.keep_models:  # a run option: the trials' content keys stay the same
            experiment = experiment.keeping_models()
        settings = trial_settings(experiment)  # every trial's settings, as its trainable builds them
        if args.report_every < 0:
            raise ExperimentError(f"--report-every {args.report_every}: expected a whole number >= 1 (0: off)")
        name = check_run_name(args.name if args.name is not None else experiment.name)
        if args.dry_run:
            run_dir = Path(args.storage).expanduser().resolve() / name
            plan = plan_trials(run_dir, experiment.keys().values())
            print_trials(experiment, console, status=f"in {run_dir}: {plan.summary()}",
                         notes=dry_run_disk(experiment, settings, args))
            return 0
        storage = check_storage(args.storage)
        if raw.get("prepare"):
            run_prepare_hook(raw["prepare"], args.experiment)
        problems = preflight_problems(experiment)
        if not problems:  # the model folders are readable: check what depends on their config
            problems = realign_layer_problems(experiment, settings)
        if not problems and args.address is None and any(s.device.startswith("cuda") for s in settings.values()):
            problems = device_problems(experiment, settings, local_gpu_count(), "this machine")
        if problems:
            for line in problems:
                print(f"error: {line}", file=sys.stderr)
            return 2
    except ExperimentError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from sweep.runner import run_sweep  # Ray is imported only once there is something to run
    from sweep.trainable import TUNE_ERROR_FILE, failure_reason

    refresher = ReportRefresher(storage / name, args.report_every) if args.report_every else None
    try:
        results = run_sweep(experiment, storage, name, address=args.address, fresh=args.fresh,
                            live=not args.no_live, num_cpus=args.num_cpus,
                            log=args.log or not sys.stdout.isatty(), on_finished=refresher)
    except ExperimentError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        if refresher is not None:
            refresher.wait()
    errors = [r for r in results if r.error]
    unfinished = f", {results.unfinished} unfinished (the same command resumes them)" if results.unfinished else ""
    print(f"{results.finished} trials finished, {len(errors)} failed{unfinished}; results in {storage / name}")
    for result in errors:
        folder = Path(result.path)
        print(f"  failed: {folder.name}: {failure_reason(folder, result.error)} (log: {folder / TUNE_ERROR_FILE})")
    if not args.no_report:
        from analysis.__main__ import main as analysis_main

        analysis_main([str(storage / name), "--out", str(storage / name / "analysis")])
        print(f"report: {storage / name / 'analysis' / 'report.md'}")
    return 1 if errors else 0
