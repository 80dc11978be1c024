"""Word segmentation (trainables/segmentation.py): the paper's regex, jieba for Chinese."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from trainables.segmentation import (
    SEGMENTERS,
    get_segmenter,
    segment,
    segment_corpus,
    segmentation_id,
    segmenter_for,
)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_regex_splits_words_and_punctuation_runs():
    assert segment("Hello, world!! It's 2019...", "en") == ["Hello", ",", "world", "!!", "It", "'", "s", "2019", "..."]
    assert segment("   ", "es") == []
    assert segment("¿Qué tal?", "es") == ["¿", "Qué", "tal", "?"]


def test_jieba_on_a_real_ntrex_line():
    line = (SHARED_DATA / "parallel/ntrex/en-zh.zh").read_text(encoding="utf-8").split("\n")[4]
    words = segment(line, "zh")
    # No whitespace tokens, nothing lost: the words spell the line without its spaces.
    assert all(w and not re.search(r"\s", w) for w in words)
    assert "".join(words) == re.sub(r"\s", "", line)
    # Multi-character words, not characters: 工党 (Labour Party), 押韵 (to rhyme), Latin runs kept.
    assert {"工党", "押韵", "MWP", "Twp"} <= set(words)
    assert len(words) < len(re.sub(r"\s", "", line)) / 1.5


def test_segment_corpus_and_registry():
    assert segment_corpus(["a b.", ""], "fr") == [["a", "b", "."], []]
    assert segmenter_for("zh").name == "jieba" and segmenter_for("ru").name == "regex"
    assert segmentation_id("zh") != segmentation_id("en")
    assert set(SEGMENTERS) >= {"regex", "jieba"}
    with pytest.raises(ValueError, match="did you mean 'jieba'"):
        get_segmenter("jeiba")


def test_chunked_segmentation_equals_one_pass_on_ntrex():
    from trainables.pairs import segment_chunked

    en = (SHARED_DATA / "parallel" / "ntrex" / "en-zh.en").read_text(encoding="utf-8").splitlines()[:300]
    zh = (SHARED_DATA / "parallel" / "ntrex" / "en-zh.zh").read_text(encoding="utf-8").splitlines()[:300]
    done = []
    en_words, zh_words = segment_chunked(list(zip(en, zh)), "zh", chunk=64, progress=done.append)
    assert list(en_words) == segment_corpus(en, "en") and list(zh_words) == segment_corpus(zh, "zh")
    assert done == [64, 64, 64, 64, 44]
