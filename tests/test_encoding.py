"""Words -> subwords: first-subword pooling, lone "▁" pieces, labels on first subwords."""
from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from trainables.encoding import IGNORE_INDEX, encode_words, first_subword_labels, pool_words


@pytest.fixture(scope="module")
def xlmr_tokenizer(e5_small):
    return AutoTokenizer.from_pretrained(e5_small)


def test_lone_prefix_piece_is_skipped(xlmr_tokenizer):
    # "北京" tokenises as ["▁", "北京"]: the lone "▁" says nothing about the word.
    words = [["我", "爱", "北京"]]
    encoded = encode_words(xlmr_tokenizer, words, max_length=32)
    tokens = xlmr_tokenizer.convert_ids_to_tokens(encoded.inputs["input_ids"][0])
    first = encoded.first_subword[0].tolist()
    assert tokens[first[2]] == "北京"
    assert tokens[first[2] - 1] == "▁"  # the skipped piece sits right before it
    lone_position = first[2] - 1
    assert encoded.token_word[0, lone_position] == -1


def test_first_and_mean_pooling_by_hand(xlmr_tokenizer):
    words = [["unbelievably", "good"], ["ok"]]
    encoded = encode_words(xlmr_tokenizer, words, max_length=32)
    n_sentences, n_tokens = encoded.inputs["input_ids"].shape
    # hidden state = position index, so pooled values are positions we can check by hand
    hidden = torch.arange(n_tokens, dtype=torch.float).view(1, n_tokens, 1).expand(n_sentences, n_tokens, 1)
    first = pool_words(hidden, encoded, "first")[..., 0]
    mean = pool_words(hidden, encoded, "mean")[..., 0]
    positions = [[i for i, w in enumerate(encoded.token_word[0].tolist()) if w == word] for word in (0, 1)]
    assert len(positions[0]) > 1, "the test needs a word split into several subwords"
    assert first[0].tolist() == [positions[0][0], positions[1][0]]
    assert mean[0, 0].item() == pytest.approx(sum(positions[0]) / len(positions[0]))
    assert first[1, 1].item() == 0.0 and not encoded.word_mask[1, 1]  # padding word slot


def test_layers_pooled_together(xlmr_tokenizer):
    encoded = encode_words(xlmr_tokenizer, [["a", "b", "c"]], max_length=16)
    hidden = torch.randn(4, *encoded.inputs["input_ids"].shape, 8)
    pooled = pool_words(hidden, encoded, "first")
    assert pooled.shape == (4, 1, 3, 8)
    for word, position in enumerate(encoded.first_subword[0].tolist()):
        assert torch.equal(pooled[:, 0, word], hidden[:, 0, position])


def test_labels_on_first_subword_only(xlmr_tokenizer):
    words = [["unbelievably", "北京", "ok"]]
    encoded = encode_words(xlmr_tokenizer, words, max_length=32)
    labels = first_subword_labels(encoded, [[3, 5, 7]])
    labelled = (labels[0] != IGNORE_INDEX).nonzero().squeeze(1).tolist()
    assert labelled == encoded.first_subword[0].tolist()
    assert labels[0, labelled].tolist() == [3, 5, 7]


def test_truncated_words_are_absent(xlmr_tokenizer):
    encoded = encode_words(xlmr_tokenizer, [["word"] * 20], max_length=8)  # 6 word tokens fit
    assert encoded.word_mask[0].sum().item() == 6
    assert encoded.first_subword[0, 6:].eq(-1).all()
