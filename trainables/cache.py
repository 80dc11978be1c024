"""A disk cache that concurrent Ray trials can share.

Several trials of a sweep need the same expensive intermediate results (downloaded data sets,
segmented corpora, word pairs). `cached` computes such a result once: the first process to take
the file lock computes and writes it, the others wait on the lock and then read the file. Files
are written to a temporary name in the same directory and moved into place with `os.replace`,
so a reader never sees a half-written file, even if the writer is killed.

Keys are made from content, not paths: `file_fingerprint` hashes files' bytes and
`model_fingerprint` a model folder's config, tokenizer and weight files, so a data file or model
changed in place gets a new key instead of a stale value. A hit refreshes the file's modification
time, which is therefore its last use: `scan_cache` and `prune_cache` (the `python -m sweep cache`
command) list and delete by it, and touch only files whose names the cache itself makes
(`CACHE_KINDS`), never one whose lock a process holds.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq
from filelock import FileLock, Timeout

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
    A failure in `compute` or `save` leaves no file, so the next call computes again. A hit
    refreshes the file's modification time: the cache's last-use record, used by pruning.
    """
    path = Path(path)
    if path.exists():
        return _load_and_mark_used(path, load)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + LOCK_SUFFIX):
        if path.exists():  # another process computed it while we waited for the lock
            return _load_and_mark_used(path, load)
        value = compute()
        atomic_save(value, path, save)
    return value


def _load_and_mark_used(path: Path, load: Callable[[Path], T]) -> T:
    value = load(path)
    try:
        os.utime(path)
    except OSError:  # a read-only cache still serves its files
        pass
    return value


# --- content fingerprints ----------------------------------------------------------------------

HASH_CHUNK_BYTES = 1 << 20
# The files of a model folder that change what it computes, by part: a featurised data set
# depends on the tokenizer (and the config, which can choose its class), an alignment on all.
MODEL_FILE_PATTERNS: dict[str, tuple[str, ...]] = {
    "config": ("config.json",),
    "tokenizer": ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                  "vocab.txt", "vocab.json", "merges.txt", "*.model"),
    "weights": ("*.safetensors", "*.bin", "*.index.json", "*.h5", "*.msgpack"),
}
MODEL_PARTS: tuple[str, ...] = tuple(MODEL_FILE_PATTERNS)
TOKENIZER_PARTS: tuple[str, ...] = ("config", "tokenizer")

# sha256 of a file by (path, size, mtime_ns, inode): a 2 GB model folder is read once per
# process, not once per trial, and a file rewritten in place (new mtime) or replaced (new inode)
# is read again.
_digests: dict[tuple[str, int, int, int], str] = {}
_digests_lock = threading.Lock()


def _file_digest(path: Path) -> str:
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise FileNotFoundError(f"cannot fingerprint {path}: no such file") from None
    memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    with _digests_lock:
        known = _digests.get(memo)
    if known is None:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(HASH_CHUNK_BYTES):
                digest.update(chunk)
        known = digest.hexdigest()
        with _digests_lock:
            _digests[memo] = known
    return known


def file_fingerprint(paths: Iterable[str | Path]) -> str:
    """A short hash of the files' bytes, in the order given (no files: the hash of nothing)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(_file_digest(Path(path)).encode("ascii"))
    return digest.hexdigest()[:CACHE_KEY_LENGTH]


def model_folder_files(folder: str | Path, parts: Sequence[str] = MODEL_PARTS) -> list[Path]:
    """The files of a model folder that belong to `parts` (config, tokenizer, weights), sorted."""
    folder = Path(folder)
    patterns = [pattern for part in parts for pattern in MODEL_FILE_PATTERNS[part]]
    return sorted(path for path in folder.iterdir()
                  if path.is_file() and any(fnmatch.fnmatch(path.name, pattern) for pattern in patterns))


def folder_fingerprint(folder: str | Path, parts: Sequence[str] = MODEL_PARTS) -> str:
    """A short hash of a model folder's config, tokenizer and/or weight files (names and bytes)."""
    files = model_folder_files(folder, parts)
    if not files:
        raise ValueError(f"model folder {folder}: no {'/'.join(parts)} files to fingerprint "
                         f"(looked for {', '.join(p for part in parts for p in MODEL_FILE_PATTERNS[part])})")
    names = [f.name for f in files]
    return cache_key(files=names, content=file_fingerprint(files))


def model_fingerprint(source: str | Path, parts: Sequence[str] = MODEL_PARTS, revision: str | None = None) -> str:
    """What identifies a model's files: a local folder by its content, a hub id by id and revision."""
    folder = Path(source).expanduser()
    if folder.is_dir():
        return folder_fingerprint(folder, parts)
    return cache_key(hub=str(source), revision=revision)


def settings_parts(settings: Any, names: Iterable[str]) -> dict[str, Any]:
    """The named settings' values, as a part of a cache key."""
    return {name: getattr(settings, name) for name in names}


# --- what the cache owns: listing and pruning ---------------------------------------------------

_KEY = rf"[0-9a-f]{{{CACHE_KEY_LENGTH}}}"


@dataclass(frozen=True)
class CacheKind:
    """One kind of cache entry: the folder under the cache dir and the names its writer makes."""

    label: str
    folder: str
    names: re.Pattern[str]  # full match on the path relative to `folder`


# Pruning deletes only names that match here (the writers' formats; tests check they agree), their
# locks (name + LOCK_SUFFIX) and temporaries left by a killed writer (`temporary_sibling`).
CACHE_KINDS: tuple[CacheKind, ...] = (
    CacheKind("pairs", "pairs", re.compile(rf"[^/]+-{_KEY}\.parquet")),  # pairs.extract_pairs
    CacheKind("features", "features", re.compile(rf"[^/]+-{_KEY}\.pt")),  # trial.featurize_cached
    CacheKind("alignment", "alignment", re.compile(rf"pretrained-{_KEY}\.parquet")),  # trial.pretrained_alignment
    CacheKind("downloads", "data", re.compile(r"[^/]+/[^/]+-v[^/-]+\.(?:jsonl|parquet)")),  # data.load_source
)
_TEMPORARY = re.compile(r"\.(?P<stem>.+)\.tmp-\d+-[0-9a-f]{8}(?P<suffix>\.[^./]+)?")


@dataclass(frozen=True)
class CacheFile:
    path: Path
    kind: str  # a CacheKind label
    role: str  # "entry", "lock" or "temporary"
    entry: Path  # the entry it belongs to (itself for an entry)
    size: int
    last_use: float  # seconds since the epoch: the later of modification and access times


@dataclass
class CacheScan:
    files: list[CacheFile] = field(default_factory=list)
    foreign: list[Path] = field(default_factory=list)  # files the cache did not make: never touched


def _classify(relative: str) -> tuple[CacheKind, str, str] | None:
    """(kind, role, entry's relative path) when the cache makes a file of that name, else None."""
    folder, _, rest = relative.partition("/")
    kind = next((k for k in CACHE_KINDS if k.folder == folder), None)
    if kind is None or not rest:
        return None
    if kind.names.fullmatch(rest):
        return kind, "entry", relative
    if rest.endswith(LOCK_SUFFIX) and kind.names.fullmatch(rest[: -len(LOCK_SUFFIX)]):
        return kind, "lock", relative[: -len(LOCK_SUFFIX)]
    head, _, name = rest.rpartition("/")
    temporary = _TEMPORARY.fullmatch(name)
    if temporary:
        target = (f"{head}/" if head else "") + temporary["stem"] + (temporary["suffix"] or "")
        if kind.names.fullmatch(target):
            return kind, "temporary", f"{folder}/{target}"
    return None


def scan_cache(root: str | Path) -> CacheScan:
    """Every file under the cache dir `root`: the cache's own (classified) and the others."""
    root = Path(root)
    scan = CacheScan()
    for folder, _, names in os.walk(root):
        for name in sorted(names):
            path = Path(folder) / name
            found = _classify(path.relative_to(root).as_posix())
            if found is None or path.is_symlink():
                scan.foreign.append(path)
                continue
            kind, role, entry = found
            stat = path.stat()
            scan.files.append(CacheFile(path, kind.label, role, root / entry, stat.st_size,
                                        max(stat.st_mtime, stat.st_atime)))
    return scan


@dataclass
class PruneResult:
    deleted: list[CacheFile] = field(default_factory=list)
    busy: list[CacheFile] = field(default_factory=list)  # their entry's lock is held: kept
    foreign: list[Path] = field(default_factory=list)


def prune_cache(root: str | Path, older_than_s: float | None = None, dry_run: bool = False) -> PruneResult:
    """Delete the cache's entries last used more than `older_than_s` seconds ago (None: all).

    An entry goes with its lock and the temporaries of killed writers, all while holding its
    lock: a process computing it holds that lock, so its files are kept (`busy`). Temporaries
    and locks of a kept entry stay unless old themselves. Files the cache did not make are
    never touched (`foreign`).
    """
    root = Path(root)
    scan = scan_cache(root)
    result = PruneResult(foreign=scan.foreign)
    cutoff = None if older_than_s is None else time.time() - older_than_s
    by_entry: dict[Path, list[CacheFile]] = {}
    for item in scan.files:
        by_entry.setdefault(item.entry, []).append(item)
    for entry, items in sorted(by_entry.items()):
        stored = [i for i in items if i.role == "entry"]
        if cutoff is None or (stored and stored[0].last_use < cutoff):
            doomed = items
        else:  # the entry is in recent use, or absent: only old leftovers go
            doomed = [i for i in items if i.role != "entry" and i.last_use < cutoff]
        if not doomed:
            continue
        lock_path = Path(str(entry) + LOCK_SUFFIX)
        had_lock_file = lock_path.exists()
        if dry_run and not had_lock_file:  # nobody can hold a lock that has no file
            result.deleted.extend(doomed)
            continue
        lock = FileLock(str(lock_path), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            result.busy.extend(items)
            continue
        try:
            if not dry_run:
                for item in doomed:
                    if item.role != "lock":
                        item.path.unlink(missing_ok=True)
                if not had_lock_file or any(i.role == "lock" for i in doomed):
                    lock_path.unlink(missing_ok=True)
        finally:
            lock.release()
        result.deleted.extend(doomed)
        if not dry_run:
            _remove_empty_parents(entry.parent, root)
    return result


def _remove_empty_parents(folder: Path, root: Path) -> None:
    while folder != root and root in folder.parents:
        try:
            folder.rmdir()  # only succeeds when empty
        except OSError:
            return
        folder = folder.parent


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
