"""A disk cache that concurrent Ray trials, on one machine or on several, can share.

Several trials of a sweep need the same expensive intermediate results (downloaded data sets,
segmented corpora, word pairs). `cached` computes such a result and publishes it under a name
made from its content key, with no file lock (many NFS mounts ignore locks, and a lock held by a
node that died is never released): the value is written to a temporary name in the same
directory and then linked into place, which succeeds only if no file has that name yet. So the
first writer wins, a second writer's copy is discarded without touching the published file, and
a reader never sees a half-written file, even if the writer is killed. Trials that miss the
same entry at the same time compute it once: the first to create the entry's claim file
(`<entry>.claim`, atomically, also on NFS) computes, the others wait for its file and read it; a
claim whose holder died (its process gone, or its heartbeat stopped) is taken over, and a holder
that fails removes its claim so that a waiter computes instead.

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
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from trainables.model_files import hub_revision

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
    on_wait: Callable[[Claim | None, float], None] | None = None,
) -> T:
    """Load `path` if it exists; else compute it once for the whole cluster, publish and return it.

    A process that misses claims the entry (`<path>.claim`, `_try_claim`) and computes it while
    refreshing the claim (`_Heartbeat`); the others wait, polling for the published file, and
    load it. `on_wait(holder, waited_s)`, if given, is called at every poll of a waiting process
    (`holder` None while the claim cannot be read). A claim whose holder is gone is taken over
    (`_is_stale`, `_take_over`); a holder that fails removes its claim, so a waiter computes
    instead, and the failure leaves no entry. Publication stays first writer wins
    (`atomic_save(..., overwrite=False)`), so even two computations (a race the claim cannot
    exclude, or a cache where no claim can be made) store one value. A hit refreshes the file's
    modification time: the cache's last-use record, used by pruning; an entry pruned between the
    check and the read is computed again.
    """
    path = Path(path)
    value = _load_if_present(path, load)
    if value is not _MISSING:
        return value
    claim_path = path.with_name(path.name + CLAIM_SUFFIX)
    started = time.monotonic()
    delay = CLAIM_POLL_START_S
    while True:
        try:
            holder, seen = _read_claim(claim_path)
        except FileNotFoundError:
            try:
                mine = _try_claim(claim_path)
            except OSError:  # no claim can be made here: compute unclaimed, publication still decides
                return _publish(path, compute(), save, load)
            if mine is None:  # another process claimed it first: read its claim
                continue
            try:
                # The holder may have published and released between this process's miss and its claim.
                value = _load_if_present(path, load)
                if value is not _MISSING:
                    return value
                with _Heartbeat(claim_path, mine):
                    value = compute()
                return _publish(path, value, save, load)
            finally:
                _release(claim_path, mine)
        if _is_stale(holder, seen) and _take_over(claim_path, seen):
            continue  # claim it now, or wait for the live claim put back
        if on_wait is not None:
            on_wait(holder, time.monotonic() - started)
        time.sleep(delay)
        delay = min(2 * delay, CLAIM_POLL_MAX_S)
        value = _load_if_present(path, load)
        if value is not _MISSING:
            return value


def _load_if_present(path: Path, load: Callable[[Path], T]) -> Any:
    """The stored value, or `_MISSING` when there is none (also when pruned between check and read)."""
    if path.exists():
        try:
            return _load_and_mark_used(path, load)
        except FileNotFoundError:
            pass
    return _MISSING


def _publish(path: Path, value: T, save: Callable[[T, Path], None], load: Callable[[Path], T]) -> T:
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


# --- claims: one computation of an entry for the whole cluster, without locks ---------------------

CLAIM_SUFFIX = ".claim"
# The holder of a claim refreshes the claim's modification time this often while it computes...
CLAIM_HEARTBEAT_S = 30.0
# ...and a claim not refreshed for this long is taken over: its holder is gone. Ten heartbeats,
# so a slow network disk or nodes whose clocks differ by minutes (the claim's mtime is set by the
# file server and compared with this node's clock) do not make a live holder look gone.
CLAIM_STALE_S = 300.0
# A waiter polls quickly at first (most entries take seconds), then every CLAIM_POLL_MAX_S at
# most: a wait of hours costs a few stat calls a minute on the shared disk.
CLAIM_POLL_START_S = 0.05
CLAIM_POLL_MAX_S = 5.0

_MISSING = object()


@dataclass(frozen=True)
class Claim:
    """Who computes an entry, as written in its claim file by the process that claimed it."""

    host: str
    pid: int
    time: float  # seconds since the epoch, when it was claimed
    token: str  # unique to this claim: a process removes a claim only after checking it holds its token

    def to_json(self) -> str:
        return json.dumps({"host": self.host, "pid": self.pid, "time": self.time, "token": self.token})

    @classmethod
    def parse(cls, text: str) -> Claim | None:
        """The claim written in `text`; None for a claim still being written or not one of ours."""
        try:
            fields = json.loads(text)
            return cls(str(fields["host"]), int(fields["pid"]), float(fields["time"]), str(fields["token"]))
        except (ValueError, TypeError, KeyError):
            return None


def _new_claim() -> Claim:
    return Claim(socket.gethostname(), os.getpid(), time.time(), uuid.uuid4().hex)


def _try_claim(claim_path: Path) -> Claim | None:
    """Create `claim_path` holding a new claim of this process; None if a claim exists already.

    The claim is written to a temporary first and then linked into place: link(2) is atomic and
    never replaces a name, on NFS v2 as well (O_CREAT|O_EXCL is atomic only from NFS v3 on), and
    the claim appears with its content complete, so a reader never judges a half-written one. On
    NFS v2/v3 a retransmitted link can answer "exists" for a link that succeeded: the temporary
    then has two names (the NFS-safe lock-file recipe of open(2)'s manual). Where hard links are
    not supported (some SMB and FUSE mounts) an exclusive create stands in. Raises OSError when
    no file can be made next to the entry."""
    mine = _new_claim()
    claim_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(claim_path)
    tmp.write_text(mine.to_json(), encoding="utf-8")
    try:
        os.link(tmp, claim_path)
        return mine
    except FileExistsError:
        return mine if tmp.stat().st_nlink == 2 else None
    except OSError:
        return _claim_exclusively(claim_path, mine)
    finally:
        tmp.unlink(missing_ok=True)


def _claim_exclusively(claim_path: Path, mine: Claim) -> Claim | None:
    try:
        fd = os.open(claim_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:  # read as "being written" until complete
        handle.write(mine.to_json())
    return mine


def _read_claim(claim_path: Path) -> tuple[Claim | None, os.stat_result]:
    """The claim in `claim_path` (None if unreadable) and its file's status, of the same file."""
    with open(claim_path, encoding="utf-8", errors="replace") as handle:
        return Claim.parse(handle.read()), os.fstat(handle.fileno())


def _is_stale(holder: Claim | None, seen: os.stat_result) -> bool:
    """Whether the claim's holder is gone: a dead process of this host at once, any holder (a
    host that died, a recycled pid) once its heartbeat has stopped for CLAIM_STALE_S.

    Hosts are told apart by name: two containers sharing a name but not their processes could
    take a live claim for a dead one, which costs one computation more, never a wrong value."""
    if time.time() - seen.st_mtime > CLAIM_STALE_S:
        return True
    return holder is not None and holder.host == socket.gethostname() and not _pid_alive(holder.pid)


def _pid_alive(pid: int) -> bool:
    if pid <= 0 or os.name == "nt":  # kill(0) would signal a group; on Windows os.kill terminates: rely on mtime
        return pid > 0
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    try:  # a killed process that its parent has not reaped yet still answers kill(0)
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rpartition(")")[2].split()[:1] != ["Z"]
    except OSError:
        return True


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    # The mtime tells a claim from a later one that reused the inode, and a claim refreshed since
    # it was judged (so alive) from the one judged stale.
    return (a.st_ino, a.st_size, a.st_mtime_ns) == (b.st_ino, b.st_size, b.st_mtime_ns)


def _take_over(claim_path: Path, judged: os.stat_result) -> bool:
    """Remove the stale claim `judged`, race-safe: several waiters may judge it stale at once.

    Each renames the claim to a unique name; rename(2) is atomic, so one of them gets the stale
    claim and removes it, and the loop then claims anew. A waiter that moved a live claim instead
    (created after the stale one went) puts it back under its name. False when this process
    moved nothing (another one was first): it waits as for a live claim."""
    moved = temporary_sibling(claim_path)
    if not _rename_aside(claim_path, moved):
        return False
    try:
        if not _same_file(moved.stat(), judged):
            _restore(moved, claim_path)
    finally:
        moved.unlink(missing_ok=True)
    return True


def _release(claim_path: Path, mine: Claim) -> None:
    """Remove this process's claim: moved aside first, so the claim removed is the one read."""
    moved = temporary_sibling(claim_path)
    if not _rename_aside(claim_path, moved):
        return
    try:
        holder, _ = _read_claim(moved)
        if holder is None or holder.token != mine.token:  # taken over meanwhile: its new holder's
            _restore(moved, claim_path)
    finally:
        moved.unlink(missing_ok=True)


def _rename_aside(claim_path: Path, moved: Path) -> bool:
    try:
        os.rename(claim_path, moved)
        return True
    except FileNotFoundError:  # gone, or NFS answering a retransmitted rename that succeeded
        return moved.exists()
    except OSError:  # e.g. Windows, while another process reads the claim: left as it is
        return False


def _restore(moved: Path, claim_path: Path) -> None:
    """Give a claim moved aside its name back, unless a newer claim has it: then two processes
    compute the entry, and publication keeps the first value."""
    try:
        os.link(moved, claim_path)
    except FileExistsError:
        pass
    except OSError:  # no hard links: a check, then a rename
        if not claim_path.exists():
            os.replace(moved, claim_path)


class _Heartbeat:
    """While the holder computes, a thread refreshes its claim's mtime every CLAIM_HEARTBEAT_S,
    so that waiters on other hosts can tell a long computation from a dead holder. It stops if
    the claim is no longer this process's (taken over during a stall longer than CLAIM_STALE_S)."""

    def __init__(self, claim_path: Path, mine: Claim) -> None:
        self.claim_path, self.mine = claim_path, mine
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, name=f"claim {claim_path.name}", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    def _beat(self) -> None:
        while not self.stop.wait(CLAIM_HEARTBEAT_S):
            try:
                holder, _ = _read_claim(self.claim_path)
                if holder is None or holder.token != self.mine.token:
                    return
                os.utime(self.claim_path)
            except FileNotFoundError:
                return
            except OSError:  # a network disk's hiccup: the next beat tries again
                continue


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

# sha256 of a file by where it is and its stat: a 2 GB model folder is read once per process,
# not once per trial, and a file rewritten in place (new mtime and ctime) or replaced (new inode)
# is read again.
_digests: dict[tuple[str, ...], str] = {}
_digests_lock = threading.Lock()
# ...and across processes of a node: each worker and each fresh `python -m trainables...` process
# would otherwise hash every model file again (0.3 s a trial for e5-small's 470 MB, seconds for
# XLM-R large). One small file per (path, device, inode, size, mtime, ctime); a file changed since
# has a new ctime, which no user can set back, so its old entry is never found again (git's index
# and ccache trust the same stat fields). `SWEEP_DIGEST_MEMO` moves it; "off" disables it.
DIGEST_MEMO_ENV = "SWEEP_DIGEST_MEMO"
# A file whose last change is this recent may still be changing within one timestamp tick (git's
# "racily clean" case): it is hashed, but its digest is not remembered across processes.
DIGEST_MEMO_SETTLE_NS = 2_000_000_000


def digest_memo_dir() -> Path | None:
    """Where file digests are remembered across processes (None: not at all)."""
    setting = os.environ.get(DIGEST_MEMO_ENV, "")
    if setting.lower() == "off":
        return None
    if setting:
        return Path(setting).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser()
    return base / "sweep" / "file-digests"


def _stat_memo(path: Path, stat: os.stat_result) -> tuple[str, ...]:
    return (str(path.resolve()), str(stat.st_dev), str(stat.st_ino), str(stat.st_size),
            str(stat.st_mtime_ns), str(stat.st_ctime_ns))


def _memo_entry(memo: tuple[str, ...]) -> Path | None:
    folder = digest_memo_dir()
    return None if folder is None else folder / hashlib.sha256("\0".join(memo).encode("utf-8")).hexdigest()[:32]


def _remembered_digest(memo: tuple[str, ...]) -> str | None:
    entry = _memo_entry(memo)
    if entry is None:
        return None
    try:
        text = entry.read_text(encoding="ascii").split("\n")
    except (OSError, UnicodeDecodeError):
        return None
    # The entry names its stat in full, so a (vanishingly unlikely) clash of names is a miss.
    if len(text) >= 2 and text[0] == "\0".join(memo) and re.fullmatch(r"[0-9a-f]{64}", text[1]):
        return text[1]
    return None


def _remember_digest(memo: tuple[str, ...], digest: str) -> None:
    entry = _memo_entry(memo)
    if entry is None:
        return
    try:  # the memo only saves time: a read-only or full disk just means hashing again
        atomic_save("\0".join(memo) + "\n" + digest + "\n", entry,
                    lambda text, tmp: tmp.write_text(text, encoding="ascii"))
    except OSError:
        pass


def _file_digest(path: Path) -> str:
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise FileNotFoundError(f"cannot fingerprint {path}: no such file") from None
    memo = _stat_memo(path, stat)
    with _digests_lock:
        known = _digests.get(memo)
    if known is not None:
        return known
    known = _remembered_digest(memo)
    if known is None:
        started_ns = time.time_ns()
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(HASH_CHUNK_BYTES):
                digest.update(chunk)
        known = digest.hexdigest()
        if _stat_memo(path, path.stat()) != memo:  # changed while being read: remember nothing
            return known
        if max(stat.st_mtime_ns, stat.st_ctime_ns) < started_ns - DIGEST_MEMO_SETTLE_NS:
            _remember_digest(memo, known)
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
    """What identifies a model's files: a local folder by its content, a hub id by id and revision.

    A hub id's `revision` defaults to the one its files are loaded at (`model_files.hub_revision`:
    the pinned commit, else the default branch), so that features and alignment cached under one
    commit are never reused once the pin moves to another."""
    folder = Path(source).expanduser()
    if folder.is_dir():
        return folder_fingerprint(folder, parts)
    if revision is None:
        revision = hub_revision(source)
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
    # data.load_source and a hub corpus' sample (data.parallel_sample_path): the source's version
    # may hold dashes ("main-reservoir1000000-seed0"), a sample of another size or seed adds some
    CacheKind("downloads", "data", re.compile(r"[^/]+/[^/.][^/]*-v[^/]+\.(?:jsonl|parquet)")),
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
