"""Realignment: Eq. 2 by hand, its invariances, the batch stream, and the loss through an encoder."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace

import pandas as pd
import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForTokenClassification

from trainables.encoding import encode_words
from trainables.realignment import (
    REALIGN_METHODS,
    ProjectionHead,
    RealignmentBatch,
    RealignmentBatches,
    build_realigner,
    get_realign_method,
    realignment_loss,
    realignment_step_loss,
)
from trainables.settings import Settings

E5_SMALL_PATH = os.environ.get("E5_SMALL_PATH", os.path.expanduser("~/.cache/offline-models/multilingual-e5-small"))


# --------------------------------------------------------------------------------------------
# Eq. 2


def reference_loss(vectors: list[list[float]], pairs: list[tuple[int, int]], temperature: float) -> float:
    """Eq. 2 written out term by term with Python floats (independent of the tensor code)."""

    def cosine(a: list[float], b: list[float]) -> float:
        dot = sum(x * y for x, y in zip(a, b))
        return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))

    def log_prob(query: int, target: int) -> float:  # log softmax over h != query, at target
        scores = {h: cosine(vectors[query], vectors[h]) / temperature for h in range(len(vectors)) if h != query}
        return scores[target] - math.log(sum(math.exp(v) for v in scores.values()))

    total = sum(log_prob(s, t) + log_prob(t, s) for s, t in pairs)
    return -total / (2 * len(pairs))


def test_loss_on_three_words_worked_out_by_hand():
    # a = b = (1, 0), c = (0, 1); pair (a, b). Row a: candidates b (cos 1) and c (cos 0), the word
    # itself excluded: log p(b) = 1/T - log(e^{1/T} + 1); row b is the same. So
    # L = log(1 + e^{-1/T}). With T = 1: log(1 + 1/e) = 0.31326...
    vectors = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    pairs = torch.tensor([[0, 1]])
    assert realignment_loss(vectors, pairs, 1.0).item() == pytest.approx(0.3132616875, abs=1e-6)
    for temperature in (0.1, 0.5, 2.0):
        expected = math.log(1 + math.exp(-1 / temperature))
        assert realignment_loss(vectors.double(), pairs, temperature).item() == pytest.approx(expected, rel=1e-5, abs=1e-9)


def test_loss_matches_term_by_term_reference_on_random_vectors():
    generator = torch.Generator().manual_seed(0)
    vectors = torch.randn(7, 5, generator=generator, dtype=torch.float64)
    pairs = [(0, 4), (1, 5), (2, 6), (3, 4)]  # a word may be in two pairs
    for temperature in (0.1, 1.0):
        got = realignment_loss(vectors, torch.tensor(pairs), temperature).item()
        assert got == pytest.approx(reference_loss(vectors.tolist(), pairs, temperature), rel=1e-5)


def test_loss_is_symmetric_and_invariant_to_order_and_norms():
    generator = torch.Generator().manual_seed(1)
    vectors = torch.randn(6, 4, generator=generator)
    pairs = torch.tensor([[0, 3], [1, 4], [2, 5]])
    base = realignment_loss(vectors, pairs, 0.1)
    # swapping the roles of source and target in every pair: the two terms of Eq. 2 swap
    assert realignment_loss(vectors, pairs.flip(1), 0.1).item() == pytest.approx(base.item(), rel=1e-6)
    # permuting the words (and re-indexing the pairs) and rescaling each vector (cosine)
    permutation = torch.tensor([4, 2, 0, 5, 1, 3])
    inverse = torch.argsort(permutation)
    scaled = vectors[permutation] * torch.tensor([[0.5], [3.0], [1.0], [7.0], [0.1], [2.0]])
    assert realignment_loss(scaled, inverse[pairs], 0.1).item() == pytest.approx(base.item(), rel=1e-5)
    # temperature matters: a lower temperature sharpens the softmax
    assert realignment_loss(vectors, pairs, 1.0).item() != pytest.approx(base.item(), rel=1e-3)


def test_loss_decreases_when_optimising_the_vectors():
    generator = torch.Generator().manual_seed(2)
    vectors = torch.randn(10, 8, generator=generator).requires_grad_()
    pairs = torch.tensor([[0, 5], [1, 6], [2, 7], [3, 8], [4, 9]])
    optimizer = torch.optim.Adam([vectors], lr=0.05)
    first = realignment_loss(vectors, pairs, 0.1).item()
    for _ in range(100):
        optimizer.zero_grad()
        loss = realignment_loss(vectors, pairs, 0.1)
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.2 * first
    # every word's nearest other word is now its translation (strong alignment)
    unit = torch.nn.functional.normalize(vectors.detach(), dim=-1)
    similarity = (unit @ unit.T).fill_diagonal_(-2)
    nearest = similarity.argmax(1)
    assert torch.equal(nearest[pairs[:, 0]], pairs[:, 1]) and torch.equal(nearest[pairs[:, 1]], pairs[:, 0])


def test_loss_without_pairs_is_a_differentiable_zero():
    vectors = torch.randn(4, 3, requires_grad=True)
    loss = realignment_loss(vectors, torch.zeros((0, 2), dtype=torch.long), 0.1)
    loss.backward()
    assert loss.item() == 0.0 and torch.count_nonzero(vectors.grad) == 0


def test_loss_rejects_bad_shapes_and_temperature():
    with pytest.raises(ValueError, match="realign_temperature"):
        realignment_loss(torch.randn(3, 2), torch.tensor([[0, 1]]), 0.0)
    with pytest.raises(ValueError, match=r"\(P, 2\)"):
        realignment_loss(torch.randn(3, 2), torch.tensor([0, 1]), 0.1)


def test_projection_head_is_linear_relu_linear_without_bias():
    head = ProjectionHead(32, 128)
    linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(32, 32), (32, 128)]
    assert all(m.bias is None for m in linears)
    assert any(isinstance(m, torch.nn.ReLU) for m in head.modules())
    assert head(torch.randn(5, 32)).shape == (5, 128)


def test_projection_head_is_drawn_as_the_reference_initialised_it():
    # transformers 4.18's from_pretrained gave the head (absent from the checkpoint) N(0, 0.02)
    torch.manual_seed(0)
    head = ProjectionHead(384, 128, initializer_range=0.02)
    for layer in (head.layers[0], head.layers[2]):
        assert abs(layer.weight.mean().item()) < 1e-3 and layer.weight.std().item() == pytest.approx(0.02, rel=0.02)
    assert Settings().realign_projection  # the reference's default: the paper names the framework, no ablation


def test_methods_registry_and_did_you_mean():
    assert set(REALIGN_METHODS) == {"none", "before", "joint", "l2", "linear"}
    for name in ("before", "l2", "linear"):
        assert get_realign_method(name).sequential and not get_realign_method(name).joint
    assert get_realign_method("joint").joint and not get_realign_method("joint").sequential
    assert not get_realign_method("none").joint and not get_realign_method("none").sequential
    with pytest.raises(ValueError, match="did you mean 'joint'"):
        get_realign_method("jiont")


# --------------------------------------------------------------------------------------------
# Batches


@dataclass
class Corpus:  # same attributes as pairs.AlignedCorpus
    lang: str
    en_words: list[list[str]]
    x_words: list[list[str]]
    pairs: pd.DataFrame
    head_paired: int | None = None


def toy_corpus(lang: str, n_sentences: int, without_pairs: set[int]) -> Corpus:
    """Sentence i: English e{i}_0 .. e{i}_3, target {lang}{i}_0 .. {lang}{i}_3; pairs (1, 2), (3, 0)."""
    en = [[f"e{i}_{w}" for w in range(4)] for i in range(n_sentences)]
    x = [[f"{lang}{i}_{w}" for w in range(4)] for i in range(n_sentences)]
    rows = [
        (i, s, t, en[i][s], x[i][t])
        for i in reversed(range(n_sentences))  # unsorted on purpose
        if i not in without_pairs
        for s, t in ((1, 2), (3, 0))
    ]
    frame = pd.DataFrame(rows, columns=["sentence", "src_index", "tgt_index", "src_word", "tgt_word"])
    return Corpus(lang, en, x, frame)


def toy_corpora() -> dict[str, Corpus]:
    return {
        "fr": toy_corpus("fr", 5, without_pairs={1}),
        "ar": toy_corpus("ar", 3, without_pairs=set()),
        "zh": toy_corpus("zh", 4, without_pairs={0, 2}),
    }


def batch_key(batch: RealignmentBatch) -> tuple:
    return (tuple(batch.langs), tuple(map(tuple, batch.x_words)), tuple(map(tuple, batch.pairs.tolist())))


def sentence_of(lang: str, words: list[str]) -> int:
    return int(words[0][len(lang) :].split("_")[0])


def test_batches_mix_languages_use_only_paired_sentences_and_point_at_the_pairs():
    corpora = toy_corpora()
    stream = RealignmentBatches(corpora, batch_size=6, seed=0)
    drawn = []
    for _ in range(4):
        batch = next(stream)
        assert len(batch) == 6
        for i, s, t in batch.pairs.tolist():
            lang = batch.langs[i]
            # the indexes point at the words the pair DataFrame names
            frame = corpora[lang].pairs
            match = frame[(frame.sentence == sentence_of(lang, batch.x_words[i])) & (frame.src_index == s)
                          & (frame.tgt_index == t)]
            assert len(match) == 1
            assert match.src_word.item() == batch.en_words[i][s] and match.tgt_word.item() == batch.x_words[i][t]
        drawn += [(lang, sentence_of(lang, words)) for lang, words in zip(batch.langs, batch.x_words)]
        assert sorted(batch.pairs[:, 0].tolist()) == sorted(list(range(6)) * 2)  # 2 pairs per sentence
    # By hand, the reference's stream: paired sentences ar [0, 1, 2], fr [0, 2, 3, 4], zh [1, 3], each
    # buffer-shuffled with the seed (a short stream: default_rng(0).permutation), round-robin
    # ar, fr, zh; the pass ends at draw 8, zh's turn with zh used up (datasets'
    # CyclingMultiSourcesExamplesIterable), and the next pass repeats the first.
    usable = {"ar": [0, 1, 2], "fr": [0, 2, 3, 4], "zh": [1, 3]}
    order = {lang: [ids[i] for i in np.random.default_rng(0).permutation(len(ids))] for lang, ids in usable.items()}
    one_pass = [(lang, order[lang][k // 3]) for k, lang in zip(range(8), ["ar", "fr", "zh"] * 3)]
    assert stream.pass_length == 8
    assert drawn == one_pass * 3
    assert [lang for lang, _ in drawn[:6]] == ["ar", "fr", "zh"] * 2  # every language in a batch


def test_joint_training_restarts_the_stream_each_epoch_as_the_reference():
    stream = RealignmentBatches(toy_corpora(), batch_size=2, seed=1)
    first = [batch_key(next(stream)) for _ in range(2)]
    stream.restart()
    assert [batch_key(next(stream)) for _ in range(2)] == first
    assert Settings().joint_realign_stream == "restart"


def test_a_stream_on_the_head_of_a_corpus_is_the_whole_corpus_stream_until_its_limit():
    from trainables.shuffle import SHUFFLE_BUFFER

    whole = {lang: toy_corpus(lang, SHUFFLE_BUFFER + 900, without_pairs=set()) for lang in ("es", "fr")}
    head_lines = SHUFFLE_BUFFER + 300  # the head holds these paired sentences: 300 draws a language are certain
    head = {lang: Corpus(lang, c.en_words, c.x_words, c.pairs[c.pairs.sentence < head_lines], head_paired=head_lines)
            for lang, c in whole.items()}
    full_stream, head_stream = RealignmentBatches(whole, 20, seed=3), RealignmentBatches(head, 20, seed=3)
    for _ in range(30):  # 600 draws: 300 a language
        assert batch_key(next(head_stream)) == batch_key(next(full_stream))
    with pytest.raises(ValueError, match="past the 300 that the extracted head"):
        next(head_stream)


def test_batches_are_seeded_and_resume_from_their_state():
    corpora = toy_corpora()
    first = RealignmentBatches(corpora, batch_size=4, seed=3)
    keys = [batch_key(next(first)) for _ in range(7)]
    again = RealignmentBatches(corpora, batch_size=4, seed=3)
    assert [batch_key(next(again)) for _ in range(7)] == keys
    other = RealignmentBatches(corpora, batch_size=4, seed=4)
    assert [batch_key(next(other)) for _ in range(7)] != keys

    interrupted = RealignmentBatches(corpora, batch_size=4, seed=3)
    for _ in range(3):
        next(interrupted)
    state = interrupted.state_dict()
    resumed = RealignmentBatches(corpora, batch_size=4, seed=3)
    resumed.load_state_dict(state)
    assert [batch_key(next(resumed)) for _ in range(4)] == keys[3:]
    with pytest.raises(ValueError, match="seed"):
        RealignmentBatches(corpora, batch_size=4, seed=5).load_state_dict(state)


def test_batches_reject_pairs_outside_the_sentences_and_empty_corpora():
    corpus = toy_corpus("es", 2, without_pairs=set())
    corpus.pairs.loc[0, "tgt_index"] = 9
    with pytest.raises(ValueError, match=r"'es' pair row 0: word indexes \(1, 9\) outside sentence 1"):
        RealignmentBatches({"es": corpus}, batch_size=2, seed=0)
    empty = toy_corpus("ru", 2, without_pairs={0, 1})
    with pytest.raises(ValueError, match="no word pair in any language"):
        RealignmentBatches({"ru": empty}, batch_size=2, seed=0)
    with pytest.warns(UserWarning, match="ru"):
        stream = RealignmentBatches({"ru": empty, "es": toy_corpus("es", 2, set())}, batch_size=2, seed=0)
    assert stream.langs == ["es"]


# --------------------------------------------------------------------------------------------
# Through an encoder


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(E5_SMALL_PATH)


def tiny_model(tokenizer, seed: int = 0) -> BertForTokenClassification:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=130, pad_token_id=tokenizer.pad_token_id, num_labels=3,
    )
    return BertForTokenClassification(config)


def text_batch() -> RealignmentBatch:
    return RealignmentBatch(
        langs=["es", "fr"],
        en_words=[["The", "red", "house", "is", "big"], ["I", "like", "cats"]],
        x_words=[["La", "casa", "roja", "es", "grande"], ["J'", "aime", "les", "chats"]],
        pairs=torch.tensor([[0, 1, 2], [0, 2, 1], [0, 4, 4], [1, 2, 3], [1, 1, 1]]),
    )


def test_step_loss_equals_eq2_on_separately_encoded_first_subwords(tokenizer):
    model = tiny_model(tokenizer).eval()
    settings = Settings(device="cpu", realign_layer=1)
    batch = text_batch()
    with torch.no_grad():
        got = realignment_step_loss(model.base_model, None, batch, tokenizer, settings, torch.device("cpu"))
        # by hand: encode each side alone, take each word's first subword at hidden_states[1]
        vectors, index = [], {}
        for side, sentences in (("en", batch.en_words), ("x", batch.x_words)):
            for i, words in enumerate(sentences):
                encoded = encode_words(tokenizer, [words], 96)
                hidden = model.base_model(**encoded.inputs, output_hidden_states=True).hidden_states[1][0]
                for w in range(len(words)):
                    index[(side, i, w)] = len(vectors)
                    vectors.append(hidden[encoded.first_subword[0, w]].tolist())
        pairs = [(index[("en", i, s)], index[("x", i, t)]) for i, s, t in batch.pairs.tolist()]
    assert got.item() == pytest.approx(reference_loss(vectors, pairs, 0.1), rel=1e-4)


def test_step_loss_depends_on_layer_drops_truncated_pairs_and_trains_encoder_and_head(tokenizer):
    model = tiny_model(tokenizer).eval()
    device = torch.device("cpu")
    batch = text_batch()
    losses = {
        layer: realignment_step_loss(model.base_model, None, batch, tokenizer, Settings(realign_layer=layer), device).item()
        for layer in (-1, 2, 1)
    }
    assert losses[-1] == losses[2] and losses[1] != losses[2]  # -1 is the last of hidden_states[0..2]

    # max length 5 = <s> + 3 word tokens + </s> at most: pair (0, 4, 4) loses its words
    short = Settings(realign_max_length=5)
    encoded = encode_words(tokenizer, batch.en_words + batch.x_words, 5)
    assert not encoded.word_mask[0, 4] and encoded.word_mask[0, 1]
    truncated = realignment_step_loss(model.base_model, None, batch, tokenizer, short, device)
    kept_rows = [r for r in batch.pairs.tolist() if encoded.word_mask[r[0], r[1]] and encoded.word_mask[2 + r[0], r[2]]]
    assert len(kept_rows) < len(batch.pairs)
    without = replace(batch, pairs=torch.tensor(kept_rows))
    assert truncated.item() == pytest.approx(
        realignment_step_loss(model.base_model, None, without, tokenizer, short, device).item(), rel=1e-6
    )

    with pytest.raises(ValueError, match="realign_layer=5"):
        realignment_step_loss(model.base_model, None, batch, tokenizer, Settings(realign_layer=5), device)

    head = ProjectionHead(32, 16)
    loss = realignment_step_loss(model.base_model, head, batch, tokenizer, Settings(), device)
    loss.backward()
    assert torch.isfinite(loss)
    assert model.base_model.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
    assert model.classifier.weight.grad is None  # the task head takes no part


def test_build_realigner_seeds_its_head_without_touching_the_global_rng(tokenizer):
    model = tiny_model(tokenizer)
    settings = Settings(realign_projection=True, realign_projection_dim=8, realign_batch_size=3)
    torch.manual_seed(11)
    expected_next = torch.rand(3)
    torch.manual_seed(11)
    one = build_realigner(model, tokenizer, toy_corpora(), settings, seed=5, device=torch.device("cpu"))
    assert torch.equal(torch.rand(3), expected_next)
    two = build_realigner(model, tokenizer, toy_corpora(), settings, seed=5, device=torch.device("cpu"))
    assert all(torch.equal(a, b) for a, b in zip(one.parameters(), two.parameters()))
    assert one.encoder is model.base_model and len(one.parameters()) == 2
    loss = one()
    assert torch.isfinite(loss) and one.state_dict()["batches"]["drawn"] == 3
    no_head = build_realigner(model, tokenizer, toy_corpora(), replace(settings, realign_projection=False), 5, torch.device("cpu"))
    assert no_head.parameters() == [] and no_head.state_dict()["head"] is None
