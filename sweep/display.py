"""A live terminal view of the sweep (rich): trials done, running, failed, pending, and time.

It is a Tune callback, so it sees the same events the Ray dashboard does, without polling.
"""
from __future__ import annotations

import time
from typing import Any

from ray.tune import Callback
from rich.console import Console
from rich.live import Live
from rich.table import Table


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class SweepProgress(Callback):
    """Counts trial states (from Tune's own trial list, so resumed sweeps count their finished
    trials) and estimates the time left from the mean duration of trials finished here."""

    def __init__(self, total: int, console: Console | None = None) -> None:
        self.total = total
        self.counts = {"done": 0, "running": 0, "failed": 0}
        self.started_at: dict[str, float] = {}  # trial id -> start time, trials started here
        self.durations: list[float] = []
        self.started = time.monotonic()
        self.console = console or Console(stderr=True)
        self.live: Live | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Tune saves its callbacks with the experiment state; the live view stays with this driver.
        return {**self.__dict__, "console": None, "live": None}

    # --- Tune callback hooks -------------------------------------------------------------------
    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        statuses = [trial.status for trial in trials]
        self.counts = {
            "done": statuses.count("TERMINATED"),
            "running": statuses.count("RUNNING"),
            "failed": statuses.count("ERROR"),
        }
        self.refresh()

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.started_at[trial.trial_id] = time.monotonic()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        start = self.started_at.pop(trial.trial_id, None)
        if start is not None:
            self.durations.append(time.monotonic() - start)

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

    def render(self) -> Table:
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
        return table

    def refresh(self) -> None:
        if self.live is not None:
            self.live.update(self.render())

    def __enter__(self) -> "SweepProgress":
        self.live = Live(self.render(), console=self.console or Console(stderr=True), refresh_per_second=2)
        self.live.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.refresh()
        if self.live is not None:
            self.live.stop()
            self.live = None
