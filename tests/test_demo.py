"""The README's main job end to end: experiments/demo.py through the CLI, then the analysis files."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAPER_TABLES = ["table2", "table3", "table4", "table5", "table6", "table8", "table9", "table10", "table11",
                "table12", "table13", "table14", "table15", "table16", "table17"]
DEMO_TIMEOUT_S = 900


def test_demo_runs_every_stage_and_writes_the_report(tmp_path):
    done = subprocess.run([sys.executable, "-m", "sweep", "experiments/demo.py", "--storage", str(tmp_path),
                           "--no-live"], cwd=ROOT, capture_output=True, text=True, timeout=DEMO_TIMEOUT_S,
                          # a Ray of its own: ray.init() without an address joins a cluster already
                          # running on the machine (Ray 2.x reads /tmp/ray/ray_current_cluster)
                          env={**os.environ, "RAY_ADDRESS": "local"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "22 trials finished, 0 failed" in done.stdout
    out = tmp_path / "demo" / "analysis"
    for name in ("report.md", "trials.csv", "trials.parquet"):
        assert (out / name).is_file(), name
    for table in PAPER_TABLES:
        for suffix in (".md", ".tex", ".csv"):
            assert (out / "tables" / f"{table}{suffix}").is_file(), table + suffix
    for figure in range(1, 6):
        for suffix in (".png", ".pdf"):
            assert (out / "figures" / f"figure{figure}{suffix}").is_file(), figure
    import pandas as pd

    trials = pd.read_parquet(out / "trials.parquet")
    assert len(trials) == 22
    assert set(trials["realign"]) == {"none", "before", "joint"}
    assert set(trials["pairs"]) == {"dico", "fastalign", "awesome"}
    assert set(trials["task"]) == {"udpos", "wikiann", "xnli"}
    assert trials["score/en"].between(0, 1).all()
