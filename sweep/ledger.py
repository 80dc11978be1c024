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
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from trainables.cache import atomic_save

FINAL_FILE = "sweep-final.json"  # a trial's final metrics, written by the trial (sweep.trainable)
SKIPPED_FILE = "sweep-skipped.json"  # a restored batch's trial that the experiment no longer has
RUN_MARKER = "sweep-run.json"  # written when an experiment folder is made: what `--fresh` may delete
BATCH_RECORD = "sweep-batch.json"
BATCH_PREFIX = "run-"
CURRENT_KEY = "current"  # in the marker: content key -> batch folder of each trial of the experiment
TUNE_STATE_GLOB = "experiment_state*.json"  # present once Tune has saved a run it can restore


@dataclass(frozen=True)
class Placement:
    """Where one trial of a batch lives."""

    key: str
    batch: str  # batch folder name, e.g. run-001
    folder: str  # the trial's folder name inside the batch

    def path(self, run_dir: Path) -> Path:
        return run_dir / self.batch / self.folder


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


def batch_names(run_dir: Path) -> list[str]:
    """The batches of an experiment folder, oldest first (their names count up)."""
    if not run_dir.is_dir():
        return []
    return sorted(p.name for p in run_dir.iterdir() if p.name.startswith(BATCH_PREFIX) and (p / BATCH_RECORD).is_file())


def next_batch_name(run_dir: Path) -> str:
    numbers = [int(name[len(BATCH_PREFIX):]) for name in batch_names(run_dir) if name[len(BATCH_PREFIX):].isdigit()]
    return f"{BATCH_PREFIX}{max(numbers, default=0) + 1:03d}"


def batch_trials(run_dir: Path, batch: str) -> dict[str, str]:
    """A batch's record: content key -> trial folder name."""
    record = read_json(run_dir / batch / BATCH_RECORD)
    if not isinstance(record, dict) or not isinstance(record.get("trials"), dict):
        raise ValueError(f"{run_dir / batch / BATCH_RECORD}: not a batch record of this engine (expected "
                         "{'trials': {key: folder}})")
    return {str(k): str(v) for k, v in record["trials"].items()}


def write_batch_record(run_dir: Path, batch: str, trials: dict[str, str]) -> None:
    (run_dir / batch).mkdir(parents=True, exist_ok=True)
    write_json(run_dir / batch / BATCH_RECORD, {"trials": trials})


def restorable(run_dir: Path, batch: str) -> bool:
    """Tune saved this batch's state (a driver killed before the first save leaves none)."""
    return any((run_dir / batch).glob(TUNE_STATE_GLOB))


def plan_trials(run_dir: Path, keys: Iterable[str]) -> Plan:
    """Sort the experiment's trials (by content key) into done, to resume and new."""
    wanted = list(dict.fromkeys(keys))
    placements: dict[str, list[Placement]] = {}
    for batch in batch_names(run_dir):
        for key, folder in batch_trials(run_dir, batch).items():
            placements.setdefault(key, []).append(Placement(key, batch, folder))
    plan = Plan(stale=sum(1 for key in placements if key not in set(wanted)))
    for key in wanted:
        found = placements.get(key, [])
        finished = [p for p in found if (p.path(run_dir) / FINAL_FILE).is_file()]
        if finished:
            plan.done[key] = finished[-1]
        elif found and restorable(run_dir, found[-1].batch) and not (found[-1].path(run_dir) / SKIPPED_FILE).exists():
            plan.resume[key] = found[-1]
        else:  # never placed, its batch never saved, or skipped while it was not in the experiment
            plan.new.append(key)
    return plan


def read_marker(run_dir: Path) -> dict[str, Any] | None:
    marker = read_json(run_dir / RUN_MARKER) if run_dir.is_dir() else None
    return marker if isinstance(marker, dict) else None


def write_current(run_dir: Path, marker: dict[str, Any], current: dict[str, str]) -> None:
    """Record where each current trial lives (key -> batch): the analysis reads only those."""
    write_json(run_dir / RUN_MARKER, {**marker, CURRENT_KEY: current})


def finished_durations(run_dir: Path, placements: Iterable[Placement]) -> list[float]:
    """Wall time of done trials that ran in one go (a resumed one's last start is not its duration)."""
    durations = []
    for placement in placements:
        final = read_json(placement.path(run_dir) / FINAL_FILE)
        if isinstance(final, dict) and final.get("trial_starts") == 1 and final.get("seconds_this_start"):
            durations.append(float(final["seconds_this_start"]))
    return durations


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def write_json(path: Path, value: Any) -> None:
    atomic_save(value, path, lambda v, p: p.write_text(json.dumps(v, default=_jsonable)))


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # absent, or not ours: no record
        return None
