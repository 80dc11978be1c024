"""Words -> subwords: lone "▁" deletion, first-subword pooling, labels on first subwords, truncation."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, BertTokenizerFast

from trainables import data
from trainables.encoding import (
    IGNORE_INDEX,
    encode_words,
    first_subword_labels,
    lone_prefix_ids,
    pool_words,
    removes_lone_prefix,
)


@pytest.fixture(scope="module")
def xlmr_tokenizer(e5_small):
    return AutoTokenizer.from_pretrained(e5_small)


@pytest.fixture(scope="module")
def ud_sentences(shared_data, xlmr_tokenizer) -> list[list[str]]:
    """The first Chinese UD test sentence and the first English one with a lone "▁" piece."""
    zh = data.read_conllu(Path(shared_data, "ud", "zh_gsd-ud-test.conllu"))[0]["words"]
    lone = lone_prefix_ids(xlmr_tokenizer)[0]
    en = next(
        e["words"] for e in data.read_conllu(Path(shared_data, "ud", "en_ewt-ud-test.conllu"))
        if lone in xlmr_tokenizer(e["words"], is_split_into_words=True)["input_ids"]
    )
    return [zh, en]


def by_hand(tokenizer, words: list[str]) -> tuple[list[int], list[int], list[int]]:
    """(ids without lone pieces, first position of each word among them, lone pieces deleted), in
    plain Python from the tokenizer's own word_ids()."""
    lone = set(lone_prefix_ids(tokenizer))
    encoding = tokenizer(words, is_split_into_words=True)
    ids, first, deleted = [], {}, 0
    for token, word in zip(encoding["input_ids"], encoding.word_ids()):
        if token in lone:
            deleted += 1
            continue
        if word is not None and word not in first:
            first[word] = len(ids)
        ids.append(token)
    return ids, [first[w] for w in range(len(words))], deleted


def test_e5_small_tokenizer_is_xlmr_and_wordpiece_is_not(xlmr_tokenizer):
    # e5-small is a BERT model, but its tokenizer_config names XLM-R's tokenizer: the reference's
    # isinstance test on the tokenizer deletes its lone pieces.
    assert removes_lone_prefix(xlmr_tokenizer)
    pieces = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "▁", "a", "##b"]
    wordpiece = BertTokenizerFast(vocab={piece: i for i, piece in enumerate(pieces)})
    assert lone_prefix_ids(wordpiece) == [5] and not removes_lone_prefix(wordpiece)
    encoded = encode_words(wordpiece, [["ab", "a"]], max_length=16)
    assert encoded.inputs["input_ids"][0].tolist() == [2, 6, 7, 6, 3]
    assert encoded.first_subword[0].tolist() == [1, 3]


def test_lone_prefix_ids_leave_the_input_on_real_text(xlmr_tokenizer, ud_sentences):
    encoded = encode_words(xlmr_tokenizer, ud_sentences, max_length=512)
    lone = lone_prefix_ids(xlmr_tokenizer)[0]
    deleted = 0
    for row, words in enumerate(ud_sentences):
        ids, first, n_deleted = by_hand(xlmr_tokenizer, words)
        deleted += n_deleted
        length = int(encoded.inputs["attention_mask"][row].sum())
        assert encoded.inputs["input_ids"][row, :length].tolist() == ids
        assert (encoded.inputs["input_ids"][row, length:] == xlmr_tokenizer.pad_token_id).all()
        assert encoded.first_subword[row, : len(words)].tolist() == first
        assert lone not in encoded.inputs["input_ids"][row].tolist()
    assert deleted >= len(ud_sentences[0]) - 1  # Chinese: nearly every word had one


def test_labels_and_word_vectors_on_first_remaining_subword(xlmr_tokenizer, ud_sentences):
    encoded = encode_words(xlmr_tokenizer, ud_sentences, max_length=512)
    labels = [list(range(10, 10 + len(words))) for words in ud_sentences]
    token_labels = first_subword_labels(encoded, labels)
    n_rows, n_tokens = encoded.inputs["input_ids"].shape
    hidden = torch.arange(n_tokens, dtype=torch.float).view(1, n_tokens, 1).expand(n_rows, n_tokens, 1)
    pooled = pool_words(hidden, encoded, "first")[..., 0]
    for row, words in enumerate(ud_sentences):
        _, first, _ = by_hand(xlmr_tokenizer, words)
        labelled = (token_labels[row] != IGNORE_INDEX).nonzero().squeeze(1).tolist()
        assert labelled == first and token_labels[row, labelled].tolist() == labels[row]
        assert pooled[row, : len(words)].tolist() == [float(p) for p in first]
        tokens = xlmr_tokenizer.convert_ids_to_tokens(encoded.inputs["input_ids"][row, labelled])
        assert "▁" not in tokens


def test_keep_lone_prefix_keeps_them_in_the_input_and_skips_them(xlmr_tokenizer, ud_sentences):
    encoded = encode_words(xlmr_tokenizer, ud_sentences, max_length=512, keep_lone_prefix=True)
    removed = encode_words(xlmr_tokenizer, ud_sentences, max_length=512)
    for row, words in enumerate(ud_sentences):
        expected = xlmr_tokenizer(words, is_split_into_words=True)["input_ids"]
        length = int(encoded.inputs["attention_mask"][row].sum())
        assert encoded.inputs["input_ids"][row, :length].tolist() == expected
        tokens = xlmr_tokenizer.convert_ids_to_tokens(expected)
        first = encoded.first_subword[row, : len(words)].tolist()
        assert all(tokens[p] != "▁" for p in first)
        assert any(tokens[p - 1] == "▁" for p in first)  # the skipped piece sits right before
        # same word pieces, only the positions differ
        kept_ids = encoded.inputs["input_ids"][row, first].tolist()
        assert kept_ids == removed.inputs["input_ids"][row, removed.first_subword[row, : len(words)]].tolist()


def test_lone_pieces_take_room_before_deletion_as_the_reference_truncated(xlmr_tokenizer, ud_sentences):
    zh = [ud_sentences[0]]
    limit = 8
    lone = set(lone_prefix_ids(xlmr_tokenizer))
    # the reference (AdaptAlignmentToTokenizerMapper): the tokenizer truncates, then the lone ids go
    truncated = xlmr_tokenizer(zh[0], is_split_into_words=True, truncation=True, max_length=limit)
    reference = [token for token in truncated["input_ids"] if token not in lone]
    assert len(reference) < limit, "the test needs a lone piece among the first tokens"
    encoded = encode_words(xlmr_tokenizer, zh, max_length=limit)
    assert encoded.inputs["input_ids"][0].tolist() == reference
    words_kept = {w for t, w in zip(truncated["input_ids"], truncated.word_ids()) if w is not None and t not in lone}
    assert encoded.word_mask[0].sum().item() == len(words_kept)
    # lone_prefix_takes_room=False: deleted first, the first limit - 2 remaining pieces kept
    ids, first, _ = by_hand(xlmr_tokenizer, zh[0])
    roomy = encode_words(xlmr_tokenizer, zh, max_length=limit, lone_prefix_takes_room=False)
    assert roomy.inputs["input_ids"][0].tolist() == ids[: limit - 1] + [xlmr_tokenizer.eos_token_id]
    assert roomy.word_mask[0].sum().item() == sum(p < limit - 1 for p in first)
    assert roomy.word_mask[0].sum() > encoded.word_mask[0].sum()
    kept = encode_words(xlmr_tokenizer, zh, max_length=limit, keep_lone_prefix=True)
    assert kept.inputs["input_ids"][0].tolist() == truncated["input_ids"]  # kept pieces: the tokenizer's truncation
    assert kept.word_mask[0].sum() == encoded.word_mask[0].sum()


def test_lone_pieces_take_room_in_windows_too(xlmr_tokenizer, ud_sentences):
    zh = [ud_sentences[0]]
    limit = 10
    counted = encode_words(xlmr_tokenizer, zh, max_length=limit, windows=True)
    roomy = encode_words(xlmr_tokenizer, zh, max_length=limit, windows=True, lone_prefix_takes_room=False)
    lone = set(lone_prefix_ids(xlmr_tokenizer))
    encoding = xlmr_tokenizer(zh[0], is_split_into_words=True, add_special_tokens=False)
    for rows in (counted, roomy):  # every word in exactly one window either way
        assert rows.word_mask.sum(0)[: len(zh[0])].eq(1).all()
    assert len(counted.sentence) > len(roomy.sentence)  # the pieces' room makes more windows
    # each window of `counted` holds at most limit - 2 pieces, its deleted lone ones included
    for row in range(len(counted.sentence)):
        words = set(counted.token_word[row][counted.token_word[row] >= 0].tolist())
        pieces = sum(1 for w in encoding.word_ids() if w in words)
        assert pieces <= limit - 2
    assert any(t in lone for t in encoding["input_ids"])


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


def test_truncated_words_are_absent(xlmr_tokenizer):
    encoded = encode_words(xlmr_tokenizer, [["word"] * 20], max_length=8)  # 6 word tokens fit
    assert encoded.word_mask[0].sum().item() == 6
    assert encoded.first_subword[0, 6:].eq(-1).all()
    with pytest.raises(ValueError, match="max_length=2 leaves no room"):
        encode_words(xlmr_tokenizer, [["word"]], max_length=2)


def test_sentence_pairs_map_the_first_segment_only(xlmr_tokenizer):
    encoded = encode_words(xlmr_tokenizer, [["我", "爱", "北京"]], 64, second_segments=[["北京", "好"]])
    ids = encoded.inputs["input_ids"][0].tolist()
    assert lone_prefix_ids(xlmr_tokenizer)[0] not in ids
    assert ids.count(xlmr_tokenizer.convert_tokens_to_ids("北京")) == 2  # once in each segment
    assert encoded.first_subword[0].tolist() == [1, 2, 3]
    assert (encoded.token_word[0, 4:] == -1).all()
