"""One frame of the sweep's live view, as the terminal showed it, from a `script` recording.

Usage:
    script -q -c "python -m sweep experiments/demo.py" demo.typescript   # a real terminal
    python scripts/live_frame.py demo.typescript > frame.txt

The live view (rich's `Live`) redraws in place: before each frame it moves the cursor up over
the previous one and erases it. Splitting the recording at those moves gives the frames; colours
and other control codes are dropped. The frame printed is the most informative one (the first
of equals): the most running trials, then every estimate known (no "?"), then the most trial
rows with every cell filled (step of total, phase ETA, loss): what a user sees mid-sweep.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

# rich's Live: "\r" and (erase line, cursor up) per line of the previous frame, then erase line
REDRAW = re.compile(r"\r?(?:\x1b\[2K\x1b\[1A)+\x1b\[2K")
CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")
TABLE_ROW = "│"


def frames(recording: str) -> list[str]:
    """The text of each redraw of the recording, control codes removed."""
    return [CONTROL.sub("", part) for part in REDRAW.split(recording)]


def trial_rows(frame: str) -> list[list[str]]:
    """The cells of each trial row of the frame's "running trials" table (none without it)."""
    if "running trials" not in frame:
        return []
    table = frame.split("running trials", 1)[1].splitlines()
    return [line.strip().strip(TABLE_ROW).split(TABLE_ROW) for line in table if line.lstrip().startswith(TABLE_ROW)]


def informativeness(frame: str) -> tuple[int, bool, int]:
    """How much a frame shows: running rows, whether every ETA is known, rows with every cell filled."""
    rows = trial_rows(frame)
    return len(rows), "?" not in frame, sum(1 for cells in rows if all(cell.strip() for cell in cells))


def busiest_frame(recording: str) -> str:
    """The most informative frame (`informativeness`), trimmed to the view's own lines."""
    candidates = [f for f in frames(recording) if "sweep" in f and "done" in f]
    if not candidates:
        raise ValueError("no live-view frame in the recording (was it run in a terminal, without --log?)")
    best = max(candidates, key=informativeness)  # max keeps the first of equals
    lines = best.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "sweep")
    end = max(i for i, line in enumerate(lines) if line.strip().startswith(("└", "retried:", "failed:")))
    return "\n".join(line.rstrip() for line in lines[start : end + 1])


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        print("usage: python scripts/live_frame.py RECORDING", file=sys.stderr)
        return 2
    path = Path(argv[0])
    try:
        print(busiest_frame(path.read_text(encoding="utf-8", errors="replace")))
    except (OSError, ValueError) as error:
        print(f"error: {path}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
