"""Alignment measurement: hand-computed nearest-neighbour cases, then real text with e5-small."""
from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from trainables.alignment import (
    DUMP_COLUMNS,
    RESULT_COLUMNS,
    alignment_accuracy,
    alignment_metrics,
    before_finetuning,
    correct_predictions,
    main,
    measurable_pairs,
    measure_alignment,
    sample_pairs,
    shuffled_positions,
    word_vectors_all_layers,
    words_present,
)
from trainables.pairs import AlignedCorpus
from trainables.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT.parent / "shared" / "data"
E5_SMALL = Path(os.environ.get("E5_SMALL_PATH", Path.home() / ".cache/offline-models/multilingual-e5-small"))


# --------------------------------------------------------------------------------------------
# Hand-computed nearest-neighbour search


def at_angles(degrees: list[float], norms: list[float] | None = None) -> torch.Tensor:
    """2D vectors at the given angles; cosine between two of them = cos(angle difference)."""
    radians = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180
    vectors = torch.stack([torch.cos(radians), torch.sin(radians)], dim=-1)
    if norms is not None:  # cosine ignores length: scaled vectors must give the same answers
        vectors = vectors * torch.tensor(norms, dtype=torch.float64).unsqueeze(-1)
    return vectors.float()


# Layer 0: src s0=0°, s1=10°, s2=90°; tgt t0=-15°, t1=25°, t2=100°.
#   en-x weak: s0 -> t0 (15° vs 25°), s1 -> t1 (15° vs 25°), s2 -> t2: 3/3.
#   en-x strong: s0's nearest is s1 (10° < 15°), s1's is s0: wrong; s2 right: 1/3.
#   x-en weak: t0 -> s0 (15°), t1 -> s1 (15°), t2 -> s2 (10°): 3/3.
#   x-en strong: other tgt words are >= 40° away: 3/3.
# Layer 1: src s0=0°, s1=50°, s2=120°; tgt t0=30°, t1=35°, t2=180°.
#   en-x weak: s0 -> t0 (30° < 35°), s1 -> t1 (15° < 20°), s2 -> t2 (60° < 85°): 3/3.
#   en-x strong: other src words are further (50°, 50°, 70°): 3/3.
#   x-en weak: t0's nearest src is s1 (20° < 30°): wrong; t1, t2 right: 2/3.
#   x-en strong: t0 wrong already, t1's nearest is t0 (5° < 15°): wrong; t2 right: 1/3.
HAND_SRC = torch.stack([at_angles([0, 10, 90], [1, 3, 0.5]), at_angles([0, 50, 120], [2, 1, 7])])
HAND_TGT = torch.stack([at_angles([-15, 25, 100], [4, 1, 1]), at_angles([30, 35, 180], [1, 0.2, 1])])
HAND_EXPECTED = {
    ("weak", "en-x"): [1, 1],
    ("strong", "en-x"): [1 / 3, 1],
    ("weak", "x-en"): [1, 2 / 3],
    ("strong", "x-en"): [1, 1 / 3],
}


def test_hand_computed_strong_and_weak_both_directions_every_layer() -> None:
    result = alignment_accuracy(HAND_SRC, HAND_TGT)
    assert set(result) == set(HAND_EXPECTED)
    for key, expected in HAND_EXPECTED.items():
        assert result[key].shape == (2,), key
        assert result[key].tolist() == pytest.approx(expected), key


@pytest.mark.parametrize("chunk", [1, 2, 3, 100])
def test_chunking_over_queries_changes_nothing(chunk: int) -> None:
    result = alignment_accuracy(HAND_SRC, HAND_TGT, chunk=chunk)
    for key, expected in HAND_EXPECTED.items():
        assert result[key].tolist() == pytest.approx(expected), (key, chunk)


def test_ties_go_to_the_first_candidate() -> None:
    # s0 = s1 = t0 = t1 (same word type, same position at layer 0), s2 = t2 elsewhere.
    # en-x weak: s0 sees t0, t1 at cosine 1: argmax takes index 0 = t0, right; s1 also gets t0,
    #   wrong; s2 right: 2/3 (counting ties as right would give 3/3).
    # en-x strong: candidates [t0, t1, t2, s0, s1, s2]; s0 ties t0 (index 0) with s1 (index 4):
    #   the translation side comes first, right; s1 gets t0, wrong; s2 right: 2/3.
    src = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])
    tgt = src.clone()
    correct = correct_predictions(src, tgt)
    for direction in ("en-x", "x-en"):
        assert correct[("weak", direction)].tolist() == [[True, False, True]], direction
        assert correct[("strong", direction)].tolist() == [[True, False, True]], direction
    # the order decides who wins: put the twin pair 1 first and it is pair 1 that is right
    order = torch.tensor([1, 0, 2])
    permuted = correct_predictions(src[:, order], tgt[:, order])
    assert permuted[("weak", "en-x")].tolist() == [[True, False, True]]  # rows now 1, 0, 2


def test_tie_between_a_wrong_translation_and_the_right_one_goes_to_the_lower_index() -> None:
    # t0 = t1 = (1, 0); s0 = (0.8, 0.6), s1 = (0.6, 0.8) both closest to the twins (tie).
    # en-x weak: s0 -> t0 (index 0) right, s1 -> t0 wrong. x-en weak: t0 and t1 both see
    # s0 first (cos 0.8 > 0.6): t0 right, t1 wrong; t2 / s2 = (0, -1) pair is unambiguous.
    src = torch.tensor([[[0.8, 0.6], [0.6, 0.8], [0.0, -1.0]]])
    tgt = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, -1.0]]])
    result = alignment_accuracy(src, tgt)
    assert result[("weak", "en-x")].tolist() == pytest.approx([2 / 3])
    assert result[("weak", "x-en")].tolist() == pytest.approx([2 / 3])


def test_self_similarity_is_zero_not_excluded() -> None:
    # Angles: s0 0°, s1 210°; t0 100°, t1 250°. Every cosine seen by s0 and t0 is negative.
    # en-x: s0 -> t0 (cos 100° = -.17 > cos 250° = -.34): weak right. Strong: its own entry is
    #   0 > -.17, so the search finds s0 itself: wrong (excluding the query would make it right).
    #   s1 -> t1 (40°, .77), its own side s0 (150°, -.87) and itself 0: right both ways.
    # x-en: t0 -> s0 (100°) beats s1 (110°): weak right, strong wrong (itself 0); t1 right.
    src = at_angles([0, 210])[None]
    tgt = at_angles([100, 250])[None]
    result = alignment_accuracy(src, tgt)
    for direction in ("en-x", "x-en"):
        assert result[("weak", direction)].tolist() == pytest.approx([1.0]), direction
        assert result[("strong", direction)].tolist() == pytest.approx([0.5]), direction


def reference_accuracy(src: torch.Tensor, tgt: torch.Tensor) -> dict[tuple[str, str], list[float]]:
    """The reference's search (retrieval.evaluate_alignment_with_cosim), one query at a time."""
    out: dict[tuple[str, str], list[float]] = {}
    for direction, (queries, answers) in {"en-x": (src, tgt), "x-en": (tgt, src)}.items():
        weak_layers, strong_layers = [], []
        for layer in range(src.shape[0]):
            q = torch.nn.functional.normalize(queries[layer], dim=-1)
            a = torch.nn.functional.normalize(answers[layer], dim=-1)
            n = q.shape[0]
            weak = strong = 0
            for i in range(n):
                to_answers = [float(q[i] @ a[j]) for j in range(n)]
                to_both = to_answers + [0.0 if j == i else float(q[i] @ q[j]) for j in range(n)]
                weak += max(range(n), key=lambda j: (to_answers[j], -j)) == i  # first index wins
                strong += max(range(2 * n), key=lambda j: (to_both[j], -j)) == i
            weak_layers.append(weak / n)
            strong_layers.append(strong / n)
        out[("weak", direction)] = weak_layers
        out[("strong", direction)] = strong_layers
    return out


def test_matches_slow_reference_on_noisy_translations() -> None:
    generator = torch.Generator().manual_seed(0)
    src = torch.randn(3, 40, 8, generator=generator)
    noise = torch.tensor([0.3, 1.0, 3.0]).view(3, 1, 1)  # layer 0 well aligned, layer 2 barely
    tgt = src + noise * torch.randn(3, 40, 8, generator=generator)
    tgt[:, 5] = tgt[:, 4]  # an exact tie, decided by the index
    src[:, 7] = -src[:, 7]
    result = alignment_accuracy(src, tgt, chunk=7)
    expected = reference_accuracy(src, tgt)
    for key in expected:
        assert result[key].tolist() == pytest.approx(expected[key]), key
    assert result[("weak", "en-x")][0] > result[("weak", "en-x")][2]  # less noise, more aligned


def test_bad_shapes_and_too_few_pairs_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        alignment_accuracy(torch.ones(1, 1, 2), torch.ones(1, 1, 2))
    with pytest.raises(ValueError, match="L\\+1, N, H"):
        alignment_accuracy(torch.ones(1, 3, 2), torch.ones(1, 4, 2))


# --------------------------------------------------------------------------------------------
# Sampling and metrics


def pairs_table(rows: list[tuple[int, int]]) -> pd.DataFrame:
    """Pairs (sentence, src_index); tgt_index mirrors src_index, words name the pair."""
    return pd.DataFrame(
        {
            "sentence": [s for s, _ in rows],
            "src_index": [i for _, i in rows],
            "tgt_index": [i + 10 for _, i in rows],
            "src_word": [f"en{s}.{i}" for s, i in rows],
            "tgt_word": [f"x{s}.{i}" for s, i in rows],
        }
    )


# Sentences 0, 2, 3, 5, 7 hold 2, 3, 1, 2, 4 pairs (1, 4, 6 none: they are not in the stream);
# the rows are given out of order, the sampler sorts them by (sentence, src_index).
CLUSTERED = pairs_table([(7, 5), (0, 1), (2, 0), (7, 0), (2, 2), (3, 4), (5, 3), (7, 6), (0, 0), (2, 1), (5, 1), (7, 2)])


def test_reference_shuffle_of_five_sentences() -> None:
    # numpy's default_rng(42).permutation(5), the reference's order of a stream of 5 sentences
    assert list(shuffled_positions(5, seed=42)) == [4, 2, 3, 1, 0]


def test_sentence_sample_takes_whole_sentences_and_cuts_the_last() -> None:
    # Stream: positions 0..4 = sentences 0, 2, 3, 5, 7; shuffled order 4, 2, 3, 1, 0 =
    # sentences 7, 3, 5, 2, 0. Six pairs: all 4 of sentence 7, the 1 of sentence 3, then
    # sentence 5 cut to its first pair in English word order (src 1, not src 3).
    sample = sample_pairs(CLUSTERED, 6, seed=42)
    assert list(zip(sample["sentence"], sample["src_index"])) == [(7, 0), (7, 2), (7, 5), (7, 6), (3, 4), (5, 1)]
    assert list(sample.columns) == list(CLUSTERED.columns)
    assert (sample["tgt_word"] == "x" + sample["sentence"].astype(str) + "." + sample["src_index"].astype(str)).all()
    everything = sample_pairs(CLUSTERED, 1000, seed=42)  # fewer pairs than asked: all, in sampled order
    assert everything["sentence"].tolist() == [7] * 4 + [3] + [5] * 2 + [2] * 3 + [0] * 2
    assert sample_pairs(CLUSTERED, 0, seed=42).empty


def test_sentence_sample_skips_unmeasurable_pairs_without_changing_the_order() -> None:
    # (7, 2) and all of sentence 3 cannot be measured: sentence 7 gives 3 pairs, sentence 3
    # none (skipped), sentence 5 both, sentence 2 its first: (2, 0).
    def measurable(rows: pd.DataFrame) -> np.ndarray:
        return ~(((rows["sentence"] == 7) & (rows["src_index"] == 2)) | (rows["sentence"] == 3)).to_numpy()

    sample = sample_pairs(CLUSTERED, 6, seed=42, measurable=measurable)
    assert list(zip(sample["sentence"], sample["src_index"])) == [(7, 0), (7, 5), (7, 6), (5, 1), (5, 3), (2, 0)]


def test_shuffle_matches_hf_datasets_iterable_shuffle() -> None:
    from datasets import IterableDataset

    # the reference: get_pharaoh_dataset(...).shuffle(seed=42, buffer_size=10_000); for a stream
    # shorter than the buffer the installed datasets draws the same permutation as the pinned 2.4.0
    stream = IterableDataset.from_generator(lambda: ({"i": i} for i in range(37)))
    expected = [row["i"] for row in stream.shuffle(seed=42, buffer_size=10_000)]
    assert list(shuffled_positions(37, seed=42)) == expected


def test_shuffle_of_a_stream_longer_than_the_buffer() -> None:
    # datasets 2.4.0: buffer [0, 1, 2]; item 3 makes it yield slot d0 and take its place, item 4
    # slot d1; the rest of the buffer is then shuffled by the same generator.
    rng = np.random.default_rng(7)
    d0, d1 = rng.integers(0, 3, size=1000)[:2]
    buffer = [0, 1, 2]
    expected = [buffer[d0]]
    buffer[d0] = 3
    expected.append(buffer[d1])
    buffer[d1] = 4
    rng.shuffle(buffer)
    assert list(shuffled_positions(5, seed=7, buffer_size=3)) == expected + buffer


def test_uniform_sample_is_the_seeded_draw_in_corpus_order() -> None:
    pairs = pairs_table([(i // 3, i % 3) for i in range(200)])
    first = sample_pairs(pairs, 50, seed=0, sampling="uniform")
    expected = np.sort(np.random.default_rng(0).choice(200, size=50, replace=False))
    pd.testing.assert_frame_equal(first, pairs.iloc[expected].reset_index(drop=True))
    assert not first.equals(sample_pairs(pairs, 50, seed=1, sampling="uniform"))
    # an unmeasurable pair is never drawn; the draw stays uniform among the others (redrawn)
    banned = set(first["src_word"][:5])
    redrawn = sample_pairs(pairs, 50, seed=0, sampling="uniform",
                           measurable=lambda rows: ~rows["src_word"].isin(banned).to_numpy())
    assert len(redrawn) == 50 and not banned & set(redrawn["src_word"]) and redrawn["src_word"].is_unique


def test_sample_pairs_checks_columns_and_sampling() -> None:
    with pytest.raises(ValueError, match="tgt_word"):
        sample_pairs(CLUSTERED.drop(columns=["tgt_word"]), 3, seed=0)
    with pytest.raises(ValueError, match="align_sampling='sentence'"):
        sample_pairs(CLUSTERED, 3, seed=0, sampling="sentence")


def test_alignment_metrics_nesting() -> None:
    table = pd.DataFrame(
        [
            ("es", "en-x", "strong", 0, 0.25, 4, 0),
            ("es", "en-x", "strong", 1, 0.5, 4, 0),
            ("es", "x-en", "weak", 1, 0.75, 4, 0),
            ("fr", "en-x", "strong", 1, 1.0, 3, 1),
        ],
        columns=list(RESULT_COLUMNS),
    )
    assert alignment_metrics(table) == {
        "strong": {"en-x": {"es": {"0": 0.25, "1": 0.5}, "fr": {"1": 1.0}}},
        "weak": {"x-en": {"es": {"1": 0.75}}},
    }


# --------------------------------------------------------------------------------------------
# Word vectors from a real model


@pytest.fixture(scope="module")
def e5() -> tuple[torch.nn.Module, object]:
    from transformers import AutoModel, AutoTokenizer

    if not E5_SMALL.is_dir():
        pytest.fail(f"e5-small not found at {E5_SMALL}: run .venv/bin/python ../shared/tools/provision-e5-small")
    torch.manual_seed(0)
    return AutoModel.from_pretrained(str(E5_SMALL)), AutoTokenizer.from_pretrained(str(E5_SMALL))


SENTENCES = [
    ["The", "unconstitutionality", "was", "obvious", "."],
    ["Short", "one"],
    ["A", "much", "longer", "sentence", "with", "several", "extraordinarily", "rare", "words", "in", "it", "."],
    ["Hello"],
]


def test_word_vectors_match_single_sentence_encoding(e5) -> None:
    model, tokenizer = e5
    settings = Settings(align_batch_size=2, device="cpu")
    # unordered, repeated, several words per sentence: the batching bookkeeping must hold
    word_index = torch.tensor([[2, 6], [0, 1], [3, 0], [0, 1], [1, 1], [2, 0], [0, 4]])
    vectors = word_vectors_all_layers(model, tokenizer, SENTENCES, word_index, settings)
    layers = model.config.num_hidden_layers + 1
    assert vectors.shape == (layers, len(word_index), model.config.hidden_size)
    for row, (sentence, word) in enumerate(word_index.tolist()):
        alone = word_vectors_all_layers(model, tokenizer, [SENTENCES[sentence]], torch.tensor([[0, word]]), settings)
        torch.testing.assert_close(vectors[:, row], alone[:, 0], atol=1e-4, rtol=1e-4)


def test_first_subword_and_mean_pooling_differ_on_split_words(e5) -> None:
    model, tokenizer = e5
    long_word, short_word = "unconstitutionality", "was"
    assert len(tokenizer.tokenize(long_word)) > 1 and len(tokenizer.tokenize(short_word)) == 1
    index = torch.tensor([[0, 1], [0, 2]])
    first = word_vectors_all_layers(model, tokenizer, SENTENCES, index, Settings(align_pooling="first"))
    mean = word_vectors_all_layers(model, tokenizer, SENTENCES, index, Settings(align_pooling="mean"))
    assert not torch.allclose(first[:, 0], mean[:, 0], atol=1e-3)  # several subwords: differ
    torch.testing.assert_close(first[:, 1], mean[:, 1])  # one subword: identical


def test_truncated_words_are_reported_absent(e5) -> None:
    model, tokenizer = e5
    settings = Settings(align_max_length=6)  # <s> + 4 subwords + </s>: the sentence's end is cut
    index = torch.tensor([[2, 0], [2, 11]])
    vectors, present = word_vectors_all_layers(model, tokenizer, SENTENCES, index, settings, return_present=True)
    assert present.tolist() == [True, False]
    assert bool((vectors[:, 1] == 0).all()) and bool((vectors[:, 0] != 0).any())
    with pytest.raises(ValueError, match="word 5 outside sentence 1"):
        word_vectors_all_layers(model, tokenizer, SENTENCES, torch.tensor([[1, 5]]), settings)


# --------------------------------------------------------------------------------------------
# Real text: NTREX en-es with MUSE dictionary pairs


# The first 180 NTREX lines hold 1,182 en-es dictionary pairs: enough to sample 1000 while
# encoding only ~180 sentences per side (the forward passes dominate the run time on 2 CPUs).
NTREX_LINES = 200  # enough sentences for N_PAIRS dictionary pairs (973 from 180 lines)
N_PAIRS = 1000
SEED = 0


@pytest.fixture(scope="module")
def ntrex_es(tmp_path_factory):
    from trainables.data import Subset
    from trainables.pairs import extract_pairs

    cache = tmp_path_factory.mktemp("cache")
    corpus = extract_pairs("ntrex", "es", "dico", data_dir=DATA_DIR, cache_dir=cache, subset=Subset(NTREX_LINES))
    assert len(corpus.pairs) >= N_PAIRS
    return corpus


@pytest.fixture(scope="module")
def e5_alignment(e5, ntrex_es) -> tuple[pd.DataFrame, pd.DataFrame]:
    model, tokenizer = e5
    return measure_alignment(
        model, tokenizer, {"es": ntrex_es}, Settings(device="cpu"), n_pairs=N_PAIRS, seed=SEED, return_pairs=True
    )


def accuracy_grid(table: pd.DataFrame) -> pd.DataFrame:
    return table.pivot_table(index="layer", columns=["kind", "direction"], values="accuracy")


def test_real_table_shape_and_strong_never_above_weak(e5, ntrex_es, e5_alignment) -> None:
    model, _ = e5
    table, used = e5_alignment
    layers = model.config.num_hidden_layers + 1
    assert list(table.columns) == list(RESULT_COLUMNS)
    assert len(table) == 2 * 2 * layers
    assert sorted(table["layer"].unique()) == list(range(layers))
    # at the tokenizer's limit (512) every NTREX pair is measurable: none lost, none dropped
    assert (table["n_pairs"] == N_PAIRS).all() and (table["n_dropped"] == 0).all() and len(used) == N_PAIRS
    assert list(used.columns) == list(DUMP_COLUMNS)
    pd.testing.assert_frame_equal(used.drop(columns="lang"), sample_pairs(ntrex_es.pairs, N_PAIRS, SEED))
    # whole sentences: only the last sampled sentence may be cut
    per_sentence = used.groupby("sentence", sort=False).size()
    full = ntrex_es.pairs.groupby("sentence").size()
    assert (per_sentence.iloc[:-1] == full[per_sentence.index[:-1]]).all()
    assert per_sentence.iloc[-1] <= full[per_sentence.index[-1]]
    grid = accuracy_grid(table)
    print("\ne5-small, NTREX en-es, 1000 dico pairs:\n" + grid.to_string())
    for direction in ("en-x", "x-en"):
        assert (grid[("strong", direction)] <= grid[("weak", direction)]).all(), direction
        assert (grid[("strong", direction)] < grid[("weak", direction)]).any(), direction  # not degenerate


def test_pairs_beyond_the_length_limit_are_never_sampled(e5) -> None:
    model, tokenizer = e5
    # sentence 2 has 12 words; at 8 subwords (with <s> and </s>) its last words have none
    corpus = AlignedCorpus("es", [list(s) for s in SENTENCES], [list(s) for s in SENTENCES],
                           pairs_table([(2, 0), (2, 1), (2, 9), (2, 10), (0, 0), (1, 1), (1, 0)]).assign(
                               tgt_index=lambda frame: frame["src_index"]))
    settings = Settings(device="cpu", align_max_length=8)
    present = words_present(tokenizer, corpus.en_words, torch.tensor([[2, 0], [2, 1], [2, 9], [2, 10]]), settings)
    assert present.tolist() == [True, True, False, False]
    assert measurable_pairs(tokenizer, corpus, corpus.pairs, settings).tolist() == [
        True, True, False, False, True, True, True]
    table, used = measure_alignment(model, tokenizer, {"es": corpus}, settings, n_pairs=100, seed=0, return_pairs=True)
    assert sorted(zip(used["sentence"], used["src_index"])) == [(0, 0), (1, 0), (1, 1), (2, 0), (2, 1)]
    assert (table["n_pairs"] == 5).all() and (table["n_dropped"] == 0).all()


def test_before_fine_tuning_the_reference_limit_applies(e5) -> None:
    model, tokenizer = e5
    # sentence 2 has 12 words; align_max_length_before=8 cuts its last words, the limit after
    # fine-tuning (None: the tokenizer's 512) does not
    corpus = AlignedCorpus("es", [list(s) for s in SENTENCES], [list(s) for s in SENTENCES],
                           pairs_table([(2, 0), (2, 10), (0, 0), (1, 1)]).assign(
                               tgt_index=lambda frame: frame["src_index"]))
    settings = Settings(device="cpu", align_max_length_before=8)
    assert Settings().align_max_length_before == 128 and Settings().align_max_length is None
    before = before_finetuning(settings)
    assert before.align_max_length == 8 and settings.align_max_length is None
    _, used_before = measure_alignment(model, tokenizer, {"es": corpus}, before, n_pairs=100, seed=0,
                                       return_pairs=True)
    _, used_after = measure_alignment(model, tokenizer, {"es": corpus}, settings, n_pairs=100, seed=0,
                                      return_pairs=True)
    assert (2, 10) not in set(zip(used_before["sentence"], used_before["src_index"]))
    assert (2, 10) in set(zip(used_after["sentence"], used_after["src_index"]))


def test_trained_model_far_better_aligned_than_random_one(e5, ntrex_es, e5_alignment) -> None:
    from transformers import AutoConfig, AutoModel

    _, tokenizer = e5
    torch.manual_seed(SEED)
    random_model = AutoModel.from_config(AutoConfig.from_pretrained(str(E5_SMALL)))
    random_table = measure_alignment(
        random_model, tokenizer, {"es": ntrex_es}, Settings(device="cpu"), n_pairs=N_PAIRS, seed=SEED
    )
    trained, random = accuracy_grid(e5_alignment[0]), accuracy_grid(random_table)
    last = random.index.max()
    print(f"\nlast-layer weak en-x: e5-small {trained.loc[last, ('weak', 'en-x')]:.3f},"
          f" random init {random.loc[last, ('weak', 'en-x')]:.3f}")
    assert trained.loc[last, ("weak", "en-x")] > 0.5
    assert random.loc[last, ("weak", "en-x")] < 0.1


def reference_vectors(model, tokenizer, sentences: list[list[str]], wanted: list[tuple[int, int]]) -> torch.Tensor:
    """(L+1, N, H): each sentence encoded alone, XLM-R's lone "▁" ids deleted from the input and
    the word's first remaining subword taken (the reference's AdaptAlignmentToTokenizerMapper)."""
    lone = tokenizer.convert_tokens_to_ids("▁")
    states: dict[int, tuple[torch.Tensor, list]] = {}
    vectors = []
    for sentence, word in wanted:
        if sentence not in states:
            encoded = tokenizer(sentences[sentence], is_split_into_words=True, truncation=True)
            keep = [k for k, token in enumerate(encoded["input_ids"]) if token != lone]
            ids = torch.tensor([[encoded["input_ids"][k] for k in keep]])
            with torch.no_grad():
                hidden = torch.stack(model(input_ids=ids, output_hidden_states=True).hidden_states)[:, 0]
            states[sentence] = (hidden, [encoded.word_ids()[k] for k in keep])
        hidden, word_ids = states[sentence]
        vectors.append(hidden[:, word_ids.index(word)])
    return torch.stack(vectors, dim=1)


def reference_search(src: np.ndarray, tgt: np.ndarray, strong: bool) -> float:
    """retrieval.evaluate_alignment_with_cosim for one layer, in numpy."""
    x = src / np.linalg.norm(src, axis=1, keepdims=True)
    y = tgt / np.linalg.norm(tgt, axis=1, keepdims=True)
    n = len(x)
    candidates = np.concatenate([y, x]) if strong else y
    similarity = x @ candidates.T
    if strong:
        similarity[np.arange(n), np.arange(n) + n] = 0
    return float((similarity.argmax(axis=1) == np.arange(n)).mean())


def test_cli_writes_results_and_pairs_that_point_at_the_words(e5, tmp_path: Path) -> None:
    from trainables.segmentation import segment

    model, tokenizer = e5
    out, dump = tmp_path / "align.csv", tmp_path / "pairs.tsv"
    lines, n_pairs = 24, 40
    status = main([
        "--model", str(E5_SMALL), "--data-dir", str(DATA_DIR), "--cache-dir", str(tmp_path / "cache"),
        "--corpus", "ntrex", "--pairs", "dico", "--langs", "es,ru", "--n-pairs", str(n_pairs), "--seed", "3",
        "--parallel-subset", str(lines), "--device", "cpu", "--out", str(out), "--dump-pairs", str(dump),
    ])
    assert status == 0
    assert out.read_text(encoding="utf-8").splitlines()[0] == "lang,direction,kind,layer,accuracy,n_pairs,n_dropped"
    assert dump.read_text(encoding="utf-8").splitlines()[0] == "lang\tsentence\tsrc_index\ttgt_index\tsrc_word\ttgt_word"
    results = pd.read_csv(out)
    assert set(results["lang"]) == {"es", "ru"} and set(results["kind"]) == {"strong", "weak"}
    assert set(results["direction"]) == {"en-x", "x-en"} and results["layer"].max() == 12
    assert results["accuracy"].between(0, 1).all() and (results["n_dropped"] == 0).all()
    pairs = pd.read_csv(dump, sep="\t", keep_default_na=False)
    for lang, group in pairs.groupby("lang"):
        assert len(group) == n_pairs == int(results.loc[results["lang"] == lang, "n_pairs"].iloc[0])
        en_lines = (DATA_DIR / f"parallel/ntrex/en-{lang}.en").read_text(encoding="utf-8").splitlines()[:lines]
        x_lines = (DATA_DIR / f"parallel/ntrex/en-{lang}.{lang}").read_text(encoding="utf-8").splitlines()[:lines]
        en_words = [segment(line, "en") for line in en_lines]
        x_words = [segment(line, lang) for line in x_lines]
        for row in group.itertuples(index=False):
            assert en_words[row.sentence][row.src_index] == row.src_word
            assert x_words[row.sentence][row.tgt_index] == row.tgt_word
        # the accuracies are the reference's search on exactly these pairs, in the dump's order
        src = reference_vectors(model, tokenizer, en_words, list(zip(group["sentence"], group["src_index"])))
        tgt = reference_vectors(model, tokenizer, x_words, list(zip(group["sentence"], group["tgt_index"])))
        measured = results[results["lang"] == lang].set_index(["kind", "direction", "layer"])["accuracy"]
        for layer in range(src.shape[0]):
            s, t = src[layer].numpy().astype(np.float64), tgt[layer].numpy().astype(np.float64)
            for kind, direction, queries, answers in [("weak", "en-x", s, t), ("weak", "x-en", t, s),
                                                      ("strong", "en-x", s, t), ("strong", "x-en", t, s)]:
                expected = reference_search(queries, answers, strong=kind == "strong")
                assert measured[(kind, direction, layer)] == pytest.approx(expected, abs=1e-9), (lang, kind, direction, layer)


@pytest.mark.parametrize(
    "option, value, expected",
    [("--pairs", "dicco", "did you mean 'dico'"), ("--langs", "es,sp", "'sp'"), ("--corpus", "ntrx", "did you mean 'ntrex'")],
)
def test_cli_unknown_names_exit_2_with_one_line(option: str, value: str, expected: str, tmp_path: Path, capsys) -> None:
    status = main(["--model", str(tmp_path), "--data-dir", str(DATA_DIR), option, value])
    error = capsys.readouterr().err
    assert status == 2
    assert len(error.strip().splitlines()) == 1 and expected in error


@pytest.mark.parametrize(
    "option, value, expected",
    [("--n-pairs", "0", "--n-pairs 0"), ("--n-pairs", "1", "at least 2 pairs"), ("--batch-size", "0", "--batch-size 0"),
     ("--max-length", "0", "--max-length 0"), ("--sampling", "sentence", "did you mean 'sentences'")],
)
def test_cli_bad_numbers_exit_2_before_loading_anything(option: str, value: str, expected: str, tmp_path: Path,
                                                         capsys) -> None:
    status = main(["--model", str(tmp_path / "no-model"), "--data-dir", str(DATA_DIR), "--langs", "es", option, value])
    error = capsys.readouterr().err
    assert status == 2
    assert len(error.strip().splitlines()) == 1 and error.startswith("error: ") and expected in error


def unwritable_folder() -> Path:
    folder = Path("/sys")  # a read-only file system, even for root
    try:
        (folder / ".alignment-probe").touch()
    except OSError:
        return folder
    pytest.fail(f"{folder} is writable here: the test needs an unwritable folder")


@pytest.mark.parametrize("option", ["--out", "--dump-pairs"])
@pytest.mark.parametrize("where, expected", [("folder", "is a folder"), ("missing", "does not exist"),
                                             ("under-a-file", "does not exist"), ("unwritable", "not writable")])
def test_cli_bad_output_paths_exit_2(option: str, where: str, expected: str, tmp_path: Path, capsys) -> None:
    (tmp_path / "file.txt").write_text("x")
    target = {"folder": tmp_path, "missing": tmp_path / "absent" / "out.tsv",
              "under-a-file": tmp_path / "file.txt" / "out.tsv", "unwritable": None}[where]
    if target is None:
        target = unwritable_folder() / "out.tsv"
    status = main(["--model", str(tmp_path / "no-model"), "--data-dir", str(DATA_DIR), "--langs", "es",
                   option, str(target)])
    error = capsys.readouterr().err
    assert status == 2
    assert len(error.strip().splitlines()) == 1 and error.startswith(f"error: {option} ") and expected in error


def test_cli_bad_model_fails_at_once_before_extracting_pairs(tmp_path: Path, capsys) -> None:
    (tmp_path / "model").mkdir()
    started = time.perf_counter()
    status = main(["--model", str(tmp_path / "model"), "--data-dir", str(DATA_DIR), "--langs", "es",
                   "--cache-dir", str(tmp_path / "cache")])
    error = capsys.readouterr().err
    assert status == 1 and time.perf_counter() - started < 30
    assert len(error.strip().splitlines()) == 1 and error.startswith(f"error: cannot load model {tmp_path / 'model'}")
    assert not (tmp_path / "cache").exists()  # no pair was extracted


def test_cli_missing_data_and_too_long_max_length(tmp_path: Path, capsys) -> None:
    status = main(["--model", str(E5_SMALL), "--data-dir", str(tmp_path), "--langs", "es", "--cache-dir",
                   str(tmp_path / "cache"), "--device", "cpu"])
    error = capsys.readouterr().err
    assert status == 1
    assert len(error.strip().splitlines()) == 1 and error.startswith("error: ") and "en-es" in error
    status = main(["--model", str(E5_SMALL), "--data-dir", str(DATA_DIR), "--langs", "es", "--max-length", "600",
                   "--device", "cpu"])
    error = capsys.readouterr().err
    assert status == 2 and error.strip() == "error: --max-length 600 exceeds the tokenizer's limit 512"


def test_cli_max_length_defaults_to_the_reference_limit_before_fine_tuning() -> None:
    from trainables.alignment import _parser

    assert _parser().parse_args(["--model", "m"]).max_length == 128
    assert _parser().parse_args(["--model", "m", "--max-length", "none"]).max_length is None
    assert _parser().parse_args(["--model", "m", "--max-length", "64"]).max_length == 64


def test_module_runs_as_a_command(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "trainables.alignment", "--model", str(tmp_path), "--pairs", "fastalgn"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2
    assert "did you mean 'fastalign'" in done.stderr
