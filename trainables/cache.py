"""A disk cache that concurrent Ray trials can share.

Several trials of a sweep need the same expensive intermediate results (downloaded data sets,
segmented corpora, word pairs). `cached` computes such a result once: the first process to take
the file lock computes and writes it, the others wait on the lock and then read the file. Files
are written to a temporary name in the same directory and moved into place with `os.replace`,
so a reader never sees a half-written file, even if the writer is killed.
"""
from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq
from filelock import FileLock

T = TypeVar("T")

CACHE_KEY_LENGTH = 16  # hex digits of sha256: 64 bits, collisions negligible for a cache
LOCK_SUFFIX = ".lock"


def cache_key(**parts: Any) -> str:
    """A short stable hash of keyword parts (order-insensitive), for naming cache files.

    Values are serialised with JSON (sorted keys); values JSON cannot encode (paths, tuples
    inside sets...) fall back to `str`, so pass plain values where the text form is ambiguous.
    """
    text = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:CACHE_KEY_LENGTH]


def temporary_sibling(path: Path) -> Path:
    """A unique temporary name next to `path`, keeping its suffix (some writers look at it)."""
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{path.suffix}")


def atomic_save(value: T, path: Path, save: Callable[[T, Path], None]) -> None:
    """Write `value` with `save` to a temporary sibling of `path`, then move it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        save(value, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def cached(
    path: Path,
    compute: Callable[[], T],
    save: Callable[[T, Path], None],
    load: Callable[[Path], T],
) -> T:
    """Load `path` if it exists; else compute, save atomically and return the value.

    Safe with several processes: the computation runs under a file lock (`path` + ".lock")
    and the file is checked again once the lock is held, so only the first process computes.
    """
    path = Path(path)
    if path.exists():
        return load(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + LOCK_SUFFIX):
        if path.exists():  # another process computed it while we waited for the lock
            return load(path)
        value = compute()
        atomic_save(value, path, save)
    return value


# --- serialisers shared by the data and pair caches ---------------------------------------------


def save_jsonl(records: Iterable[dict[str, Any]], path: Path) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def load_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def save_string_pairs(pairs: list[tuple[str, str]], path: Path) -> None:
    """Two string columns `left`, `right` as parquet (parallel corpora, dictionary entries)."""
    table = pa.table(
        {
            "left": pa.array([left for left, _ in pairs], type=pa.string()),
            "right": pa.array([right for _, right in pairs], type=pa.string()),
        }
    )
    pq.write_table(table, path)


def load_string_pairs(path: Path) -> list[tuple[str, str]]:
    table = pq.read_table(path)
    return list(zip(table.column("left").to_pylist(), table.column("right").to_pylist()))
