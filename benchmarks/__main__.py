"""`python -m benchmarks [--out FILE.json] [--only NAME] [--smoke]`: every speed and memory target, side by side.

Each benchmark is a ratio measured in this run against a baseline run on the same machine at the
same time (the machines are shared and noisy: no absolute time is a target). The table
(benchmark, ours, baseline, ratio, target, pass) is printed with rich and written as JSON,
atomically, to --out (default results/benchmarks.json).

Benchmarks (registry BENCHMARKS): finetune (1), alignment (2), shared (3), sweep (4), gpu (5, GPU
only), corpus_memory (6: peak memory of pair extraction, an absolute target; `--corpus-lines N`,
default 1,000,000). `--smoke` runs them all on tiny slices with the toy BERT instead of e5-small
(and 500 lines of the toy corpus for 6): only the table's structure means anything then. Inputs: e5-small at $E5_SMALL_PATH (default
~/.cache/offline-models/multilingual-e5-small), data at $SWEEP_DATA_DIR (default ../shared/data); each
benchmark requires only its own (each module's `INPUTS`: gpu needs neither).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import difflib
import functools
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Collection, Sequence

from benchmarks.common import (
    JSON_FORMAT_VERSION,
    PROJECT_ROOT,
    Context,
    Row,
    Section,
    check_inputs,
    default_context,
    fmt_ratio,
    machine_info,
    write_json_atomic,
)

DEFAULT_OUT = PROJECT_ROOT / "results" / "benchmarks.json"
TABLE_COLUMNS = ("benchmark", "ours", "baseline", "ratio", "target", "pass")
# Torch threads of benchmarks 1-3 (both sides). One: on a 2-core machine shared with other work, a
# 2-thread pool stalls whenever another process holds a core (runs varied 3-20x from one to the next).
DEFAULT_THREADS = 1
TABLE_WIDTH = 150  # characters; wider terminals use their width


def _modules() -> list[Any]:
    from benchmarks import (
        alignment_speed,
        corpus_memory,
        finetune_throughput,
        gpu_throughput,
        shared_work,
        sweep_overhead,
    )

    return [finetune_throughput, alignment_speed, shared_work, sweep_overhead, gpu_throughput, corpus_memory]


def inputs_of(names: Collection[str]) -> set[str]:
    """What the benchmarks `names` read, from each module's INPUTS ("model": e5-small, "data":
    ../shared/data)."""
    return {need for module in _modules() if module.NAME in names for need in module.INPUTS}


def _registry(corpus_lines: int | None = None) -> dict[str, Callable[[Context], Section]]:
    registry = {module.NAME: module.run for module in _modules()}
    registry["corpus_memory"] = functools.partial(registry["corpus_memory"], lines=corpus_lines)
    return registry


BENCHMARK_NAMES = ("finetune", "alignment", "shared", "sweep", "gpu", "corpus_memory")


def select(names: Sequence[str]) -> list[str]:
    """The benchmarks to run, in registry order; unknown names: one line with a suggestion."""
    for name in names:
        if name not in BENCHMARK_NAMES:
            close = difflib.get_close_matches(name, BENCHMARK_NAMES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"--only {name!r}: unknown benchmark{hint}; valid: {', '.join(BENCHMARK_NAMES)}")
    return [name for name in BENCHMARK_NAMES if not names or name in names]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON results (default: {DEFAULT_OUT})")
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help=f"run only this benchmark (repeatable): {', '.join(BENCHMARK_NAMES)}")
    parser.add_argument("--smoke", action="store_true", help="tiny slices and the toy model: checks the harness only")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                        help=f"torch threads of benchmarks 1-3, ours and baselines alike (default {DEFAULT_THREADS});"
                             " benchmark 4 sets its own (engine 1 per trial, loop 2)")
    parser.add_argument("--keep-work-dir", action="store_true", help="keep the scratch folder (caches, sweeps)")
    parser.add_argument("--corpus-lines", type=int, default=None, metavar="N",
                        help="sentence pairs of benchmark 6's synthetic corpus (default 1,000,000; --smoke: 500)")
    return parser


def pass_text(passed: bool | None) -> str:
    return "-" if passed is None else ("PASS" if passed else "FAIL")


def render(sections: Sequence[Section], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for column in TABLE_COLUMNS:
        table.add_column(column, justify="left" if column in ("benchmark", "target") else "right")
    for section in sections:
        for row in section.rows:
            style = {True: "green", False: "red"}.get(row.passed, "")
            table.add_row(row.benchmark, row.ours, row.baseline, fmt_ratio(row.ratio), row.target,
                          f"[{style}]{pass_text(row.passed)}[/]" if style else pass_text(row.passed))
    console = Console(width=max(TABLE_WIDTH, Console().width))
    console.print(table)
    for section in sections:
        if section.status != "ok":
            console.print(f"{section.name}: {section.status}")
        for row in section.rows:
            if row.note:
                console.print(f"  {row.benchmark}: {row.note}", highlight=False)
        for note in section.notes:
            console.print(f"  {note}", highlight=False)


def smoke_model(context: Context) -> Context:
    """Smoke runs use the toy BERT and the toy data for benchmarks 1-3 (seconds instead of minutes)."""
    from benchmarks import sweep_overhead
    from toyworld import TOY_CORPUS

    data_dir, model_dir = sweep_overhead.toy_assets(sweep_overhead.SMOKE, smoke=True)
    return dataclasses.replace(context, model_path=model_dir, data_dir=data_dir, corpus=TOY_CORPUS)


def run_benchmarks(names: Sequence[str], context: Context, corpus_lines: int | None = None) -> list[Section]:
    registry = _registry(corpus_lines)
    sections = []
    for name in names:
        started = time.perf_counter()
        try:
            section = registry[name](context)
        except Exception as error:  # one broken benchmark must not hide the others' figures
            traceback.print_exc()
            message = " ".join(str(error).split())[:200]
            section = Section(name, [Row(f"{name}: error", "-", "-", None, "-", False, message)],
                              status=f"error: {type(error).__name__}: {message}")
        section.seconds = time.perf_counter() - started
        sections.append(section)
    return sections


def results_document(sections: Sequence[Section], context: Context, started: float, load_before: list[float],
                     mode: str) -> dict:
    rows = [row.to_dict() for section in sections for row in section.rows]
    targets = [row["passed"] for row in rows if row["passed"] is not None]
    machine = machine_info()
    machine["load_average_at_start"] = load_before
    return {
        "format_version": JSON_FORMAT_VERSION,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "mode": mode,
        "threads": context.threads,
        "machine": machine,
        "inputs": {"model": str(context.model), "data_dir": str(context.data_dir)},
        "total_seconds": time.perf_counter() - started,
        "all_passed": all(targets),
        "columns": list(TABLE_COLUMNS),
        "table": rows,
        "sections": [section.to_dict() for section in sections],
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        names = select(args.only)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.corpus_lines is not None and args.corpus_lines < 1:
        print(f"error: --corpus-lines {args.corpus_lines}: must be >= 1", file=sys.stderr)
        return 2
    # Everything is local: never wait on a hub.
    os.environ.setdefault("SWEEP_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    import torch

    load_before = list(os.getloadavg()) if hasattr(os, "getloadavg") else []
    work_dir = Path(tempfile.mkdtemp(prefix="benchmarks-"))
    if args.threads < 1:
        print(f"error: --threads {args.threads}: must be >= 1", file=sys.stderr)
        return 2
    threads_before = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        context = dataclasses.replace(default_context(args.smoke, work_dir), threads=args.threads)
        if args.smoke:
            context = smoke_model(context)
        problems = check_inputs(context, inputs_of(names))
        if problems:
            for line in problems:
                print(f"error: {line}", file=sys.stderr)
            return 2
        sections = run_benchmarks(names, context, args.corpus_lines)
        mode = "smoke" if args.smoke else "full"
        document = results_document(sections, context, started, load_before, mode)
        write_json_atomic(document, args.out)
        load = ", ".join(f"{value:.2f}" for value in document["machine"]["load_average"] or [])
        render(sections, f"benchmarks ({mode}, {document['machine']['cpu_count']} CPUs, torch threads {args.threads},"
                         f" load {load}, {document['total_seconds']:.0f} s)")
        print(f"results: {args.out}")
        return 1 if any(section.status.startswith("error") for section in sections) else 0
    finally:
        torch.set_num_threads(threads_before)
        if args.keep_work_dir:
            print(f"scratch kept: {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
