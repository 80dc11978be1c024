"""The sweep's live view and plain log, driven by fixed fake trial states and a fake clock."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

pytest.importorskip("ray")

from sweep.display import SweepProgress, ViewRelay, format_duration, trial_group  # noqa: E402
from sweep.trainable import FAILURE_FILE  # noqa: E402


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeTrial:
    def __init__(self, trial_id, status, key, model="e5-small", task="udpos", realign="joint", seed=0, path="/r/t"):
        self.trial_id, self.status, self.path = trial_id, status, path
        self.config = {"trial": {"key": key, "model": model, "task": task, "realign": realign, "seed": seed}}

    def __str__(self):
        return Path(self.path).name


def table_rows(text: str) -> list[list[str]]:
    """The cells of each table row of a rendered frame (box-drawing separators)."""
    rows = []
    for line in text.splitlines():
        line = line.strip().replace("┃", "│")  # header rows use the heavy bar
        if line.startswith("│"):
            rows.append([cell.strip() for cell in line.strip("│").split("│")])
    return rows


def test_frame_has_one_row_per_running_trial_and_hand_worked_etas():
    clock = Clock()
    # Earlier runs finished two udpos/joint trials in 100 s and 140 s (mean 120 s) and one
    # wikiann/none trial in 60 s; four trials are left: two udpos/joint, one wikiann/none, one xnli/before.
    durations = [("e5-small/udpos/joint", 100.0), ("e5-small/udpos/joint", 140.0), ("e5-small/wikiann/none", 60.0)]
    todo = {"e5-small/udpos/joint": 2, "e5-small/wikiann/none": 1, "e5-small/xnli/before": 1}
    view = SweepProgress(total=7, done=3, mode="quiet", todo=todo, durations=durations,
                         keys=["k1", "k2", "k3", "k4"], clock=clock)
    relay = ViewRelay()
    a = FakeTrial("a", "RUNNING", "k1", seed=1)
    b = FakeTrial("b", "RUNNING", "k2", task="wikiann", realign="none", seed=0)
    stale = FakeTrial("z", "TERMINATED", "old")  # a restored batch's trial the experiment no longer has
    with view:
        relay.on_trial_start(iteration=1, trials=[a, b, stale], trial=a)
        clock.now += 30
        relay.on_trial_start(iteration=2, trials=[a, b, stale], trial=b)
        clock.now += 10  # a has run 40 s, b 10 s
        relay.on_trial_result(iteration=3, trials=[a, b], trial=a,
                              result={"phase": "finetune", "step": 50, "total": 200, "loss": 0.61234, "epoch": 1})
        relay.on_trial_result(iteration=3, trials=[a, b], trial=b,
                              result={"phase": "pretrained", "step": 0, "loss": float("nan"), "epoch": 0})
        relay.on_step_end(iteration=4, trials=[a, b, stale])
        text = view.render_text(width=140)
    assert view.counts == {"done": 3, "running": 2, "failed": 0}  # the stale trial is not counted
    rows = table_rows(text)
    assert rows[0] == ["done", "running", "failed", "pending", "elapsed", "ETA"]
    assert rows[1] == ["3/7", "2", "0", "2", "0:40", "2:55"]
    # a: group mean 120 s - 40 s = 80 s; b: 60 s - 10 s = 50 s. Work left: 80 + 50 + one more
    # udpos/joint (120) + xnli/before (no trial of its own kind finished: the mean of all, 100):
    # 350 s over 2 running trials = 175 s.
    assert view.trial_eta(view.running["a"]) == pytest.approx(80.0)
    assert view.trial_eta(view.running["b"]) == pytest.approx(50.0)
    assert view.remaining_seconds() == pytest.approx(175.0)
    assert rows[2] == ["model", "task", "method", "seed", "phase", "step", "phase ETA", "loss", "elapsed", "ETA"]
    # a's phase has one report: no rate of its own yet
    assert rows[3] == ["e5-small", "udpos", "joint", "1", "finetune", "50/200", "", "0.6123", "0:40", "1:20"]
    assert rows[4] == ["e5-small", "wikiann", "none", "0", "pretrained", "0", "", "", "0:10", "0:50"]
    assert len(rows) == 5
    # a's phase reports again 10 s later at step 60: 10 steps in 10 s, 140 left = 140 s, more
    # than its group's 120 - 50 = 70 s: a trial never ends before its current phase does
    clock.now += 10
    view.trial_result("a", {"phase": "finetune", "step": 60, "total": 200})  # (the view is closed: direct)
    assert view.phase_eta(view.running["a"]) == pytest.approx(140.0)
    assert view.trial_eta(view.running["a"]) == pytest.approx(140.0)


def test_rows_of_pair_extraction_and_alignment_measurement_show_units_and_their_own_eta():
    clock = Clock()
    out = io.StringIO()
    view = SweepProgress(total=3, mode="log", log=out, clock=clock)  # nothing finished: no group durations
    relay = ViewRelay()
    pairs = FakeTrial("p", "RUNNING", "k1", realign="none")
    measuring = FakeTrial("m", "RUNNING", "k2", task="wikiann")
    tuning = FakeTrial("f", "RUNNING", "k3", task="xnli", realign="before")
    trials = [pairs, measuring, tuning]

    def result(trial, **row):
        relay.on_trial_result(iteration=1, trials=trials, trial=trial, result={"loss": float("nan"), **row})

    with view:
        for trial in trials:
            relay.on_trial_start(iteration=1, trials=trials, trial=trial)
        clock.now += 2  # 1002
        result(tuning, phase="finetune", step=25, total=100, loss=0.5)
        clock.now += 8  # 1010
        result(pairs, phase="load", part="pairs es 3/5", step=0, total=0)  # the language, before its units
        result(measuring, phase="measure-finetuned", step=0, total=1456)
        clock.now += 2  # 1012
        result(pairs, phase="load", part="pairs es 3/5", step=0, total=50000)
        clock.now += 10  # 1022: an epoch's checkpoint report within the phase carries no total
        result(tuning, phase="finetune", step=50, epoch=1)
        clock.now += 20  # 1042
        result(pairs, phase="load", part="pairs es 3/5", step=12000, total=50000)
        result(measuring, phase="measure-finetuned", step=640, total=1456)
        text = view.render_text(width=140)
        rows = table_rows(text)
        # pairs: 12000 units in the 30 s since its units were first counted, 38000 left: 95 s;
        # measuring: 640 sentences in 32 s, 816 left: 40.8 s; fine-tuning: 25 steps in 20 s, 50 left:
        # 40 s at its report 20 s ago, 20 s now. Nothing has finished: each trial's ETA is its phase's.
        assert view.phase_eta(view.running["p"]) == pytest.approx(95.0)
        assert view.phase_eta(view.running["m"]) == pytest.approx(40.8)
        assert view.phase_eta(view.running["f"]) == pytest.approx(20.0)
        assert rows[3] == ["e5-small", "udpos", "none", "0", "pairs es 3/5", "12000/50000", "1:35", "", "0:42", "1:35"]
        assert rows[4] == ["e5-small", "wikiann", "joint", "0", "measure-finetuned", "640/1456", "0:40", "", "0:42",
                           "0:40"]
        assert rows[5] == ["e5-small", "xnli", "before", "0", "finetune", "50/100", "0:20", "", "0:42", "0:20"]
        clock.now += 3  # 1045: the next language starts its own rate
        result(pairs, phase="load", part="pairs es 4/5", step=0, total=0)
        assert view.phase_eta(view.running["p"]) is None
        assert table_rows(view.render_text(width=140))[3][4:7] == ["pairs es 4/5", "0", ""]
    phases = [line for line in out.getvalue().splitlines() if " phase " in line]
    assert phases == [  # one line when what a trial is doing changes, not for each of its reports
        "[0:02] phase  e5-small xnli before s0: finetune",
        "[0:10] phase  e5-small udpos none s0: pairs es 3/5",
        "[0:10] phase  e5-small wikiann joint s0: measure-finetuned",
        "[0:45] phase  e5-small udpos none s0: pairs es 4/5",
    ]


def test_log_mode_prints_one_line_per_event_and_counts_across_batches(tmp_path):
    clock = Clock()
    out = io.StringIO()
    finished = []
    (tmp_path / "t2").mkdir()
    (tmp_path / "t2" / FAILURE_FILE).write_text(json.dumps({"reason": "ValueError: x.tsv:12: tag 'B-FOO'"}))
    view = SweepProgress(total=3, done=1, mode="log", log=out, keys=["k1", "k2"], clock=clock,
                         on_finished=finished.append, todo={"e5-small/udpos/joint": 2})
    relay = ViewRelay()
    first = FakeTrial("a", "RUNNING", "k1")
    second = FakeTrial("b", "RUNNING", "k2", seed=1, path=str(tmp_path / "t2"))
    with view:
        relay.on_trial_start(iteration=1, trials=[first], trial=first)  # batch 1 (restored)
        relay.on_trial_result(iteration=1, trials=[first], trial=first, result={"phase": "finetune", "step": 25})
        relay.on_trial_result(iteration=2, trials=[first], trial=first, result={"phase": "finetune", "step": 50})
        clock.now += 65
        first.status = "TERMINATED"
        relay.on_trial_complete(iteration=3, trials=[first], trial=first)
        relay.on_trial_start(iteration=4, trials=[second], trial=second)  # batch 2: Tune's list has only it
        second.status = "ERROR"
        relay.on_trial_error(iteration=5, trials=[second], trial=second)
    lines = out.getvalue().splitlines()
    assert lines == [
        "[0:00] start  e5-small udpos joint s0",
        "[0:00] phase  e5-small udpos joint s0: finetune",  # the second report is the same phase: no line
        "[1:05] done   e5-small udpos joint s0 in 1:05 (2/3 done, ETA 1:05)",  # one udpos/joint left
        "[1:05] start  e5-small udpos joint s1",
        f"[1:05] failed t2: ValueError: x.tsv:12: tag 'B-FOO' (log: {tmp_path / 't2' / 'error.txt'})",
        "[1:05] end    2/3 done, 1 failed, 0 pending",
    ]
    assert view.counts == {"done": 2, "running": 0, "failed": 1}  # batch 1's finished trial still counted
    assert finished == [1]


def test_live_view_of_a_restored_run_counts_its_finished_trials_and_lists_failures(tmp_path):
    (tmp_path / "t1").mkdir()
    (tmp_path / "t1" / FAILURE_FILE).write_text(json.dumps({"reason": "ValueError: x.tsv:12: tag 'B-FOO'"}))
    view = SweepProgress(total=3, done=2, mode="quiet")
    assert view.pending == 1  # known finished before Tune reports anything
    relay = ViewRelay()
    with view:
        trial = FakeTrial("t1", "ERROR", "k1", path=str(tmp_path / "t1"))
        relay.on_trial_error(iteration=1, trials=[trial], trial=trial)
        text = view.render_text()
    assert view.counts == {"done": 2, "running": 0, "failed": 1} and view.pending == 0
    assert view.failures == [f"t1: ValueError: x.tsv:12: tag 'B-FOO' (log: {tmp_path / 't1' / 'error.txt'})"]
    assert "failed: t1: ValueError: x.tsv:12: tag 'B-FOO'" in text
    relay.on_step_end(iteration=2, trials=[FakeTrial("t9", "RUNNING", "k9")])  # a closed view hears nothing
    assert view.counts["running"] == 0


def test_helpers():
    assert format_duration(None) == "?" and format_duration(65) == "1:05" and format_duration(3725) == "1:02:05"
    assert trial_group({"model": "m", "task": "udpos", "realign": "none"}) == "m/udpos/none"
    with pytest.raises(ValueError, match="view mode 'fancy'"):
        SweepProgress(total=1, mode="fancy")


def test_a_failed_attempt_that_tune_retries_leaves_the_rows_and_is_listed(tmp_path):
    # Tune's max_failures: a failed attempt goes back to PENDING (on_trial_recover, not
    # on_trial_error) and runs again later. Its row must not stay on "running" meanwhile.
    clock = Clock()
    out = io.StringIO()
    (tmp_path / "t1").mkdir()
    (tmp_path / "t1" / FAILURE_FILE).write_text(json.dumps({"reason": "NameError: name 'x' is not defined"}))
    view = SweepProgress(total=2, mode="log", log=out, clock=clock, todo={"e5-small/udpos/joint": 2})
    relay = ViewRelay()
    flaky = FakeTrial("a", "RUNNING", "k1", path=str(tmp_path / "t1"))
    other = FakeTrial("b", "RUNNING", "k2", seed=1)
    with view:
        relay.on_trial_start(iteration=1, trials=[flaky, other], trial=flaky)
        relay.on_trial_start(iteration=1, trials=[flaky, other], trial=other)
        clock.now += 9
        flaky.status = "PENDING"
        relay.on_trial_recover(iteration=2, trials=[flaky, other], trial=flaky)
        rows = table_rows(view.render_text(width=160))
        text = view.render_text(width=160)
        assert view.counts == {"done": 0, "running": 1, "failed": 0} and view.pending == 1
        assert [row[3] for row in rows if row[0] == "e5-small"] == ["1"]  # only the other trial's row
        assert "retried: t1: NameError: name 'x' is not defined" in text
        clock.now += 30
        flaky.status = "RUNNING"
        relay.on_trial_start(iteration=3, trials=[flaky, other], trial=flaky)  # the second attempt
        assert len(view.running) == 2
        clock.now += 20
        flaky.status = "TERMINATED"
        relay.on_trial_complete(iteration=4, trials=[flaky, other], trial=flaky)
    assert view.durations == {"e5-small/udpos/joint": [20.0]}  # the attempt that finished, not since the first start
    lines = out.getvalue().splitlines()
    assert lines[2] == f"[0:09] retry  t1: NameError: name 'x' is not defined (log: {tmp_path / 't1' / 'error.txt'}); queued again"
    assert lines[3] == "[0:39] start  e5-small udpos joint s0"
    assert view.counts == {"done": 1, "running": 1, "failed": 0}


def test_the_readme_frame_is_cut_from_a_terminal_recording_of_the_live_view():
    # scripts/live_frame.py reads a `script` recording: frames separated by rich Live's redraw
    # (erase line, cursor up, ...), colours in between. It picks the most informative frame.
    import importlib.util

    spec = importlib.util.spec_from_file_location("live_frame", Path(__file__).parents[1] / "scripts/live_frame.py")
    live_frame = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(live_frame)
    clock = Clock()
    view = SweepProgress(total=2, mode="quiet", clock=clock)
    relay = ViewRelay()
    first, second = FakeTrial("a", "RUNNING", "k1"), FakeTrial("b", "RUNNING", "k2", seed=1)
    with view:
        relay.on_trial_start(iteration=1, trials=[first, second], trial=first)
        one_row = view.render_text()
        relay.on_trial_start(iteration=1, trials=[first, second], trial=second)
        two_rows = view.render_text()
    redraw = "\r" + "\x1b[2K\x1b[1A" * 3 + "\x1b[2K"
    recording = "Ray starting...\n\x1b[1m" + one_row + "\x1b[0m" + redraw + two_rows + redraw + one_row + "\nreport written\n"
    assert live_frame.busiest_frame(recording) == "\n".join(line.rstrip() for line in two_rows.strip("\n").splitlines())
    with pytest.raises(ValueError, match="no live-view frame"):
        live_frame.busiest_frame("plain log lines only\n")
