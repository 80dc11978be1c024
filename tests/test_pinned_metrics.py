"""One real trial's metrics, pinned: a refactoring must not change a number.

e5-small on real text (UD English train, es/zh test, NTREX dictionary pairs), sequential
realignment then fine-tuning, on slices small enough for seconds of CPU. Every metric the trial
reports (scores, CTL, alignment at every stage, layer, kind and direction) is compared with
`tests/pinned/udpos-before.json`. A change that is meant to change the numbers (the protocol)
regenerates that file on purpose: `PIN_METRICS_UPDATE=1 pytest tests/test_pinned_metrics.py`,
and says so in its commit.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path


from trainables.trial import run_trial

PINNED = Path(__file__).parent / "pinned" / "udpos-before.json"
NUMERIC_NOISE = 1e-6  # same code, same CPU, one thread: bit-identical; this only absorbs float printing


def flat_metrics(metrics, prefix=""):
    out = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_metrics(value, f"{name}/"))
        elif name.startswith(("score/", "ctl/", "align/")) or name in ("num_layers", "finetune_steps"):
            out[name] = float(value)
    return out


def test_one_trial_keeps_its_numbers(e5_small, shared_data, tmp_path):
    settings = dict(data_dir=str(shared_data), cache_dir=str(tmp_path), langs=["es", "zh"], epochs=1,
                    batch_size=8, micro_batch_size=8, train_subset=24, test_subset=12, parallel_subset=40,
                    align_pairs=40, realign_batch_size=8, realign_steps=3, learning_rate=1e-4, num_threads=1)
    config = dict(model="e5-small", model_source=str(e5_small), task="udpos", realign="before", pairs="dico",
                  corpus="ntrex", seed=0, settings=settings)
    got = flat_metrics(run_trial(config, None, lambda metrics, state: None))
    if os.environ.get("PIN_METRICS_UPDATE") == "1":
        PINNED.parent.mkdir(exist_ok=True)
        PINNED.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    pinned = json.loads(PINNED.read_text())
    assert sorted(got) == sorted(pinned), "the trial reports other metrics than the pinned run"
    changed = {k: (pinned[k], got[k]) for k in pinned
               if not (math.isclose(got[k], pinned[k], abs_tol=NUMERIC_NOISE)
                       or (math.isnan(got[k]) and math.isnan(pinned[k])))}
    assert not changed, f"{len(changed)} metrics moved, e.g. {dict(list(changed.items())[:5])}"
    assert got["score/en"] > 1 / 17, "the pinned trial must learn something in English"
