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
    """Counts trial states and estimates the time left from the finished trials' mean duration."""

    def __init__(self, total: int, already_done: int = 0, console: Console | None = None) -> None:
        self.total = total
        self.done = already_done
        self.failed = 0
        self.running: dict[str, float] = {}  # trial id -> start time
        self.durations: list[float] = []
        self.last_metrics: dict[str, str] = {}
        self.started = time.monotonic()
        self.console = console or Console(stderr=True)
        self.live = Live(self.render(), console=self.console, refresh_per_second=2, transient=False)

    # --- Tune callback hooks -------------------------------------------------------------------
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running[trial.trial_id] = time.monotonic()
        self.refresh()

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        phase = result.get("phase", "")
        step = result.get("step")
        self.last_metrics[trial.trial_id] = f"{phase} step {step}" if step is not None else str(phase)
        self.refresh()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        start = self.running.pop(trial.trial_id, None)
        if start is not None:
            self.durations.append(time.monotonic() - start)
        self.done += 1
        self.refresh()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running.pop(trial.trial_id, None)
        self.failed += 1
        self.refresh()

    # --- rendering -----------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        return max(self.total - self.done - self.failed - len(self.running), 0)

    def remaining_seconds(self) -> float | None:
        if not self.durations:
            return None
        mean = sum(self.durations) / len(self.durations)
        parallel = max(len(self.running), 1)
        return mean * (self.pending + len(self.running) / 2) / parallel

    def render(self) -> Table:
        table = Table(title="sweep", show_header=True, header_style="bold")
        for column in ("done", "running", "failed", "pending", "elapsed", "remaining"):
            table.add_column(column, justify="right")
        table.add_row(
            f"{self.done}/{self.total}",
            str(len(self.running)),
            str(self.failed),
            str(self.pending),
            format_duration(time.monotonic() - self.started),
            format_duration(self.remaining_seconds()),
        )
        return table

    def refresh(self) -> None:
        self.live.update(self.render())

    def __enter__(self) -> "SweepProgress":
        self.live.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.refresh()
        self.live.stop()
