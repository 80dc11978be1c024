"""Peak memory of pair extraction on a corpus of the reference's size (1M sentence pairs a language).

`python -m benchmarks.corpus_memory [--lines N] [--sources dico,fastalign] [--out FILE.json]`
writes a synthetic en-es corpus of N lines (the English-Spanish pairs of a real corpus, NTREX-128
from ../shared/data by default, shuffled and repeated, each line tagged with its number so that
lines differ) in the local layout parallel/synthetic/en-es.{en,es} of a temporary data dir, then
runs `extract_pairs` for each pair source in a fresh Python process with its own empty cache (a
cold trial: segmentation and pairs) and reports that process' peak resident memory (VmHWM) and the
largest of its children's (fast_align's programs run in one: getrusage RUSAGE_CHILDREN). Target:
< 4 GB at 1,000,000 lines (the default); at fewer lines the row is information only. The result
is written as JSON (default results/corpus_memory.json). In `python -m benchmarks` this is row 6
(name `corpus_memory`; `--corpus-lines N` there, a small corpus of the toy data under --smoke).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from trainables.settings import FASTALIGN_BACKENDS

from benchmarks.common import DEFAULT_DATA_DIR, PROJECT_ROOT, Context, Row, Section, machine_info, write_json_atomic

NAME = "corpus_memory"
INPUTS = ("data",)  # ../shared/data's text (benchmarks.common.check_inputs)
TARGET_BYTES = 4 * 1024**3
TARGET_LINES = 1_000_000  # pairs a language the reference samples (realignment_with_multi_un.sh: reservoir, 1M)
TARGET_TEXT = "< 4 GB at 1M lines"
DEFAULT_LINES = TARGET_LINES
SMOKE_LINES = 500  # smoke: checks the harness only (two child processes, seconds each)
SOURCES = ("dico", "fastalign")
SOURCE_CORPUS = "ntrex"
LANG = "es"  # MUSE and FastAlign both cover it; whitespace-separated like English (no jieba)
SYNTHETIC_CORPUS = "synthetic"
DEFAULT_OUT = PROJECT_ROOT / "results" / "corpus_memory.json"
DEFAULT_BACKEND = FASTALIGN_BACKENDS[0]  # the setting's default

# Run in the child: extraction, then its own peak RSS and its children's.
_CHILD = r"""
import json, resource, sys, time
from trainables.pairs import PairContext, extract_pairs
data, cache, corpus, lang, source, backend = sys.argv[1:7]
start = time.perf_counter()
aligned = extract_pairs(corpus, lang, source, data_dir=data, cache_dir=cache,
                        context=PairContext(fastalign_backend=backend))
seconds = time.perf_counter() - start
hwm = [int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:")][0]
children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
print(json.dumps(dict(seconds=seconds, peak_bytes=hwm, children_peak_bytes=children,
                      sentences=len(aligned.en_words), pairs=len(aligned.pairs))))
"""


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"corpus memory: {path} not found (set --data-dir or $SWEEP_DATA_DIR)")
    return path.read_text(encoding="utf-8").splitlines()


def write_corpus(data_dir: Path, source_dir: Path, n_lines: int, corpus: str = SOURCE_CORPUS, lang: str = LANG,
                 seed: int = 0) -> None:
    """`n_lines` line-aligned en-`lang` lines of `source_dir`'s `corpus`, shuffled and repeated,
    streamed to `data_dir`/parallel/synthetic, plus that language's MUSE files (the dico source)."""
    if n_lines < 1:
        raise ValueError(f"--lines {n_lines}: must be >= 1")
    en = _read_lines(source_dir / "parallel" / corpus / f"en-{lang}.en")
    x = _read_lines(source_dir / "parallel" / corpus / f"en-{lang}.{lang}")
    if len(en) != len(x) or not en:
        raise ValueError(f"corpus memory: {source_dir}/parallel/{corpus}/en-{lang}: {len(en)} English lines,"
                         f" {len(x)} {lang} lines (need as many, at least one)")
    order = list(range(len(en)))
    rng = random.Random(seed)
    folder = data_dir / "parallel" / SYNTHETIC_CORPUS
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"en-{lang}.en", "w", encoding="utf-8") as out_en, \
            open(folder / f"en-{lang}.{lang}", "w", encoding="utf-8") as out_x:
        written = 0
        while written < n_lines:
            rng.shuffle(order)
            for i in order[: n_lines - written]:
                # The line number makes every line distinct: a corpus of repeats would let
                # fast_align's vocabulary and EM tables stay at NTREX's size.
                out_en.write(f"{en[i]} {written}\n")
                out_x.write(f"{x[i]} {written}\n")
                written += 1
    muse = data_dir / "muse"
    muse.mkdir(exist_ok=True)
    for name in (f"en-{lang}.txt", f"{lang}-en.txt"):
        if (source_dir / "muse" / name).is_file():
            (muse / name).write_bytes((source_dir / "muse" / name).read_bytes())


def unavailable(source: str, backend: str = DEFAULT_BACKEND) -> str | None:
    """Why `source` cannot run in this interpreter (fast_align missing), else None."""
    if source != "fastalign":
        return None
    from trainables.errors import TrialInputError
    from trainables.pairs import fastalign_backend

    try:
        fastalign_backend(backend)
    except TrialInputError as error:
        return str(error)
    return None


def measure(source: str, data_dir: Path, cache_dir: Path, lang: str = LANG,
            backend: str = DEFAULT_BACKEND) -> dict[str, Any]:
    """`extract_pairs` of the synthetic corpus with `source` in a fresh process: seconds, peak
    bytes of that process and of its largest child, sentences and pairs."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SWEEP_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", _CHILD, str(data_dir), str(cache_dir), SYNTHETIC_CORPUS, lang,
                           source, backend], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"extract_pairs {source} failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def rows(results: dict[str, dict[str, Any]], n_lines: int, backend: str = DEFAULT_BACKEND) -> list[Row]:
    """One row a source: its peak (process or child, whichever is larger), passed against the
    target only at >= TARGET_LINES lines (a smaller corpus says nothing about the paper's size)."""
    out = []
    for source, result in results.items():
        label = f"6. corpus memory: {source}{f' ({backend})' if source == 'fastalign' else ''}, {n_lines:,} lines"
        if "skipped" in result:
            out.append(Row(label, "skipped", "-", None, TARGET_TEXT, None, note=result["skipped"]))
            continue
        peak = max(result["peak_bytes"], result["children_peak_bytes"])
        out.append(Row(label, f"{peak / 1024**3:.2f} GB", "-", None, TARGET_TEXT,
                       peak < TARGET_BYTES if n_lines >= TARGET_LINES else None,
                       note=f"peak RSS: process {result['peak_bytes'] / 1024**3:.2f} GB, largest child "
                            f"{result['children_peak_bytes'] / 1024**3:.2f} GB; {result['seconds']:.0f} s, "
                            f"{result['sentences']:,} sentences, {result['pairs']:,} pairs"
                            + ("" if n_lines >= TARGET_LINES else f" (info: the target is at {TARGET_LINES:,} lines)")))
    return out


def measure_all(data_dir: Path, n_lines: int, sources: Sequence[str], work_dir: Path,
                corpus: str = SOURCE_CORPUS, log: bool = False, backend: str = DEFAULT_BACKEND) -> dict[str, Any]:
    """Write the corpus under `work_dir` and measure every source (each with a fresh cache)."""
    start = time.perf_counter()
    synthetic = work_dir / "data"
    write_corpus(synthetic, data_dir, n_lines, corpus)
    details: dict[str, Any] = {"lines": n_lines, "corpus": corpus, "lang": LANG, "fastalign_backend": backend,
                               "write_seconds": time.perf_counter() - start, "sources": {}}
    if log:
        print(f"corpus of {n_lines:,} lines written in {details['write_seconds']:.0f} s", flush=True)
    for source in sources:
        reason = unavailable(source, backend)
        result = {"skipped": reason} if reason else measure(source, synthetic, work_dir / f"cache-{source}",
                                                            backend=backend)
        details["sources"][source] = result
        if log:
            print(source, json.dumps(result), flush=True)
    return details


def run(context: Context, lines: int | None = None) -> Section:
    """Row 6 of `python -m benchmarks`: `lines` (default 1M; smoke: SMOKE_LINES of the toy corpus)."""
    n_lines = lines or (SMOKE_LINES if context.smoke else DEFAULT_LINES)
    corpus = context.corpus if context.smoke else SOURCE_CORPUS
    details = measure_all(context.data_dir, n_lines, SOURCES, context.scratch(NAME), corpus)
    return Section(NAME, rows(details["sources"], n_lines), details=details)


def _check_sources(text: str) -> list[str]:
    sources = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in sources if name not in SOURCES]
    if unknown or not sources:
        raise argparse.ArgumentTypeError(f"{text!r}: pair sources are a comma-separated subset of {','.join(SOURCES)}")
    return sources


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a whole number >= 1")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.corpus_memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=_positive, default=DEFAULT_LINES,
                        help=f"sentence pairs of the synthetic corpus (default {DEFAULT_LINES:,})")
    parser.add_argument("--sources", type=_check_sources, default=list(SOURCES),
                        help=f"pair sources, comma-separated (default {','.join(SOURCES)})")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("SWEEP_DATA_DIR") or DEFAULT_DATA_DIR),
                        help="where the real corpus and MUSE files are (default $SWEEP_DATA_DIR, else ../shared/data)")
    parser.add_argument("--fastalign-backend", default=DEFAULT_BACKEND, choices=FASTALIGN_BACKENDS,
                        help=f"the setting fastalign_backend (default {DEFAULT_BACKEND})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON results (default: {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="corpus-memory-") as tmp:
        details = measure_all(args.data_dir, args.lines, args.sources, Path(tmp), log=True,
                              backend=args.fastalign_backend)
    table = rows(details["sources"], args.lines, args.fastalign_backend)
    document = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python -m benchmarks.corpus_memory " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine_info(),
        "total_seconds": time.perf_counter() - started,
        "table": [row.to_dict() for row in table],
        "details": details,
    }
    write_json_atomic(document, args.out)
    for row in table:
        verdict = {True: "PASS", False: "FAIL", None: "info"}[row.passed]
        print(f"{row.benchmark}: {row.ours} (target {row.target}, {verdict}; {row.note})")
    print(f"results: {args.out}")
    return 1 if any(row.passed is False for row in table) else 0


if __name__ == "__main__":
    sys.exit(main())
