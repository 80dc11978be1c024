"""What the sweep shows while it runs: a live terminal view (rich), or one plain line per event
for logs and CI (`--log`, or automatic when stdout is not a terminal).

The live view has the counts (done, running, failed, pending), the elapsed time and the
experiment's ETA, one row per running trial (model, task, method, seed, phase, step/total,
phase ETA, loss, elapsed, ETA), and each failed trial's one-line reason with the path of its
full log. A trial's ETA comes from the durations of finished trials (those of earlier runs of the
experiment included), per (model, task, method) where one of that kind has finished, else over
all of them. A phase's ETA comes from its own rate: the steps (or units: sentence pairs, batches,
sentences encoded) done since its first report, over the time they took. The phase shown is
what the trial says it is working on where it says so ("pairs es 3/5" while it loads), else the
phase's name.

Tune sees the view through `ViewRelay`, a stateless Tune callback that forwards Tune's events to
the view this driver process has open. Tune saves its callbacks with the experiment (`tuner.pkl`)
and a restored experiment gets them back, not the callbacks of the driver restoring it; the
relay it gets back forwards to the new driver's view, so no callback needs replacing.
"""
from __future__ import annotations

import io
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, TextIO

from ray.tune import Callback
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from sweep.trainable import TUNE_ERROR_FILE, failure_reason

FAILURES_SHOWN = 10  # the newest failures listed under the table; the summary lists them all
STARTING_PHASE = "load"  # a trial that has reported nothing yet is loading its inputs and pairs
_OPEN_VIEWS: list["SweepProgress"] = []  # the views of this process (normally one)
MODES = ("live", "log", "quiet")  # quiet: counts only (Tune prints its own output)


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def trial_group(config: Mapping[str, Any]) -> str:
    """Trials of one group take about as long as each other: same model, task and method."""
    return f"{config.get('model')}/{config.get('task')}/{config.get('realign')}"


@dataclass
class RunningTrial:
    """What the view knows of a running trial: its axes and its last progress report."""

    model: str
    task: str
    method: str
    seed: Any
    started: float
    key: str = ""  # the trial's content key (sweep.experiment.trial_key), else Tune's trial id
    phase: str = STARTING_PHASE
    step: int | None = None
    total: int | None = None
    loss: float | None = None
    part: str = ""  # what the phase is working on, e.g. "pairs es 3/5" ("": the phase as a whole)
    # (time, step) of the current phase's first report with a step: the start of its own rate
    phase_anchor: tuple[float, int] | None = field(default=None, repr=False)
    reported_at: float | None = field(default=None, repr=False)  # time of the last report
    reported: bool = field(default=False, repr=False)

    @property
    def label(self) -> str:
        return f"{self.model} {self.task} {self.method} s{self.seed}"

    @property
    def shown_phase(self) -> str:
        return self.part or self.phase

    @property
    def group(self) -> str:
        return f"{self.model}/{self.task}/{self.method}"


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number else None  # NaN: the report had no loss


class ViewRelay(Callback):
    """Tune's callback: forwards trial events to the views open in this process."""

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        for view in _OPEN_VIEWS:
            view.count(trials)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        for view in _OPEN_VIEWS:
            view.trial_started(trial.trial_id, (trial.config or {}).get("trial", {}))
            view.count(trials)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        for view in _OPEN_VIEWS:
            view.trial_result(trial.trial_id, result)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        for view in _OPEN_VIEWS:
            view.trial_completed(trial.trial_id)
            view.count(trials)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        for view in _OPEN_VIEWS:
            view.trial_failed(str(trial), Path(trial.path), trial.trial_id)
            view.count(trials)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        # an attempt failed and Tune queued the trial again (max_failures): not running any more
        for view in _OPEN_VIEWS:
            view.trial_retried(str(trial), Path(trial.path), trial.trial_id)
            view.count(trials)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        for view in _OPEN_VIEWS:
            view.count(trials)


def _attempt_line(name: str, trial_dir: Path) -> str:
    """A failed attempt in one line: the trial, its reason, where its full log is."""
    return f"{name}: {failure_reason(trial_dir)} (log: {trial_dir / TUNE_ERROR_FILE})"


def _key(trial: Any) -> str:
    config = getattr(trial, "config", None) or {}
    return str(config.get("trial", {}).get("key") or trial.trial_id)


class SweepProgress:
    """Counts trial states and shows the running trials.

    `total` is the experiment's trial count and `done` how many were finished before this driver
    run. `keys`, when given, are the content keys of the trials this run has to run (to resume or
    new): Tune's trial lists (one per batch, and a restored batch holds its finished trials and
    trials the experiment no longer has) are counted only for those. `todo` counts the groups
    (`trial_group`) of the trials still to run, `durations` the finished ones' times by group.
    `on_finished(n)` is called with the number of trials finished in this driver run after each
    one (the report refresh). `clock` is injectable for tests."""

    def __init__(self, total: int, console: Console | None = None, done: int = 0, mode: str = "live",
                 todo: Mapping[str, int] | None = None, durations: Iterable[tuple[str, float]] = (),
                 on_finished: Callable[[int], None] | None = None, log: TextIO | None = None,
                 keys: Iterable[str] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        if mode not in MODES:
            raise ValueError(f"view mode {mode!r}: expected one of {', '.join(MODES)}")
        self.total = total
        self.mode = mode
        self.clock = clock
        self.done_before = done
        self.keys = set(keys) if keys is not None else None
        self.status: dict[str, str] = {}  # trial key -> its last Tune status, across batches
        self.counts = {"done": done, "running": 0, "failed": 0}
        self.running: dict[str, RunningTrial] = {}  # Tune trial id -> its row
        self.todo: Counter[str] = Counter(todo or {})
        self.durations: dict[str, list[float]] = {}
        for group, seconds in durations:
            self.durations.setdefault(group, []).append(seconds)
        self.finished_here = 0
        self.failures: list[str] = []  # one line per failed trial: name, reason, log
        self.retries: list[str] = []  # one line per failed attempt that Tune runs again
        self.started = clock()
        self.console = console or Console(stderr=True)
        self.log_stream = log
        self.on_finished = on_finished
        self.live: Live | None = None

    # --- events (from ViewRelay) ------------------------------------------------------------------
    def count(self, trials: list) -> None:
        for trial in trials:
            key = _key(trial)
            if self.keys is None or key in self.keys:
                self.status[key] = trial.status
        self._recount()

    def _recount(self) -> None:
        statuses = Counter(self.status.values())
        self.counts = {"done": self.done_before + statuses["TERMINATED"], "running": statuses["RUNNING"],
                       "failed": statuses["ERROR"]}
        self.refresh()

    def trial_started(self, trial_id: str, config: Mapping[str, Any] | None = None) -> None:
        config = config or {}
        row = RunningTrial(str(config.get("model", "?")).split("/")[-1], str(config.get("task", "?")),
                           str(config.get("realign", "?")), config.get("seed", "?"), self.clock(),
                           key=str(config.get("key") or trial_id))
        if self.keys is not None and row.key not in self.keys:
            return  # a trial the experiment no longer has: it stops at once (sweep.trainable)
        self.running[trial_id] = row
        self.emit("start", row.label)

    def trial_result(self, trial_id: str, result: Mapping[str, Any]) -> None:
        row = self.running.get(trial_id)
        phase = result.get("phase")
        if row is None or not phase or phase == "done":
            return
        shown, part = row.shown_phase, str(result.get("part") or "")
        step, total = _number(result.get("step")), _number(result.get("total"))
        step_now, total_now = (int(step) if step is not None else None), (int(total) if total else None)
        if total_now is None and (str(phase), part) == (row.phase, row.part):
            total_now = row.total  # a checkpoint's report within the phase does not repeat its total
        restart = (str(phase), part, total_now) != (row.phase, row.part, row.total)
        if restart or step_now is None or (row.phase_anchor is not None and step_now < row.phase_anchor[1]):
            row.phase_anchor = None  # another phase, part or unit count: a new rate
        if row.phase_anchor is None and step_now is not None:
            row.phase_anchor = (self.clock(), step_now)
        changed = (part or str(phase)) != shown or not row.reported
        row.phase, row.part, row.reported = str(phase), part, True
        row.step, row.total, row.reported_at = step_now, total_now, self.clock()
        row.loss = _number(result.get("loss"))
        if changed:
            self.emit("phase", f"{row.label}: {row.shown_phase}")
        self.refresh()

    def trial_completed(self, trial_id: str) -> None:
        row = self.running.pop(trial_id, None)
        if row is None:
            return
        seconds = self.clock() - row.started
        self.durations.setdefault(row.group, []).append(seconds)
        if self.todo[row.group] > 0:
            self.todo[row.group] -= 1
        self.finished_here += 1
        self.status[row.key] = "TERMINATED"
        self._recount()
        self.emit("done", f"{row.label} in {format_duration(seconds)} "
                          f"({self.counts['done']}/{self.total} done, ETA {format_duration(self.remaining_seconds())})")
        if self.on_finished is not None:
            self.on_finished(self.finished_here)

    def trial_failed(self, name: str, trial_dir: Path, trial_id: str | None = None) -> None:
        row = self.running.pop(trial_id, None) if trial_id is not None else None
        if row is not None:
            self.status[row.key] = "ERROR"
            if self.todo[row.group] > 0:  # not to be run again in this driver run
                self.todo[row.group] -= 1
            self._recount()
        line = _attempt_line(name, trial_dir)
        self.failures.append(line)
        self.emit("failed", line)
        self.refresh()

    def trial_retried(self, name: str, trial_dir: Path, trial_id: str) -> None:
        """An attempt failed and Tune will run the trial again (from its last checkpoint): its row
        goes until it restarts, and the reason is listed, so a retry is never silent."""
        row = self.running.pop(trial_id, None)
        if row is not None:
            self.status[row.key] = "PENDING"
            self._recount()
        line = f"{_attempt_line(name, trial_dir)}; queued again"
        self.retries.append(line)
        self.emit("retry", line)
        self.refresh()

    # --- estimates -----------------------------------------------------------------------------
    def expected_seconds(self, group: str) -> float | None:
        """A trial's expected duration: the mean of its group's finished trials, else of all."""
        seconds = self.durations.get(group) or [s for group_times in self.durations.values() for s in group_times]
        return sum(seconds) / len(seconds) if seconds else None

    def phase_eta(self, row: RunningTrial) -> float | None:
        """The current phase's time left at its own rate (from its first report to its last),
        counting down from its last report; None while it has no total or has not advanced."""
        if not row.total or row.step is None or row.phase_anchor is None or row.reported_at is None:
            return None
        since, first_step = row.phase_anchor
        if row.step <= first_step:
            return None
        left_at_report = (row.reported_at - since) * max(row.total - row.step, 0) / (row.step - first_step)
        return max(left_at_report - (self.clock() - row.reported_at), 0.0)

    def trial_eta(self, row: RunningTrial) -> float | None:
        """Time left: its group's expected duration less its elapsed time, and never less than
        what its current phase still needs (a trial of a faster group cannot end before it)."""
        expected = self.expected_seconds(row.group)
        phase = self.phase_eta(row)
        if expected is None:
            return phase  # nothing finished yet: at least the phase's own
        left = max(expected - (self.clock() - row.started), 0.0)
        return left if phase is None else max(left, phase)

    @property
    def pending(self) -> int:
        return max(self.total - sum(self.counts.values()), 0)

    def remaining_seconds(self) -> float | None:
        """The work left (running trials' ETAs and the pending trials' expected durations) over
        the trials running side by side."""
        if not self.durations:
            return None
        work = 0.0
        running_groups = Counter(row.group for row in self.running.values())
        for row in self.running.values():
            work += self.trial_eta(row) or 0.0
        for group, count in self.todo.items():
            waiting = max(count - running_groups[group], 0)
            if waiting:
                work += waiting * (self.expected_seconds(group) or 0.0)
        return work / max(len(self.running), 1)

    # --- rendering -----------------------------------------------------------------------------
    def render(self) -> Group:
        table = Table(title="sweep", show_header=True, header_style="bold")
        for column in ("done", "running", "failed", "pending", "elapsed", "ETA"):
            table.add_column(column, justify="right")
        table.add_row(
            f"{self.counts['done']}/{self.total}",
            str(self.counts["running"]),
            str(self.counts["failed"]),
            str(self.pending),
            format_duration(self.clock() - self.started),
            format_duration(self.remaining_seconds()),
        )
        parts: list[Any] = [table]
        if self.running:
            rows = Table(title="running trials", show_header=True, header_style="bold")
            for column, justify in (("model", "left"), ("task", "left"), ("method", "left"), ("seed", "right"),
                                    ("phase", "left"), ("step", "right"), ("phase ETA", "right"), ("loss", "right"),
                                    ("elapsed", "right"), ("ETA", "right")):
                rows.add_column(column, justify=justify)
            for row in sorted(self.running.values(), key=lambda r: r.started):
                step = "" if row.step is None else (f"{row.step}/{row.total}" if row.total else str(row.step))
                phase_eta = self.phase_eta(row)
                rows.add_row(row.model, row.task, row.method, str(row.seed), row.shown_phase, step,
                             "" if phase_eta is None else format_duration(phase_eta),
                             "" if row.loss is None else f"{row.loss:.4f}",
                             format_duration(self.clock() - row.started), format_duration(self.trial_eta(row)))
            parts.append(rows)
        parts += [Text(f"retried: {line}", style="yellow") for line in self.retries[-FAILURES_SHOWN:]]
        parts += [Text(f"failed: {line}", style="red") for line in self.failures[-FAILURES_SHOWN:]]
        return Group(*parts)

    def render_text(self, width: int = 120) -> str:
        """The live view as plain text (what a terminal of that width shows)."""
        console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
        console.print(self.render())
        return console.export_text()

    def emit(self, event: str, detail: str) -> None:
        """One line per event in log mode: time since the start, the event, what it concerns."""
        if self.mode == "log":
            stream = self.log_stream or sys.stdout
            print(f"[{format_duration(self.clock() - self.started)}] {event:<6} {detail}", file=stream, flush=True)

    def refresh(self) -> None:
        if self.live is not None:
            self.live.update(self.render())

    def __enter__(self) -> "SweepProgress":
        if self.mode == "live":
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
        if self.mode == "log":
            self.emit("end", f"{self.counts['done']}/{self.total} done, {self.counts['failed']} failed, "
                             f"{self.pending} pending")
