"""The trial, without Ray: every task x realign method end to end on real data with e5-small,
and realignment raising strong alignment at the realigned layer."""
from __future__ import annotations

import math

import pandas.testing
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


def test_progress_is_rate_limited_but_news_is_sent_at_once():
    from trainables.trial import ThrottledProgress

    now = [0.0]
    sent = []
    units = ThrottledProgress(lambda *row: sent.append(row), every=5.0, clock=lambda: now[0])
    units("load", "pairs es 1/2", 0, 0)        # t=0: first report
    units("load", "pairs es 1/2", 0, 400)      # t=0: the total is news
    now[0] = 2.0
    units("load", "pairs es 1/2", 100, 400)    # 2 s after the last: held back
    now[0] = 5.5
    units("load", "pairs es 1/2", 300, 400)    # 5.5 s: sent
    units("load", "pairs es 2/2", 0, 0)        # the next language is news
    now[0] = 20.0
    units("load", "pairs es 2/2", 0, 0)        # nothing new to say, however long since
    on_progress = units.phase("measure-pretrained")
    on_progress(0, 64)                         # another phase is news
    now[0] = 21.0
    on_progress(64, 64)                        # 1 s after: held back (the next phase's report follows)
    assert sent == [("load", "pairs es 1/2", 0, 0), ("load", "pairs es 1/2", 0, 400),
                    ("load", "pairs es 1/2", 300, 400), ("load", "pairs es 2/2", 0, 0),
                    ("measure-pretrained", "", 0, 64)]


def toy_trial_config(toy_assets, cache, realign="none", **overrides):
    data, model = toy_assets
    settings = dict(data_dir=str(data), cache_dir=str(cache), langs=["es", "zh"], epochs=1, batch_size=16,
                    micro_batch_size=8, learning_rate=1e-3, align_pairs=100, num_threads=1)
    settings.update(overrides)
    return dict(model="toy", model_source=str(model), task="udpos", realign=realign, pairs="dico", corpus="toy",
                seed=0, settings=settings)


def test_measure_alignment_reports_sentences_encoded_up_to_the_total(toy_assets, tmp_path):
    from transformers import AutoModel, AutoTokenizer

    from trainables.alignment import measure_alignment
    from trainables.pairs import PairContext, extract_pairs
    from trainables.settings import make_settings

    data, model_dir = toy_assets
    settings = make_settings(dict(data_dir=str(data), cache_dir=str(tmp_path), langs=["es", "zh"], align_pairs=60,
                                  align_batch_size=8))
    context = PairContext.from_settings(settings)
    corpora = {lang: extract_pairs("toy", lang, "dico", context=context) for lang in settings.langs}
    tokenizer, model = AutoTokenizer.from_pretrained(model_dir), AutoModel.from_pretrained(model_dir)
    calls = []
    table, used = measure_alignment(model, tokenizer, corpora, settings, return_pairs=True,
                                    on_progress=lambda done, total: calls.append((done, total)))
    # every sampled pair has a vector in the toy world, so the sentences of the pairs used are
    # those sampled; each is encoded once per side, `align_batch_size` at a time
    per_lang = used.groupby("lang")["sentence"].nunique()
    total = 2 * int(per_lang.sum())
    assert set(used["lang"]) == {"es", "zh"} and total > 2 * 8
    assert calls[0] == (0, total) and calls[-1] == (total, total)
    assert all(t == total for _, t in calls)
    steps = [b - a for (a, _), (b, _) in zip(calls, calls[1:])]
    assert all(0 < step <= 8 for step in steps)
    batches = sum(-(-int(n) // 8) for n in per_lang) * 2  # ceil(sentences / batch) per side
    assert len(steps) == batches
    plain = measure_alignment(model, tokenizer, corpora, settings)
    pandas.testing.assert_frame_equal(plain, table)  # following progress changes nothing measured


def test_long_phases_report_units_done_of_a_known_total(toy_assets, tmp_path, monkeypatch):
    import trainables.trial as trial

    monkeypatch.setattr(trial, "PROGRESS_REPORT_SECONDS", 1e9)  # only news is reported: no timing in the test
    reports = []
    config = toy_trial_config(toy_assets, tmp_path, "before", realign_steps=4, realign_batch_size=8)
    final = run_trial(config, None, lambda metrics, state: reports.append(dict(metrics)))
    assert set(final["align"]) == {"pretrained", "realigned", "finetuned"}
    counted = {}
    for row in reports:
        assert {"phase", "step", "total", "part"} <= set(row)
        if row["total"]:
            counted.setdefault(row["phase"], []).append((row["part"], row["step"], row["total"]))
    # pair extraction: each language's sentence pairs, counted by the pair source (its first
    # count is news, whenever it comes; the toy corpus is done before a second one)
    assert [part for part, _, _ in counted["load"]] == ["pairs es 1/2", "pairs zh 2/2"]
    assert all(0 < step == total for _, step, total in counted["load"])
    parts = [row["part"] for row in reports if row["phase"] == "load"]
    assert parts[:2] == ["", "pairs es 1/2"]  # the language is shown before its units are counted
    # measurement: sentences encoded, 0 of a known total first (later counts are no news)
    for phase in ("measure-pretrained", "measure-realigned", "measure-finetuned"):
        assert len(counted[phase]) == 1 and counted[phase][0][:2] == ("", 0) and counted[phase][0][2] > 0, phase
    assert counted["measure-pretrained"][0][2] == counted["measure-finetuned"][0][2]  # the same sample


def test_a_trial_reads_the_head_of_each_corpus_its_streams_need():
    from trainables.realignment import get_realign_method
    from trainables.settings import Settings
    from trainables.trial import paired_sentences_read

    # POS at the paper's size: 12,543 sentences, batch 32 -> 392 steps an epoch, 1,960 in 5 epochs
    paper = Settings()
    before, joint, none = (get_realign_method(name) for name in ("before", "joint", "none"))
    # sequential: 1,960 steps x 16 = 31,360 sentence pairs, 6,272 a language, + the shuffle's 10,000
    assert paired_sentences_read(before, 12_543, paper) == 6_272 + 10_000
    # joint restarts its stream each epoch: one epoch's 392 x 16 / 5 = 1,255 < the alignment sample's 4 x 1,000
    assert paired_sentences_read(joint, 12_543, paper) == 4_000 + 10_000
    continued = Settings(joint_realign_stream="continue")
    assert paired_sentences_read(joint, 12_543, continued) == 6_272 + 10_000
    assert paired_sentences_read(none, 12_543, paper) == 4_000 + 10_000
    # XNLI, 2 epochs: 12,272 x 2 = 24,544 steps, 392,704 sentence pairs, 78,541 a language (rounded up)
    assert paired_sentences_read(before, 392_702, Settings(epochs=2)) == 78_541 + 10_000


def test_the_alignment_sample_of_a_head_is_refused_past_what_the_head_makes_certain():
    import numpy as np
    import pandas as pd

    from trainables.alignment import sample_pairs
    from trainables.shuffle import SHUFFLE_BUFFER

    n = SHUFFLE_BUFFER + 200
    pairs = pd.DataFrame({"sentence": np.arange(n), "src_index": 0, "tgt_index": 0, "src_word": "a", "tgt_word": "b"})
    whole = sample_pairs(pairs, 40, seed=42)
    head = sample_pairs(pairs, 40, seed=42, head_paired=n)  # 200 certain draws; 51 drawn for 40 sentences
    pandas.testing.assert_frame_equal(head, whole)
    with pytest.raises(ValueError, match="extract a longer head"):
        sample_pairs(pairs, 200, seed=42, head_paired=n)
