"""The trial, without Ray: every task x realign method end to end on real data with e5-small,
and realignment raising strong alignment at the realigned layer."""
from __future__ import annotations

import math

import pytest

from trainables.trial import run_trial

LANGS = ["es"]


def trial_config(e5_small, shared_data, cache, task, realign, **overrides):
    settings = dict(data_dir=str(shared_data), cache_dir=str(cache), langs=LANGS, epochs=1, batch_size=8,
                    micro_batch_size=8, train_subset=16, test_subset=8, parallel_subset=60, align_pairs=30,
                    realign_batch_size=8, num_threads=2)
    settings.update(overrides)
    return dict(model="e5-small", model_source=str(e5_small), task=task, realign=realign, pairs="dico",
                corpus="ntrex", seed=0, settings=settings)


@pytest.mark.parametrize("task", ["udpos", "wikiann", "xnli"])
@pytest.mark.parametrize("realign", ["none", "before", "joint"])
def test_each_task_and_method_end_to_end(e5_small, shared_data, tmp_path_factory, task, realign):
    cache = tmp_path_factory.getbasetemp() / "trial-cache"  # shared across these trials, as in a sweep
    reports = []
    final = run_trial(trial_config(e5_small, shared_data, cache, task, realign), None,
                      lambda metrics, state: reports.append((dict(metrics), state is not None)))
    stages = {"pretrained", "finetuned"} | ({"realigned"} if realign == "before" else set())
    assert set(final["align"]) == stages
    for stage in stages:
        for kind in ("strong", "weak"):
            for direction in ("en-x", "x-en"):
                layers = final["align"][stage][kind][direction]["es"]
                assert sorted(map(int, layers)) == list(range(13))
                assert all(0.0 <= v <= 1.0 for v in layers.values())
        strong, weak = final["align"][stage]["strong"], final["align"][stage]["weak"]
        for direction in ("en-x", "x-en"):  # strong search has more candidates: never more accurate
            assert all(strong[direction]["es"][l] <= weak[direction]["es"][l] for l in strong[direction]["es"])
    assert set(final["score"]) == {"en", "es"} and all(0 <= v <= 1 for v in final["score"].values())
    en, es = final["score"]["en"], final["score"]["es"]
    assert math.isnan(final["ctl"]["es"]) if en == 0 else final["ctl"]["es"] == pytest.approx((es - en) / en)
    assert any(with_state for _, with_state in reports), "no checkpoint was handed out"
    assert reports[-1][0]["phase"] == "done"


def test_resuming_from_a_checkpoint_gives_the_same_result(toy_assets, tmp_path):
    # Resumption is mechanics, not language: the generated toy world and its 2-layer model suffice.
    data, model = toy_assets
    config = dict(model="toy", model_source=str(model), task="udpos", realign="joint", pairs="dico", corpus="toy",
                  seed=0, settings=dict(data_dir=str(data), cache_dir=str(tmp_path), langs=["es", "zh"], epochs=2,
                                        batch_size=16, micro_batch_size=8, learning_rate=1e-3, align_pairs=100,
                                        num_threads=1))
    checkpoints = []
    uninterrupted = run_trial(config, None, lambda m, s: s is not None and checkpoints.append(_copy(s)))
    after_first_epoch = next(c for c in checkpoints if c["in_progress"]["state"]["epoch"] == 1)
    resumed = run_trial(config, after_first_epoch, lambda m, s: None)
    assert resumed["resumed_at"] == "finetune:1" and resumed["trial_starts"] == 2
    assert resumed["score"] == uninterrupted["score"]
    assert resumed["align"]["finetuned"] == uninterrupted["align"]["finetuned"]


def _copy(state):
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)  # what the engine does: the live tensors are frozen at that moment
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def test_before_realignment_raises_strong_alignment_at_the_realigned_layer(e5_small, shared_data, tmp_path):
    # Arabic has the most room: e5-small's last-layer strong en-ar alignment is ~0.6 on NTREX.
    config = trial_config(e5_small, shared_data, tmp_path, "udpos", "before", parallel_subset=150, align_pairs=150,
                          realign_steps=16, realign_batch_size=8, realign_max_length=64, learning_rate=1e-4)
    config["settings"]["langs"] = ["ar"]
    final = run_trial(config, None, lambda m, s: None)
    layer = "12"  # realign_layer=-1: the last layer's output, hidden_states[12]
    for direction in ("en-x", "x-en"):
        before = final["align"]["pretrained"]["strong"][direction]["ar"][layer]
        after = final["align"]["realigned"]["strong"][direction]["ar"][layer]
        assert after > before + 0.05, (direction, before, after)
