"""Word segmentation of raw sentences, per language.

Word pairs (dictionary look-up, FastAlign, AWESOME-align) and alignment evaluation work on words.
Like the paper's code, space-delimited languages are split with the regular expression
`\\w+|[^\\w\\s]+` (runs of word characters, runs of punctuation). Chinese has no spaces; the
paper used the Stanford segmenter (a Java program), here jieba stands in for it (pure Python,
works offline, deterministic). Segmenters are a registry: adding a language-specific one is
adding an entry to `SEGMENTERS` and, if it should be the default for a language, to
`LANGUAGE_SEGMENTERS`.

Note: Python's `\\w` does not match combining marks (e.g. Arabic short vowels, tanween), so a
mark after a letter becomes its own "punctuation" token; the paper's code had the same behaviour.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Callable, Iterable

from trainables.registry import lookup

WORD_PATTERN = re.compile(r"\w+|[^\w\s]+")


def regex_segment(text: str) -> list[str]:
    """Runs of word characters and runs of other non-space characters (the paper's regex)."""
    return WORD_PATTERN.findall(text)


_jieba_ready = False


def jieba_segment(text: str) -> list[str]:
    """Chinese words with jieba's default (precise) mode; whitespace tokens dropped."""
    global _jieba_ready
    import jieba

    if not _jieba_ready:
        # jieba logs its dictionary loading at DEBUG/INFO on every process start: keep trials quiet.
        jieba.setLogLevel(logging.WARNING)
        logging.getLogger("jieba").setLevel(logging.WARNING)
        _jieba_ready = True
    return [token.strip() for token in jieba.lcut(text) if token.strip()]


@dataclass(frozen=True)
class Segmenter:
    name: str
    segment: Callable[[str], list[str]]
    version: str  # part of cache keys: bump it when the segmenter's output changes


SEGMENTERS: dict[str, Segmenter] = {
    "regex": Segmenter("regex", regex_segment, version="1"),
    "jieba": Segmenter("jieba", jieba_segment, version="0.42-precise-1"),
}

DEFAULT_SEGMENTER = "regex"
LANGUAGE_SEGMENTERS: dict[str, str] = {"zh": "jieba"}


def get_segmenter(name: str) -> Segmenter:
    return lookup(SEGMENTERS, name, "segmenter")


def segmenter_for(lang: str) -> Segmenter:
    """The segmenter used for `lang` (jieba for Chinese, the regex otherwise)."""
    return get_segmenter(LANGUAGE_SEGMENTERS.get(lang, DEFAULT_SEGMENTER))


def segmentation_id(lang: str) -> str:
    """Names the segmentation of `lang` in cache keys (segmenter name and version)."""
    segmenter = segmenter_for(lang)
    return f"{segmenter.name}-{segmenter.version}"


def segment(text: str, lang: str) -> list[str]:
    """Words of one sentence of language `lang`."""
    return segmenter_for(lang).segment(text)


def segment_corpus(lines: Iterable[str], lang: str) -> list[list[str]]:
    """Words of each line, in order."""
    split = segmenter_for(lang).segment
    return [split(line) for line in lines]
