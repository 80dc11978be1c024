"""A disk cache that concurrent Ray trials, on one machine or on several, can share.

Several trials of a sweep need the same expensive intermediate results (downloaded data sets,
segmented corpora, word pairs). `cached` computes such a result and publishes it under a name
made from its content key, with no file lock (many NFS mounts ignore locks, and a lock held by a
node that died is never released): the value is written to a temporary name in the same
directory and then linked into place, which succeeds only if no file has that name yet. So the
first writer wins, a second writer's copy is discarded without touching the published file, and
a reader never sees a half-written file, even if the writer is killed. Two trials that miss the
same entry at the same time both compute it (the work is done twice, once in vain); the loser
then reads the winner's file, so every trial uses the same stored value.

Keys are made from content, not paths: `file_fingerprint` hashes files' bytes and
`model_fingerprint` a model folder's config, tokenizer and weight files, so a data file or model
changed in place gets a new key instead of a stale value. A hit refreshes the file's modification
time, which is therefore its last use: `scan_cache` and `prune_cache` (the `python -m sweep cache`
command) list and delete by it, and touch only files whose names the cache itself makes
(`CACHE_KINDS`), never a temporary young enough to be a write in progress.
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

T = TypeVar("T")

CACHE_KEY_LENGTH = 16  # hex digits of sha256: 64 bits, collisions negligible for a cache
LOCK_SUFFIX = ".lock"  # lock files of earlier versions of this cache: still its own, pruned with their entry
# A temporary younger than this may be a write in progress (a large model's alignment or a
# tokenised corpus takes minutes to save on a slow network disk): pruning leaves it alone.
TEMPORARY_GRACE_S = 6 * 3600


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


def atomic_save(value: T, path: Path, save: Callable[[T, Path], None], overwrite: bool = True) -> bool:
    """Write `value` with `save` to a temporary sibling of `path`, then move it into place.

    `overwrite=False` publishes only if `path` does not exist yet (first writer wins) and returns
    whether this call's file is the one in place. A target that is not a local path but has its
    own `atomic_save(value, save)` (a folder on another filesystem, `sweep.ledger.Location`)
    writes itself."""
    if not isinstance(path, (str, os.PathLike)) and hasattr(path, "atomic_save"):
        return path.atomic_save(value, save)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        save(value, tmp)
        if overwrite:
            os.replace(tmp, path)
            return True
        return _publish_once(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _publish_once(tmp: Path, path: Path) -> bool:
    """Give the complete file `tmp` the name `path` unless a file has it already.

    link(2) is atomic and never replaces an existing name, also on NFS (where rename(2) would
    silently replace a file another node published). On NFS v2/v3 a retransmitted link can answer
    "exists" for a link that succeeded: the caller then reads the file, its own, which is harmless.
    Filesystems without hard links (some SMB and FUSE mounts) get a rename after a check: two
    writers racing there may both rename, the last one's complete file stays, equal in content."""
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError:
        if path.exists():
            return False
        os.replace(tmp, path)
        return True


def cached(
    path: Path,
    compute: Callable[[], T],
    save: Callable[[T, Path], None],
    load: Callable[[Path], T],
) -> T:
    """Load `path` if it exists; else compute, publish atomically and return the value.

    Safe with several processes on several nodes, without locks: the value is published under
    `path` only if no other process published it first (`atomic_save(..., overwrite=False)`).
    Two processes that miss at the same time both compute; the one that loses the race returns
    the winner's stored value. A failure in `compute` or `save` leaves no file, so the next call
    computes again. A hit refreshes the file's modification time: the cache's last-use record,
    used by pruning; an entry pruned between the check and the read is computed again.
    """
    path = Path(path)
    if path.exists():
        try:
            return _load_and_mark_used(path, load)
        except FileNotFoundError:  # pruned meanwhile
            pass
    value = compute()
    if atomic_save(value, path, save, overwrite=False):
        return value
    try:  # another process published first: use its value, as every later reader will
        return _load_and_mark_used(path, load)
    except FileNotFoundError:
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


# Pruning deletes only names that match here (the writers' formats; tests check they agree), lock
# files earlier versions left (name + LOCK_SUFFIX) and temporaries left by a killed writer (`temporary_sibling`).
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
    role: str  # "entry", "lock" (left by an earlier version) or "temporary"
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
    busy: list[CacheFile] = field(default_factory=list)  # temporaries young enough to be writes in progress: kept
    foreign: list[Path] = field(default_factory=list)


def prune_cache(root: str | Path, older_than_s: float | None = None, dry_run: bool = False) -> PruneResult:
    """Delete the cache's entries last used more than `older_than_s` seconds ago (None: all).

    An entry goes with its leftovers (lock files of earlier versions, temporaries of killed
    writers). A temporary younger than `TEMPORARY_GRACE_S` is never deleted, even with None: it
    may be a write in progress, whose publication would fail without it (`busy`). Leftovers of a
    kept entry stay unless old themselves. Files the cache did not make are never touched
    (`foreign`). A process reading an entry while it is deleted keeps its open file (POSIX), and
    `cached` computes an entry again if it vanished between its check and its read.
    """
    root = Path(root)
    scan = scan_cache(root)
    result = PruneResult(foreign=scan.foreign)
    now = time.time()
    cutoff = None if older_than_s is None else now - older_than_s
    writing_since = now - TEMPORARY_GRACE_S
    by_entry: dict[Path, list[CacheFile]] = {}
    for item in scan.files:
        by_entry.setdefault(item.entry, []).append(item)
    for entry, items in sorted(by_entry.items()):
        in_progress = [i for i in items if i.role == "temporary" and i.last_use >= writing_since]
        result.busy.extend(in_progress)
        stored = [i for i in items if i.role == "entry"]
        if cutoff is None or (stored and stored[0].last_use < cutoff):
            doomed = [i for i in items if i not in in_progress]
        else:  # the entry is in recent use, or absent: only old leftovers go
            doomed = [i for i in items if i.role != "entry" and i.last_use < cutoff and i not in in_progress]
        if not doomed:
            continue
        if not dry_run:
            for item in doomed:
                item.path.unlink(missing_ok=True)
            _remove_empty_parents(entry.parent, root)
        result.deleted.extend(doomed)
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
