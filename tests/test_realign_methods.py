"""Realignment methods as registry entries: the l2 (Cao et al. 2020) and linear (Wang et al. 2019)
objectives by hand, through a tiny encoder, in a trial that resumes, and in a toy sweep whose
results the analysis tabulates by method."""
from __future__ import annotations

import io

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, BertForTokenClassification

from trainables.encoding import encode_words
from trainables.realignment import (
    REALIGN_METHODS,
    LanguageMaps,
    RealignmentBatch,
    encode_realignment_batch,
    get_realign_method,
    input_language,
    install_language_maps,
    l2_alignment_loss,
    linear_mapping_loss,
    orthogonalise_,
    source_regulariser,
)
from trainables.settings import Settings
from trainables.trial import run_trial

CPU = torch.device("cpu")


# --------------------------------------------------------------------------------------------
# The losses on tensors small enough to work out by hand


def test_l2_loss_is_the_mean_squared_distance_of_the_pairs():
    # pair 0: (1, 2) vs (1, 0): 0 + 4 = 4; pair 1: (3, 0) vs (0, 4): 9 + 16 = 25; mean 14.5
    src = torch.tensor([[1.0, 2.0], [3.0, 0.0]])
    tgt = torch.tensor([[1.0, 0.0], [0.0, 4.0]])
    assert l2_alignment_loss(src, tgt).item() == pytest.approx(14.5)
    empty = torch.zeros(0, 2, requires_grad=True)
    loss = l2_alignment_loss(empty, empty)
    loss.backward()
    assert loss.item() == 0.0 and empty.grad is not None
    with pytest.raises(ValueError, match="must both be"):
        l2_alignment_loss(src, tgt[:1])


def test_source_regulariser_averages_over_the_real_subwords_only():
    # one sentence of 3 positions, the last one padding: (1^2 + 2^2) / 2 = 2.5, whatever the pad holds
    current = torch.tensor([[[1.0], [2.0], [50.0]]])
    original = torch.zeros(1, 3, 1)
    mask = torch.tensor([[1, 1, 0]])
    assert source_regulariser(current, original, mask).item() == pytest.approx(2.5)
    # two dimensions: ||(1, 1) - (0, 3)||^2 = 1 + 4 = 5 at the only real position
    assert source_regulariser(torch.tensor([[[1.0, 1.0]]]), torch.tensor([[[0.0, 3.0]]]),
                              torch.tensor([[1]])).item() == pytest.approx(5.0)


def test_linear_loss_maps_the_target_side_and_averages_over_hidden_states():
    # state 0: identity map, s = t = (1, 0): 0. State 1: the swap map sends t = (0, 1) to (1, 0),
    # against s = (0, 1): (0 - 1)^2 + (1 - 0)^2 = 2. Mean over the 2 states: 1.
    src = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    tgt = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    weight = torch.stack([torch.eye(2), torch.tensor([[0.0, 1.0], [1.0, 0.0]])]).requires_grad_(True)
    loss = linear_mapping_loss(src, tgt, weight)
    assert loss.item() == pytest.approx(1.0)
    loss.backward()
    assert weight.grad[0].abs().sum() == 0 and weight.grad[1].abs().sum() > 0  # state 0 already fits


def test_orthogonalisation_step_by_hand():
    # W = 2I: (1 + b) 2 - b 8 = 2 - 6b; an orthogonal matrix is a fixed point
    weight = torch.stack([2 * torch.eye(3), torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])])
    rotation = weight[1].clone()
    orthogonalise_(weight, 0.01)
    assert torch.allclose(weight[0], (2 - 6 * 0.01) * torch.eye(3))
    assert torch.allclose(weight[1], rotation)


# --------------------------------------------------------------------------------------------
# Through a tiny encoder


@pytest.fixture(scope="module")
def tokenizer(toy_assets):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(toy_assets[1]))


def tiny_model(tokenizer, cls=BertForTokenClassification, seed: int = 0):
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=130, pad_token_id=tokenizer.pad_token_id, num_labels=3,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    return cls(config)


def text_batch() -> RealignmentBatch:
    return RealignmentBatch(
        langs=["es", "fr"],
        en_words=[["the", "red", "house"], ["i", "like", "cats"]],
        x_words=[["la", "casa", "roja"], ["j", "aime", "les", "chats"]],
        pairs=torch.tensor([[0, 1, 2], [0, 2, 1], [1, 2, 3]]),
    )


def vectors_one_by_one(model, tokenizer, batch: RealignmentBatch):
    """Each pair's (English, target) first-subword vectors at every hidden state, each sentence
    encoded alone: (S, P, H) twice."""
    def states(words):
        encoded = encode_words(tokenizer, [words], 96)
        hidden = torch.stack(model.base_model(**encoded.inputs, output_hidden_states=True).hidden_states)
        return hidden[:, 0], encoded.first_subword[0]

    src, tgt = [], []
    for i, s, t in batch.pairs.tolist():
        en, en_first = states(batch.en_words[i])
        x, x_first = states(batch.x_words[i])
        src.append(en[:, en_first[s]])
        tgt.append(x[:, x_first[t]])
    return torch.stack(src, 1), torch.stack(tgt, 1)


def test_l2_objective_is_the_pair_distance_until_the_encoder_moves(tokenizer):
    model = tiny_model(tokenizer).eval()
    settings = Settings(device="cpu")
    objective = REALIGN_METHODS["l2"].objective(model, settings, 0)
    batch = text_batch()
    encoded = encode_realignment_batch(batch, tokenizer, settings)
    loss = objective.loss(model.base_model, encoded, settings, CPU)
    with torch.no_grad():
        src, tgt = vectors_one_by_one(model, tokenizer, batch)
    by_hand = (src[-1] - tgt[-1]).pow(2).sum(-1).mean()  # last layer; the copy is still equal
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-4)
    loss.backward()
    assert model.base_model.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in objective.original.parameters())  # the frozen copy
    assert objective.trainable() == []  # nothing of its own to optimise: the encoder is trained

    with torch.no_grad():  # the encoder moves away from the pre-trained copy: the regulariser grows
        torch.manual_seed(1)
        for p in model.base_model.encoder.parameters():
            p.add_(0.3 * torch.randn_like(p))
    moved = objective.loss(model.base_model, encoded, settings, CPU)
    with torch.no_grad():
        src, tgt = vectors_one_by_one(model, tokenizer, batch)
    assert moved.item() > (src[-1] - tgt[-1]).pow(2).sum(-1).mean().item() + 1e-3


def test_linear_objective_trains_only_the_maps_of_the_batch_languages(tokenizer):
    model = tiny_model(tokenizer)
    settings = Settings(device="cpu", langs=("es", "fr", "ru"))
    method = get_realign_method("linear")
    method.prepare_model(model, settings)
    objective = method.objective(model, settings, 0)
    batch = text_batch()
    loss = objective.loss(model.base_model, encode_realignment_batch(batch, tokenizer, settings), settings, CPU)
    with torch.no_grad():  # identity maps (orthogonal: the step leaves them): plain squared distances
        src, tgt = vectors_one_by_one(model, tokenizer, batch)
        es = (src[:, :2] - tgt[:, :2]).pow(2).sum(-1).mean(1).mean()  # pairs of sentence 0 (es)
        fr = (src[:, 2:] - tgt[:, 2:]).pow(2).sum(-1).mean(1).mean()
    assert loss.item() == pytest.approx(((es + fr) / 2).item(), rel=1e-4)
    loss.backward()
    grad = model.language_maps.weight.grad
    assert grad[0].abs().sum() > 0 and grad[1].abs().sum() > 0 and grad[2].abs().sum() == 0  # no ru pair
    assert all(p.grad is None for p in model.base_model.parameters())  # the encoder is frozen
    assert objective.trainable() == [model.language_maps.weight]


def test_language_maps_change_the_target_language_outputs_only(tokenizer):
    for cls in (BertForTokenClassification, BertForSequenceClassification):  # the pooler reads mapped states
        model = tiny_model(tokenizer, cls).eval()
        inputs = encode_words(tokenizer, [["la", "casa"]], 16).inputs
        before = model(**inputs, output_hidden_states=True)
        install_language_maps(model, Settings(langs=("es", "fr")))
        with input_language(model, "es"):  # identity maps: exactly the same numbers
            same = model(**inputs, output_hidden_states=True)
        assert torch.equal(same.logits, before.logits)
        rotation = torch.linalg.qr(torch.randn(16, 16))[0]
        with torch.no_grad():
            model.language_maps.weight[0] = rotation  # es, every hidden state
        with input_language(model, "es"):
            mapped = model(**inputs, output_hidden_states=True)
        for plain, got in zip(before.hidden_states, mapped.hidden_states):
            assert torch.allclose(got, plain @ rotation.T, atol=1e-6)
        if cls is BertForTokenClassification:
            assert torch.allclose(mapped.logits, model.classifier(before.hidden_states[-1] @ rotation.T), atol=1e-6)
        assert not torch.allclose(mapped.logits, before.logits)
        for lang in (None, "fr", "en"):  # English, or a language whose map is still the identity
            with input_language(model, lang):
                assert torch.equal(model(**inputs).logits, before.logits)
        # the maps are part of the model's state: a fresh model with its maps installed loads it
        fresh = tiny_model(tokenizer, cls, seed=1).eval()
        install_language_maps(fresh, Settings(langs=("es", "fr")))
        fresh.load_state_dict(model.state_dict())
        with input_language(fresh, "es"):
            assert torch.allclose(fresh(**inputs).logits, mapped.logits)
    assert isinstance(model.language_maps, LanguageMaps)
    with pytest.raises(ValueError, match="no linear map for language 'zh'"):
        model.language_maps.index("zh")


def test_methods_say_when_they_run_and_refuse_an_inconsistent_entry():
    from trainables.realignment import RealignMethod

    schedules = {name: method.schedule for name, method in REALIGN_METHODS.items()}
    assert schedules == {"none": "none", "before": "before", "joint": "joint", "l2": "before", "linear": "before"}
    assert REALIGN_METHODS["none"].objective is None
    with pytest.raises(ValueError, match="schedule 'after'"):
        RealignMethod("x", "after", "?", REALIGN_METHODS["l2"].objective)
    with pytest.raises(ValueError, match="objective is needed"):
        RealignMethod("x", "before", "?")


# --------------------------------------------------------------------------------------------
# In a trial and in a sweep (the toy world)


def toy_config(toy_assets, cache, realign: str, **settings):
    data, model = toy_assets
    values = dict(data_dir=str(data), cache_dir=str(cache), langs=["es", "zh"], epochs=2, batch_size=16,
                  micro_batch_size=16, learning_rate=1e-3, train_subset=48, test_subset=16, align_pairs=60,
                  realign_steps=4, realign_batch_size=8, num_threads=1)
    values.update(settings)
    return dict(model="toy", model_source=str(model), task="udpos", realign=realign, pairs="dico", corpus="toy",
                seed=0, settings=values)


def _copy(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def test_linear_trial_resumes_with_its_maps_and_they_change_alignment(toy_assets, tmp_path):
    config = toy_config(toy_assets, tmp_path, "linear", learning_rate=1e-2)
    checkpoints = []
    uninterrupted = run_trial(config, None, lambda m, s: s is not None and checkpoints.append(_copy(s)))
    assert set(uninterrupted["align"]) == {"pretrained", "realigned", "finetuned"}
    realigned_state = next(c for c in checkpoints if c.get("realigned_model") is not None)
    weights = realigned_state["realigned_model"]["language_maps.weight"]
    assert weights.shape == (2, 3, 32, 32) and not torch.allclose(weights, torch.eye(32).expand_as(weights))
    # the encoder did not move during realignment: only the maps did, and they change the alignment
    pretrained, realigned = uninterrupted["align"]["pretrained"], uninterrupted["align"]["realigned"]
    assert pretrained != realigned
    after_first_epoch = next(c for c in checkpoints if (c.get("in_progress") or {}).get("phase") == "finetune")
    resumed = run_trial(config, after_first_epoch, lambda m, s: None)
    assert resumed["resumed_at"] == "finetune:1"
    assert resumed["score"] == uninterrupted["score"]
    assert resumed["align"]["finetuned"] == uninterrupted["align"]["finetuned"]


def test_toy_sweep_runs_l2_and_linear_and_the_analysis_tables_them_by_method(toy_assets, tmp_path):
    pytest.importorskip("ray")
    from analysis import results, tables
    from sweep.experiment import build_experiment
    from sweep.runner import run_sweep

    data, model = toy_assets
    config = toy_config(toy_assets, tmp_path / "unused", "l2")["settings"]
    config.pop("cache_dir")
    experiment = build_experiment(dict(
        name="methods", models={"toy-bert": dict(source=str(model), cpu=1, gpu=0)}, settings=config,
        grids=[dict(model=["toy-bert"], task=["udpos"], realign=["l2", "linear"], pairs=["dico"], corpus=["toy"],
                    seed=[0])],
    ))
    import ray

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        grid = run_sweep(experiment, tmp_path, "methods", live=False)
    finally:
        ray.shutdown()
    assert len(grid) == 2 and not grid.errors
    trials = results.load_experiment([tmp_path / "methods"]).trials
    assert sorted(trials["realign"]) == ["l2", "linear"]
    for _, row in trials.iterrows():
        assert 0.0 <= row["align/realigned/strong/en-x/es/2"] <= 1.0 and 0.0 <= row["score/es"] <= 1.0
    table = tables.controlled_table(trials, "udpos", "toy")
    cells = table[(table["lang"] == "es") & (table["model"] == "toy-bert")]
    by_method = {(r.realign, r.pairs): r for r in cells.itertuples()}
    assert {("l2", "dico"), ("linear", "dico")} <= set(by_method)
    for method in ("l2", "linear"):
        expected = float(trials.loc[trials["realign"] == method, "score/es"].iloc[0])
        assert by_method[(method, "dico")].mean == pytest.approx(100 * expected)  # tables are in percent
