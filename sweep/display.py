"""A live terminal view of the sweep (rich): trials done, running, failed, pending, and time,
with each failed trial's one-line reason and the path of its full log.

Tune sees it through `ViewRelay`, a stateless Tune callback that forwards Tune's events to the
view this driver process has open. Tune saves its callbacks with the experiment (`tuner.pkl`)
and a restored experiment gets them back, not the callbacks of the driver restoring it; the
relay it gets back forwards to the new driver's view, so no callback needs replacing.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ray.tune import Callback
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from sweep.trainable import TUNE_ERROR_FILE, failure_reason

FAILURES_SHOWN = 10  # the newest failures listed under the table; the summary lists them all
_OPEN_VIEWS: list["SweepProgress"] = []  # the views of this process (normally one)


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ViewRelay(Callback):
    """Tune's callback: forwards trial events to the views open in this process."""

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        for view in _OPEN_VIEWS:
            view.count(trials)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        for view in _OPEN_VIEWS:
            view.trial_started(trial.trial_id)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        for view in _OPEN_VIEWS:
            view.trial_completed(trial.trial_id)
            view.count(trials)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        for view in _OPEN_VIEWS:
            view.trial_failed(str(trial), Path(trial.path))
            view.count(trials)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        for view in _OPEN_VIEWS:
            view.count(trials)


class SweepProgress:
    """Counts trial states (from Tune's own trial list, so resumed sweeps count their finished
    trials) and estimates the time left from the mean duration of trials finished here.
    `done` is what is known finished before Tune reports anything (a restored run)."""

    def __init__(self, total: int, console: Console | None = None, done: int = 0) -> None:
        self.total = total
        self.counts = {"done": done, "running": 0, "failed": 0}
        self.started_at: dict[str, float] = {}  # trial id -> start time, trials started here
        self.durations: list[float] = []
        self.failures: list[str] = []  # one line per failed trial: name, reason, log
        self.started = time.monotonic()
        self.console = console or Console(stderr=True)
        self.live: Live | None = None

    # --- events (from ViewRelay) ------------------------------------------------------------------
    def count(self, trials: list) -> None:
        statuses = [trial.status for trial in trials]
        self.counts = {
            "done": statuses.count("TERMINATED"),
            "running": statuses.count("RUNNING"),
            "failed": statuses.count("ERROR"),
        }
        self.refresh()

    def trial_started(self, trial_id: str) -> None:
        self.started_at[trial_id] = time.monotonic()

    def trial_completed(self, trial_id: str) -> None:
        start = self.started_at.pop(trial_id, None)
        if start is not None:
            self.durations.append(time.monotonic() - start)

    def trial_failed(self, name: str, trial_dir: Path) -> None:
        self.failures.append(f"{name}: {failure_reason(trial_dir)} (log: {trial_dir / TUNE_ERROR_FILE})")
        self.refresh()

    # --- rendering -----------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        return max(self.total - sum(self.counts.values()), 0)

    def remaining_seconds(self) -> float | None:
        if not self.durations:
            return None
        mean = sum(self.durations) / len(self.durations)
        running = self.counts["running"]
        return mean * (self.pending + running / 2) / max(running, 1)

    def render(self) -> Group:
        table = Table(title="sweep", show_header=True, header_style="bold")
        for column in ("done", "running", "failed", "pending", "elapsed", "remaining"):
            table.add_column(column, justify="right")
        table.add_row(
            f"{self.counts['done']}/{self.total}",
            str(self.counts["running"]),
            str(self.counts["failed"]),
            str(self.pending),
            format_duration(time.monotonic() - self.started),
            format_duration(self.remaining_seconds()),
        )
        lines = [Text(f"failed: {line}", style="red") for line in self.failures[-FAILURES_SHOWN:]]
        return Group(table, *lines)

    def refresh(self) -> None:
        if self.live is not None:
            self.live.update(self.render())

    def __enter__(self) -> "SweepProgress":
        self.live = Live(self.render(), console=self.console, refresh_per_second=2)
        self.live.start()
        _OPEN_VIEWS.append(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self in _OPEN_VIEWS:
            _OPEN_VIEWS.remove(self)
        self.refresh()
        if self.live is not None:
            self.live.stop()
            self.live = None
