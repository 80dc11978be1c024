"""Alignment measurement: hand-computed nearest-neighbour cases, then real text with e5-small."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from trainables.alignment import (
    DUMP_COLUMNS,
    RESULT_COLUMNS,
    alignment_accuracy,
    alignment_metrics,
    main,
    measure_alignment,
    sample_pairs,
    word_vectors_all_layers,
)
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


def test_ties_count_as_correct_and_order_does_not_matter() -> None:
    # s0 = s1 and t0 = t1 (same word type, same position at layer 0): the weak search cannot
    # tell t0 from t1, a tie, counted correct. Strong: s0's twin s1 (cosine 1) beats t0: wrong.
    src = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])
    tgt = torch.tensor([[[1.0, 0.1], [1.0, 0.1], [0.0, 1.0]]])
    result = alignment_accuracy(src, tgt)
    assert result[("weak", "en-x")].tolist() == pytest.approx([1.0])
    assert result[("strong", "en-x")].tolist() == pytest.approx([1 / 3])
    assert result[("weak", "x-en")].tolist() == pytest.approx([1.0])
    assert result[("strong", "x-en")].tolist() == pytest.approx([1 / 3])
    order = torch.tensor([2, 0, 1])
    permuted = alignment_accuracy(src[:, order], tgt[:, order])
    for key in result:
        assert permuted[key].tolist() == pytest.approx(result[key].tolist())


def reference_accuracy(src: torch.Tensor, tgt: torch.Tensor) -> dict[tuple[str, str], list[float]]:
    """Plain loops over layers and queries: the definition, written the slow way."""
    out: dict[tuple[str, str], list[float]] = {}
    for direction, (queries, answers) in {"en-x": (src, tgt), "x-en": (tgt, src)}.items():
        weak_layers, strong_layers = [], []
        for layer in range(src.shape[0]):
            q = torch.nn.functional.normalize(queries[layer], dim=-1)
            a = torch.nn.functional.normalize(answers[layer], dim=-1)
            weak = strong = 0
            for i in range(q.shape[0]):
                own = float(q[i] @ a[i])
                others_a = [float(q[i] @ a[j]) for j in range(a.shape[0]) if j != i]
                others_q = [float(q[i] @ q[j]) for j in range(q.shape[0]) if j != i]
                weak += own >= max(others_a)
                strong += own >= max(others_a + others_q)
            weak_layers.append(weak / q.shape[0])
            strong_layers.append(strong / q.shape[0])
        out[("weak", direction)] = weak_layers
        out[("strong", direction)] = strong_layers
    return out


def test_matches_slow_reference_on_noisy_translations() -> None:
    generator = torch.Generator().manual_seed(0)
    src = torch.randn(3, 40, 8, generator=generator)
    noise = torch.tensor([0.3, 1.0, 3.0]).view(3, 1, 1)  # layer 0 well aligned, layer 2 barely
    tgt = src + noise * torch.randn(3, 40, 8, generator=generator)
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


def toy_pairs(n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "sentence": [i // 3 for i in range(n)],
            "src_index": [i % 3 for i in range(n)],
            "tgt_index": [2 - i % 3 for i in range(n)],
            "src_word": [f"en{i}" for i in range(n)],
            "tgt_word": [f"x{i}" for i in range(n)],
        }
    )


def test_sample_pairs_is_seeded_without_replacement_and_in_corpus_order() -> None:
    pairs = toy_pairs(200)
    first = sample_pairs(pairs, 50, seed=0)
    again = sample_pairs(pairs, 50, seed=0)
    other = sample_pairs(pairs, 50, seed=1)
    pd.testing.assert_frame_equal(first, again)
    assert set(first["src_word"]) != set(other["src_word"])
    assert len(first) == 50 and first["src_word"].is_unique
    assert list(first.columns) == list(pairs.columns)
    positions = [int(w[2:]) for w in first["src_word"]]
    assert positions == sorted(positions)
    # rows stay whole: each sampled row is a row of the input
    merged = first.merge(pairs, how="left", indicator=True)
    assert (merged["_merge"] == "both").all()


def test_sample_pairs_takes_all_when_fewer_and_checks_columns() -> None:
    pairs = toy_pairs(7)
    pd.testing.assert_frame_equal(sample_pairs(pairs, 1000, seed=3), pairs)
    with pytest.raises(ValueError, match="tgt_word"):
        sample_pairs(pairs.drop(columns=["tgt_word"]), 3, seed=0)


def test_alignment_metrics_nesting() -> None:
    table = pd.DataFrame(
        [
            ("es", "en-x", "strong", 0, 0.25, 4),
            ("es", "en-x", "strong", 1, 0.5, 4),
            ("es", "x-en", "weak", 1, 0.75, 4),
            ("fr", "en-x", "strong", 1, 1.0, 3),
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
NTREX_LINES = 180
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
    # NTREX lines are short enough that no sampled word is truncated at 96 subwords
    assert (table["n_pairs"] == N_PAIRS).all() and len(used) == N_PAIRS
    assert list(used.columns) == list(DUMP_COLUMNS)
    pd.testing.assert_frame_equal(
        used.drop(columns="lang"), sample_pairs(ntrex_es.pairs, N_PAIRS, SEED)
    )
    grid = accuracy_grid(table)
    print("\ne5-small, NTREX en-es, 1000 dico pairs:\n" + grid.to_string())
    for direction in ("en-x", "x-en"):
        assert (grid[("strong", direction)] <= grid[("weak", direction)]).all(), direction
        assert (grid[("strong", direction)] < grid[("weak", direction)]).any(), direction  # not degenerate


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


def test_cli_writes_results_and_pairs_that_point_at_the_words(tmp_path: Path) -> None:
    from trainables.segmentation import segment

    out, dump = tmp_path / "align.csv", tmp_path / "pairs.tsv"
    lines, n_pairs = 24, 40
    status = main([
        "--model", str(E5_SMALL), "--data-dir", str(DATA_DIR), "--cache-dir", str(tmp_path / "cache"),
        "--corpus", "ntrex", "--pairs", "dico", "--langs", "es,ru", "--n-pairs", str(n_pairs), "--seed", "3",
        "--parallel-subset", str(lines), "--device", "cpu", "--out", str(out), "--dump-pairs", str(dump),
    ])
    assert status == 0
    assert out.read_text(encoding="utf-8").splitlines()[0] == "lang,direction,kind,layer,accuracy,n_pairs"
    assert dump.read_text(encoding="utf-8").splitlines()[0] == "lang\tsentence\tsrc_index\ttgt_index\tsrc_word\ttgt_word"
    results = pd.read_csv(out)
    assert set(results["lang"]) == {"es", "ru"} and set(results["kind"]) == {"strong", "weak"}
    assert set(results["direction"]) == {"en-x", "x-en"} and results["layer"].max() == 12
    assert results["accuracy"].between(0, 1).all()
    correct = results["accuracy"] * results["n_pairs"]  # a count of right answers, written exactly
    assert ((correct - correct.round()).abs() < 1e-9).all()
    pairs = pd.read_csv(dump, sep="\t", keep_default_na=False)
    for lang, group in pairs.groupby("lang"):
        assert len(group) == n_pairs == int(results.loc[results["lang"] == lang, "n_pairs"].iloc[0])
        en_lines = (DATA_DIR / f"parallel/ntrex/en-{lang}.en").read_text(encoding="utf-8").splitlines()
        x_lines = (DATA_DIR / f"parallel/ntrex/en-{lang}.{lang}").read_text(encoding="utf-8").splitlines()
        for row in group.itertuples(index=False):
            assert row.sentence < lines
            assert segment(en_lines[row.sentence], "en")[row.src_index] == row.src_word
            assert segment(x_lines[row.sentence], lang)[row.tgt_index] == row.tgt_word


@pytest.mark.parametrize(
    "option, value, expected",
    [("--pairs", "dicco", "did you mean 'dico'"), ("--langs", "es,sp", "'sp'"), ("--corpus", "ntrx", "did you mean 'ntrex'")],
)
def test_cli_unknown_names_exit_2_with_one_line(option: str, value: str, expected: str, tmp_path: Path, capsys) -> None:
    status = main(["--model", str(tmp_path), "--data-dir", str(DATA_DIR), option, value])
    error = capsys.readouterr().err
    assert status == 2
    assert len(error.strip().splitlines()) == 1 and expected in error


def test_module_runs_as_a_command(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "trainables.alignment", "--model", str(tmp_path), "--pairs", "fastalgn"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2
    assert "did you mean 'fastalign'" in done.stderr
