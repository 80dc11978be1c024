"""The experiment folder: which of an experiment's trials are done, to resume, or new (no Ray here).

A trial is known by its content key (`sweep.experiment.trial_key`), not by its place in a Tune
run. Tune cannot add trials to a run it restores (`Tuner.restore` keeps the trial list it saved:
ray-project/ray#18847), so an experiment that grows gets one more Tune run (a *batch*) inside
the same experiment folder for its new trials:

    NAME/sweep-run.json       the marker: the experiment, and where each current trial lives
    NAME/run-001/             one Tune run (Tune's own state, and one folder per trial)
    NAME/run-001/sweep-batch.json   the batch's trials: content key -> trial folder name
    NAME/run-002/ ...

A trial with a final record (`sweep.trainable.FINAL_FILE`) is done and never runs again; one
in a batch Tune can restore is resumed there, from its last checkpoint; any other is new.
Trials whose key the experiment no longer has (a setting changed) stay on disk, out of the
marker's `current` map, which is what the analysis of the folder reads.

The folder may be wherever Ray Tune can keep a run (`RunConfig(storage_path=...)`): a local or
network path, or any URI pyarrow opens (`s3://`, `gs://`, `hdfs://`, `file://`). Every function
here takes a `Path` or a `Location` (a path on a `pyarrow.fs` filesystem, `location(...)` makes
one from either), and reads and writes through the filesystem, as Tune does. The trials write
their own records (`sweep.trainable`) through the same filesystem, from whichever node runs them.
"""
from __future__ import annotations

import fnmatch
import json
import os
import posixpath
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar, Union

import pyarrow.fs as pafs

from trainables.cache import atomic_save

T = TypeVar("T")

FINAL_FILE = "sweep-final.json"  # a trial's final metrics, written by the trial (sweep.trainable)
SKIPPED_FILE = "sweep-skipped.json"  # a restored batch's trial that the experiment no longer has
RUN_MARKER = "sweep-run.json"  # written when an experiment folder is made: what `--fresh` may delete
BATCH_RECORD = "sweep-batch.json"
BATCH_PREFIX = "run-"
CURRENT_KEY = "current"  # in the marker: content key -> batch folder of each trial of the experiment
TUNE_STATE_GLOB = "experiment_state*.json"  # present once Tune has saved a run it can restore


# --- where a run lives: a path on a pyarrow filesystem ----------------------------------------


class Location:
    """A file or folder on a `pyarrow.fs` filesystem: `fs` and its path there (`path`, without the
    URI's scheme), and `uri`, how a user names it (the local path, or `s3://bucket/...`).

    It offers the few `pathlib.Path` operations the run folder needs, so the ledger's functions
    take either. Writes are atomic: a local file through `trainables.cache.atomic_save`, another
    filesystem's through a temporary name moved into place (an object store's move publishes the
    complete object)."""

    def __init__(self, fs: pafs.FileSystem, path: str, uri: str | None = None) -> None:
        self.fs, self.path = fs, path.rstrip("/") or "/"
        self.uri = uri.rstrip("/") if uri else self.path

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    @property
    def local(self) -> Path | None:
        """The same place as a local `Path` (a local or network mount), None on another filesystem."""
        return Path(self.path) if self.is_local else None

    def __truediv__(self, name: str) -> Location:
        return Location(self.fs, posixpath.join(self.path, str(name)), f"{self.uri}/{name}")

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    @property
    def parent(self) -> Location:
        cut = len(self.name) + 1
        return Location(self.fs, posixpath.dirname(self.path), self.uri[:-cut] if self.name else self.uri)

    def __str__(self) -> str:
        return self.uri

    def __repr__(self) -> str:
        return f"Location({self.fs.type_name!r}, {self.path!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Location) and (self.fs.type_name, self.path) == (other.fs.type_name, other.path)

    def __hash__(self) -> int:
        return hash((self.fs.type_name, self.path))

    def __fspath__(self) -> str:
        if not self.is_local:  # a remote object has no local path: fail loudly, never write beside cwd
            raise TypeError(f"{self.uri} is on {self.fs.type_name}, not a local path")
        return self.path

    def _type(self) -> pafs.FileType:
        return self.fs.get_file_info(self.path).type

    def exists(self) -> bool:
        return self._type() != pafs.FileType.NotFound

    def is_dir(self) -> bool:
        return self._type() == pafs.FileType.Directory

    def is_file(self) -> bool:
        return self._type() == pafs.FileType.File

    def iterdir(self) -> list[Location]:
        infos = self.fs.get_file_info(pafs.FileSelector(self.path, allow_not_found=True))
        return [self / posixpath.basename(info.path.rstrip("/")) for info in infos]

    def glob(self, pattern: str) -> list[Location]:
        """The children whose names match `pattern` (one level, as the run folder needs)."""
        return [child for child in self.iterdir() if fnmatch.fnmatch(child.name, pattern)]

    def mkdir(self, parents: bool = True, exist_ok: bool = True) -> None:
        self.fs.create_dir(self.path, recursive=True)

    def rmtree(self) -> None:
        self.fs.delete_dir(self.path)

    def unlink(self, missing_ok: bool = False) -> None:
        if missing_ok and not self.exists():
            return
        self.fs.delete_file(self.path)

    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.path) as stream:
            return stream.read()

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_text(self, text: str, encoding: str = "utf-8") -> None:
        self.atomic_save(text, lambda value, path: path.write_text(value, encoding=encoding))

    def upload(self, folder: Path) -> None:
        """Copy a local folder here, whole (`pyarrow.fs.copy_files`, as Tune persists checkpoints)."""
        self.mkdir()
        pafs.copy_files(str(folder), self.path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=self.fs)

    def atomic_save(self, value: T, save: Callable[[T, Path], None]) -> bool:
        """Write `value` with `save` (which writes a local file) and put the result here atomically."""
        if self.is_local:
            return atomic_save(value, Path(self.path), save)
        with tempfile.TemporaryDirectory() as folder:
            local = Path(folder) / self.name
            save(value, local)
            self.parent.mkdir()
            staged = self.parent / f".{self.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            try:
                with self.fs.open_output_stream(staged.path) as stream:
                    stream.write(local.read_bytes())
                self.fs.move(staged.path, self.path)
            finally:
                staged.unlink(missing_ok=True)
        return True


Where = Union[str, Path, Location]  # a run folder, a file in it, or the storage: a path or a URI


def location(where: Where) -> Location:
    """A `Location` for a local path (made absolute, as Tune makes it) or a URI pyarrow opens;
    a `ValueError` naming it when pyarrow cannot (an unknown scheme, a missing client library)."""
    if isinstance(where, Location):
        return where
    text = os.fspath(where)
    if "://" not in text:
        path = Path(text).expanduser().resolve()
        return Location(pafs.LocalFileSystem(), path.as_posix(), str(path))
    try:
        fs, path = pafs.FileSystem.from_uri(text)
    except (ValueError, OSError, ImportError) as error:
        raise ValueError(f"{text}: not a storage pyarrow can open ({' '.join(str(error).split())})") from None
    if isinstance(fs, pafs.LocalFileSystem):  # file:// names a local (or network-mounted) path
        return Location(fs, path, path)
    return Location(fs, path, text)


@dataclass(frozen=True)
class Placement:
    """Where one trial of a batch lives."""

    key: str
    batch: str  # batch folder name, e.g. run-001
    folder: str  # the trial's folder name inside the batch

    def path(self, run_dir: Where) -> Any:
        """The trial's folder, of the type of `run_dir` (a `Path` or a `Location`)."""
        return (Path(run_dir) if isinstance(run_dir, str) else run_dir) / self.batch / self.folder


@dataclass
class Plan:
    """What a run of the experiment does with each of its trials."""

    done: dict[str, Placement] = field(default_factory=dict)
    resume: dict[str, Placement] = field(default_factory=dict)
    new: list[str] = field(default_factory=list)
    stale: int = 0  # trials on disk that the experiment no longer has

    @property
    def batches_to_restore(self) -> list[str]:
        return sorted({p.batch for p in self.resume.values()})

    def summary(self) -> str:
        stale = f" ({self.stale} other trials on disk are not in this experiment)" if self.stale else ""
        return f"{len(self.done)} done, {len(self.resume)} to resume, {len(self.new)} new{stale}"


def batch_names(run_dir: Where) -> list[str]:
    """The batches of an experiment folder, oldest first (their names count up)."""
    run = location(run_dir)
    if not run.is_dir():
        return []
    return sorted(child.name for child in run.iterdir()
                  if child.name.startswith(BATCH_PREFIX) and (child / BATCH_RECORD).is_file())


def next_batch_name(run_dir: Where) -> str:
    numbers = [int(name[len(BATCH_PREFIX):]) for name in batch_names(run_dir) if name[len(BATCH_PREFIX):].isdigit()]
    return f"{BATCH_PREFIX}{max(numbers, default=0) + 1:03d}"


def batch_trials(run_dir: Where, batch: str) -> dict[str, str]:
    """A batch's record: content key -> trial folder name."""
    where = location(run_dir) / batch / BATCH_RECORD
    record = read_json(where)
    if not isinstance(record, dict) or not isinstance(record.get("trials"), dict):
        raise ValueError(f"{where}: not a batch record of this engine (expected {{'trials': {{key: folder}}}})")
    return {str(k): str(v) for k, v in record["trials"].items()}


def write_batch_record(run_dir: Where, batch: str, trials: dict[str, str]) -> None:
    folder = location(run_dir) / batch
    folder.mkdir()
    write_json(folder / BATCH_RECORD, {"trials": trials})


def restorable(run_dir: Where, batch: str) -> bool:
    """Tune saved this batch's state (a driver killed before the first save leaves none)."""
    return bool((location(run_dir) / batch).glob(TUNE_STATE_GLOB))


def plan_trials(run_dir: Where, keys: Iterable[str]) -> Plan:
    """Sort the experiment's trials (by content key) into done, to resume and new."""
    run = location(run_dir)
    wanted = list(dict.fromkeys(keys))
    placements: dict[str, list[Placement]] = {}
    for batch in batch_names(run):
        for key, folder in batch_trials(run, batch).items():
            placements.setdefault(key, []).append(Placement(key, batch, folder))
    plan = Plan(stale=sum(1 for key in placements if key not in set(wanted)))
    for key in wanted:
        found = placements.get(key, [])
        finished = [p for p in found if (p.path(run) / FINAL_FILE).is_file()]
        if finished:
            plan.done[key] = finished[-1]
        elif found and restorable(run, found[-1].batch) and not (found[-1].path(run) / SKIPPED_FILE).exists():
            plan.resume[key] = found[-1]
        else:  # never placed, its batch never saved, or skipped while it was not in the experiment
            plan.new.append(key)
    return plan


def read_marker(run_dir: Where) -> dict[str, Any] | None:
    run = location(run_dir)
    marker = read_json(run / RUN_MARKER) if run.is_dir() else None
    return marker if isinstance(marker, dict) else None


def write_current(run_dir: Where, marker: dict[str, Any], current: dict[str, str]) -> None:
    """Record where each current trial lives (key -> batch): the analysis reads only those."""
    write_json(location(run_dir) / RUN_MARKER, {**marker, CURRENT_KEY: current})


def finished_durations(run_dir: Where, placements: Iterable[Placement]) -> list[float]:
    """Wall time of done trials that ran in one go (a resumed one's last start is not its duration)."""
    run = location(run_dir)
    durations = []
    for placement in placements:
        final = read_json(placement.path(run) / FINAL_FILE)
        if isinstance(final, dict) and final.get("trial_starts") == 1 and final.get("seconds_this_start"):
            durations.append(float(final["seconds_this_start"]))
    return durations


def remove_tree(folder: Where) -> None:
    """Delete a folder and everything in it (`--fresh`), on whatever filesystem it is."""
    where = location(folder)
    if where.is_local:
        shutil.rmtree(where.path)
    else:
        where.rmtree()


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def write_json(path: Where, value: Any) -> None:
    """Atomically: a reader (another node, a resumed driver) sees the old record or the new one."""
    location(path).write_text(json.dumps(value, default=_jsonable))


def read_json(path: Where) -> Any:
    try:
        return json.loads(location(path).read_text())
    except (OSError, ValueError):  # absent, or not ours: no record
        return None


def sees_marker(path: str, token: str) -> bool:
    """Whether this process (a task on some node) reads `token` in the file `path`: how the
    driver finds out that every node of a cluster sees a local folder (sweep.runner)."""
    try:
        return Path(path).read_text() == token
    except OSError:
        return False
