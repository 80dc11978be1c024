"""Peak memory of pair extraction on a corpus of the paper's size (1M sentence pairs a language).

`python -m benchmarks.corpus_memory [--lines N] [--sources dico,fastalign]`: writes a synthetic
en-es corpus of N lines (NTREX-128's English-Spanish pairs from ../shared/data, shuffled and
repeated, each line tagged with its number so that lines differ) in the local layout
parallel/NAME/en-es.{en,es} of a temporary data dir, then runs `extract_pairs` for each pair
source in a fresh Python process and reports that process' peak resident memory (VmHWM) and the
largest of its children's (fast_align runs in one: getrusage RUSAGE_CHILDREN). Target: < 4 GB.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import PROJECT_ROOT, Row

NAME = "corpus_memory"
TARGET_BYTES = 4 * 1024**3
DEFAULT_LINES = 1_000_000
SOURCES = ("dico", "fastalign")

# Run in the child: extraction, then its own peak RSS and its children's.
_CHILD = r"""
import json, resource, sys, time
from trainables.pairs import extract_pairs
data, cache, source = sys.argv[1:4]
start = time.perf_counter()
corpus = extract_pairs("synthetic", "es", source, data_dir=data, cache_dir=cache)
seconds = time.perf_counter() - start
hwm = [int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:")][0]
children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
print(json.dumps(dict(seconds=seconds, peak_bytes=hwm, children_peak_bytes=children,
                      sentences=len(corpus.en_words), pairs=len(corpus.pairs))))
"""


def write_corpus(data_dir: Path, source_dir: Path, n_lines: int, seed: int = 0) -> None:
    """N line-aligned en-es lines from NTREX, shuffled and repeated; streamed to disk."""
    en = (source_dir / "parallel" / "ntrex" / "en-es.en").read_text(encoding="utf-8").splitlines()
    es = (source_dir / "parallel" / "ntrex" / "en-es.es").read_text(encoding="utf-8").splitlines()
    order = list(range(len(en)))
    rng = random.Random(seed)
    folder = data_dir / "parallel" / "synthetic"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "en-es.en", "w", encoding="utf-8") as out_en, \
            open(folder / "en-es.es", "w", encoding="utf-8") as out_es:
        written = 0
        while written < n_lines:
            rng.shuffle(order)
            for i in order[: n_lines - written]:
                out_en.write(f"{en[i]} {written}\n")
                out_es.write(f"{es[i]} {written}\n")
                written += 1
    muse = data_dir / "muse"
    muse.mkdir(exist_ok=True)
    for name in ("en-es.txt", "es-en.txt"):
        (muse / name).write_bytes((source_dir / "muse" / name).read_bytes())


def measure(source: str, data_dir: Path, cache_dir: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SWEEP_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", _CHILD, str(data_dir), str(cache_dir), source], env=env,
                          cwd=PROJECT_ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"extract_pairs {source} failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def rows(results: dict[str, dict], n_lines: int) -> list[Row]:
    out = []
    for source, result in results.items():
        peak = max(result["peak_bytes"], result["children_peak_bytes"])
        out.append(Row(f"corpus memory: {source}, {n_lines:,} lines", f"{peak / 1024**3:.2f} GB",
                       "-", None, "< 4 GB", peak < TARGET_BYTES,
                       note=f"process {result['peak_bytes'] / 1024**3:.2f} GB, largest child "
                            f"{result['children_peak_bytes'] / 1024**3:.2f} GB, {result['seconds']:.0f} s, "
                            f"{result['pairs']:,} pairs"))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.corpus_memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=DEFAULT_LINES)
    parser.add_argument("--sources", default=",".join(SOURCES))
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("SWEEP_DATA_DIR", PROJECT_ROOT.parent / "shared" / "data")))
    args = parser.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory(prefix="corpus-memory-") as tmp:
        start = time.perf_counter()
        write_corpus(Path(tmp) / "data", args.data_dir, args.lines)
        print(f"corpus of {args.lines:,} lines written in {time.perf_counter() - start:.0f} s", flush=True)
        for source in args.sources.split(","):
            results[source] = measure(source, Path(tmp) / "data", Path(tmp) / "cache")
            print(source, json.dumps(results[source]), flush=True)
    for row in rows(results, args.lines):
        print(f"{row.benchmark}: {row.ours} (target {row.target}, {'PASS' if row.passed else 'FAIL'}; {row.note})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
