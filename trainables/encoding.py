"""From segmented words to subword batches, and back from subword states to word vectors.

The paper represents a word by its first subword (the reference's
`AdaptAlignmentToTokenizerMapper(first_subword_only=True)`), and puts a token-classification label on the first subword only, the other subwords
getting the ignore index.

Lone "▁" pieces. XLM-R's sentencepiece tokenizer emits a lone "▁" in front of many words (40% of
the tokens of the Chinese UD test set with e5-small's tokenizer, 6% of the English one). The
reference code deletes these ids from the model's input whenever the tokenizer is XLM-R's
(`LabelAlignmentMapper` in datasets/label_alignment.py, `AdaptAlignmentToTokenizerMapper` in
datasets/realignment_dataset.py and realignment_task.py: `isinstance(tokenizer,
(XLMRobertaTokenizer, XLMRobertaTokenizerFast))`), so the next piece becomes the word's first
subword. We apply the same test to the tokenizer, not to the model: e5-small is a BERT model whose
tokenizer_config.json names XLMRobertaTokenizerFast, so it loads as XLM-R's tokenizer and its lone
pieces are deleted, as they would have been by the reference. With `keep_lone_prefix=True` (or a
tokenizer of another class that has a "▁" piece) the pieces stay in the input and are only skipped
when locating a word's first subword. A lone "▁" is never a word's only piece (the Metaspace
pre-tokenizer attaches it to the word's first characters; a word that normalises to nothing has no
piece at all), so deleting it never leaves a word without a subword.

Length. The reference truncates first and deletes afterwards, so a lone piece takes room in the
`max_length` budget although it is not in the input: by default (`lone_prefix_takes_room=True`)
the same here, the pieces counted where they stood, then deleted; with False they are deleted
first and their room holds more words. A sentence is truncated to `max_length` (special tokens
included) or, with `windows=True`, cut into several rows of at most `max_length` tokens each,
every row with the special tokens, at word boundaries, so that every word lies in exactly one row
(the reference's overflow windows, `return_overflowing_tokens` with stride 0, cut at a subword
and label a straddling word twice).

Everything after tokenisation is vectorised: rows are compacted with a cumulative-sum scatter and a
word is located by a `scatter_reduce` over the flattened token grid, never by a Python loop over
words; the only loop is over the windows of the (few) sentences longer than a window.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from trainables.models import tokenizer_family

IGNORE_INDEX = -100  # the label value cross-entropy ignores (torch's default)
LONE_PREFIX_PIECES = ("▁",)  # sentencepiece word-boundary marker alone in a token
Pooling = Literal["first", "mean"]
POOLINGS: tuple[str, ...] = ("first", "mean")


@dataclass
class EncodedWords:
    """A tokenised batch of pre-segmented sentences plus the word <-> token maps.

    Row b holds (part of) sentence `sentence[b]`; without windows row b is sentence b. Word indexes
    are those of the whole sentence, also in a window that starts mid-sentence.
    `token_word[b, t]` is the index of the word that token t of row b belongs to, or -1 for
    special tokens, padding, kept lone "▁" pieces and second-segment tokens.
    `first_subword[b, w]` is the position of word w's first subword in row b, or -1 if the word
    is absent (sentence shorter, truncated away by `max_length`, or in another window).
    """

    inputs: dict[str, torch.Tensor]
    token_word: torch.Tensor  # (B, T) long
    first_subword: torch.Tensor  # (B, W) long
    sentence: torch.Tensor | None = None  # (B,) long: the input sentence of each row

    def __post_init__(self) -> None:
        if self.sentence is None:
            self.sentence = torch.arange(self.token_word.shape[0])

    @property
    def word_mask(self) -> torch.Tensor:
        """(B, W) bool: the word has at least one subword inside the row."""
        return self.first_subword >= 0

    def to(self, device: torch.device | str) -> "EncodedWords":
        return EncodedWords(
            inputs={k: v.to(device) for k, v in self.inputs.items()},
            token_word=self.token_word.to(device),
            first_subword=self.first_subword.to(device),
            sentence=self.sentence.to(device),
        )


def lone_prefix_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Vocabulary ids of the lone word-boundary pieces this tokenizer has (none for WordPiece)."""
    # convert_tokens_to_ids is a hash lookup; get_vocab() would copy the whole vocabulary (250k
    # entries for XLM-R) at every batch. A piece the vocabulary lacks comes back as the unknown id.
    ids = [tokenizer.convert_tokens_to_ids(piece) for piece in LONE_PREFIX_PIECES]
    return [i for i in ids if i is not None and i != tokenizer.unk_token_id]


def removes_lone_prefix(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether lone "▁" ids are deleted from this tokenizer's input: its model family's convention
    (trainables/models.py: XLM-R's tokenizer, the reference's isinstance test; module docstring)."""
    family = tokenizer_family(tokenizer)
    return family is not None and family.deletes_lone_prefix and bool(lone_prefix_ids(tokenizer))


def encode_words(
    tokenizer: PreTrainedTokenizerBase,
    sentences: Sequence[Sequence[str]],
    max_length: int | None,
    second_segments: Sequence[Sequence[str]] | None = None,
    *,
    keep_lone_prefix: bool = False,
    lone_prefix_takes_room: bool = True,
    windows: bool = False,
) -> EncodedWords:
    """Tokenise pre-segmented sentences (dynamic padding to the longest row, padding on the right).

    `max_length`: tokens per row, special tokens included (None: the tokenizer's limit). Lone "▁"
    pieces of XLM-R's tokenizer are deleted unless `keep_lone_prefix`; with
    `lone_prefix_takes_room` they count towards `max_length` as if still there (the reference
    truncated, then deleted), else they are deleted before the length is counted (module docstring).
    Without `windows` a longer sentence is truncated (words beyond have no subword); with it, it
    becomes several consecutive rows cut at word boundaries (`EncodedWords.sentence` says whose).
    `second_segments`, if given, are encoded as the pair segment (NLI-style), truncated by the
    tokenizer (longest first) before deletion; word maps refer to the first segment only.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"tokenizer {type(tokenizer).__name__} is not a fast tokenizer: word_ids() is needed")
    if windows and second_segments is not None:
        raise ValueError("encode_words: windows apply to single sentences, not to sentence pairs")
    limit = _length_limit(tokenizer, max_length)
    n_words = max((len(s) for s in sentences), default=0)
    if not sentences:
        empty = torch.zeros(0, 0, dtype=torch.long)
        return EncodedWords({"input_ids": empty, "attention_mask": empty}, empty, torch.zeros(0, n_words, dtype=torch.long))
    pair = second_segments is not None
    batch = tokenizer(
        [list(s) for s in sentences],
        [list(s) for s in second_segments] if pair else None,
        is_split_into_words=True,
        truncation="longest_first" if pair and limit is not None else False,
        max_length=limit if pair else None,
        padding=True,
        return_tensors="pt",
        verbose=False,  # whole sentences may exceed the model's limit: they are cut below
    )
    n_rows = batch["input_ids"].shape[0]
    attention = batch["attention_mask"].bool()
    raw_word = _index_grid([batch.word_ids(row) for row in range(n_rows)])  # -1: special or padding
    in_word = attention & (raw_word >= 0)
    first_segment = in_word
    if pair:
        first_segment = in_word & (_index_grid([batch.sequence_ids(row) for row in range(n_rows)]) == 0)

    lone = in_word & torch.isin(batch["input_ids"], torch.tensor(lone_prefix_ids(tokenizer), dtype=torch.long))
    delete = lone if (not keep_lone_prefix and removes_lone_prefix(tokenizer)) else torch.zeros_like(lone)
    keep = attention & ~delete
    content = keep & in_word
    special = keep & ~in_word

    if pair or limit is None:
        token_window = torch.where(content, 0, -1)
    else:
        budget = limit - special.sum(1)  # word tokens a row can hold
        if bool((budget < 1).any()):
            raise ValueError(f"max_length={limit} leaves no room for a word after the special tokens")
        # the tokens that take room in a row: the word tokens, and the deleted lone pieces when
        # they are counted as the reference's truncation counted them (before deleting)
        room = content | (delete & first_segment) if lone_prefix_takes_room else content
        token_window = _token_windows(content, room, raw_word, n_words, budget, windows)

    # One output row per (sentence, window); windows of a sentence in word order.
    n_windows = (token_window.max(1).values + 1).clamp(min=1)
    sentence = torch.repeat_interleave(torch.arange(n_rows), n_windows)
    window = torch.arange(len(sentence)) - torch.repeat_interleave(torch.cumsum(n_windows, 0) - n_windows, n_windows)
    select = special[sentence] | (token_window[sentence] == window.unsqueeze(1))
    token_word = torch.where(first_segment & ~lone, raw_word, -1)[sentence]
    pad_values = {"input_ids": int(tokenizer.pad_token_id), "token_type_ids": int(tokenizer.pad_token_type_id)}
    inputs = {
        name: _compact(values[sentence], select, pad_values.get(name, 0))
        for name, values in batch.items()
        if name != "attention_mask"
    }
    lengths = select.sum(1)
    inputs["attention_mask"] = (torch.arange(int(lengths.max())) < lengths.unsqueeze(1)).long()
    token_word = _compact(token_word, select, -1)
    first_subword = _first_token_of_each_word(token_word, n_words)
    return EncodedWords(inputs=inputs, token_word=token_word, first_subword=first_subword, sentence=sentence)


def _length_limit(tokenizer: PreTrainedTokenizerBase, max_length: int | None) -> int | None:
    """The row length limit: `max_length`, else the tokenizer's own (None if it has no real one)."""
    limit = max_length if max_length is not None else getattr(tokenizer, "model_max_length", None)
    if limit is not None and limit >= VERY_LARGE_LIMIT:  # transformers' "no limit" sentinel is 1e30
        return None
    if limit is not None and limit < 1:
        raise ValueError(f"max_length={limit} must be >= 1")
    return int(limit) if limit is not None else None


VERY_LARGE_LIMIT = 10**9


def _index_grid(rows: Sequence[Sequence[int | None]]) -> torch.Tensor:
    """(B, T) long from equal-length lists of ids or None (None -> -1), converted in one call."""
    grid = np.array(rows, dtype=np.float64)  # None becomes NaN
    return torch.from_numpy(np.nan_to_num(grid, nan=-1.0).astype(np.int64))


def _token_windows(
    content: torch.Tensor, room: torch.Tensor, word: torch.Tensor, n_words: int, budget: torch.Tensor,
    windows: bool,
) -> torch.Tensor:
    """(B, T) window index of each kept word token, -1 for the others and for tokens cut off.

    `room` marks the tokens that count towards a row's `budget` (the word tokens `content`, and
    possibly deleted pieces). Truncation: one window, the first `budget[b]` counted tokens (a word
    may be cut, as by the tokenizer's own truncation). Windows: greedy packing of whole words, each
    window as full as the next word allows; a single word longer than a window is alone in it, cut.
    """
    n_rows = content.shape[0]
    width = max(n_words, 1)
    rank = torch.cumsum(room.long(), 1) - 1  # position among the row's counted tokens
    word_window = torch.zeros(n_rows, width, dtype=torch.long)
    window_start = torch.zeros(n_rows, width, dtype=torch.long)  # rank of its window's first token
    if windows:
        pieces = torch.zeros(n_rows, width, dtype=torch.long)
        pieces.scatter_add_(1, word.clamp(min=0), room.long())
        totals = pieces.sum(1)
        for row in torch.nonzero(totals > budget).squeeze(1).tolist():
            ends = np.cumsum(pieces[row].numpy())  # token rank just past each word
            word_window[row], window_start[row] = _pack_words(ends, int(budget[row]))
    column = word.clamp(min=0)
    position = rank - window_start.gather(1, column)
    fits = content & (position < budget.unsqueeze(1))
    return torch.where(fits, word_window.gather(1, column), -1)


def _pack_words(ends: np.ndarray, budget: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy windows over words with cumulative token ends `ends`: (window, window start) per word."""
    window = np.zeros(len(ends), dtype=np.int64)
    start = np.zeros(len(ends), dtype=np.int64)
    first, offset, index = 0, 0, 0
    while first < len(ends):  # one iteration per window, not per word
        stop = max(int(np.searchsorted(ends, offset + budget, side="right")), first + 1)
        window[first:stop], start[first:stop] = index, offset
        offset, first, index = int(ends[stop - 1]), stop, index + 1
    return torch.from_numpy(window), torch.from_numpy(start)


def _compact(values: torch.Tensor, select: torch.Tensor, fill: int) -> torch.Tensor:
    """Each row's selected entries moved to its front, in order, the rest `fill` (re-padding)."""
    width = int(select.sum(1).max()) if select.numel() else 0
    out = torch.full((values.shape[0], width), fill, dtype=values.dtype)
    rows, _ = torch.nonzero(select, as_tuple=True)
    target = (torch.cumsum(select.long(), 1) - 1)[select]
    out[rows, target] = values[select]
    return out


def _first_token_of_each_word(token_word: torch.Tensor, n_words: int) -> torch.Tensor:
    n_sentences, n_tokens = token_word.shape
    positions = torch.arange(n_tokens).expand(n_sentences, n_tokens)
    valid = token_word >= 0
    rows = torch.arange(n_sentences).unsqueeze(1).expand_as(token_word)
    slot = (rows * n_words + token_word)[valid]
    none = n_tokens  # sentinel larger than any position
    first = torch.full((n_sentences * n_words,), none, dtype=torch.long)
    first.scatter_reduce_(0, slot, positions[valid], reduce="amin")
    first[first == none] = -1
    return first.view(n_sentences, n_words)


def pool_words(hidden: torch.Tensor, encoded: EncodedWords, pooling: Pooling = "first") -> torch.Tensor:
    """Word vectors from subword states.

    hidden: (..., B, T, H), e.g. all layers stacked as (L+1, B, T, H). Returns (..., B, W, H);
    absent words (see `EncodedWords.word_mask`) get zeros.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; valid: {', '.join(POOLINGS)}")
    *lead, n_sentences, n_tokens, width = hidden.shape
    first = encoded.first_subword.to(hidden.device)
    n_words = first.shape[1]
    if pooling == "first":
        index = first.clamp(min=0)
        index = index.view(*([1] * len(lead)), n_sentences, n_words, 1).expand(*lead, n_sentences, n_words, width)
        words = torch.gather(hidden, -2, index)
        return words * encoded.word_mask.to(hidden.device).unsqueeze(-1).to(hidden.dtype)
    token_word = encoded.token_word.to(hidden.device)
    valid = token_word >= 0
    rows = torch.arange(n_sentences, device=hidden.device).unsqueeze(1).expand_as(token_word)
    slot = (rows * n_words + token_word)[valid]  # (N,) word slot of each word-bearing token
    flat = hidden.reshape(*lead, n_sentences * n_tokens, width)[..., valid.flatten(), :]
    sums = hidden.new_zeros(*lead, n_sentences * n_words, width).index_add_(-2, slot, flat)
    counts = torch.zeros(n_sentences * n_words, device=hidden.device, dtype=hidden.dtype)
    counts.index_add_(0, slot, torch.ones_like(slot, dtype=hidden.dtype))
    means = sums / counts.clamp(min=1).unsqueeze(-1)
    return means.view(*lead, n_sentences, n_words, width)


def first_subword_labels(encoded: EncodedWords, labels: Sequence[Sequence[int]]) -> torch.Tensor:
    """(B, T) label tensor: each word's label on its first subword, IGNORE_INDEX elsewhere."""
    first = encoded.first_subword
    n_sentences, n_words = first.shape
    word_labels = torch.full((n_sentences, n_words), IGNORE_INDEX, dtype=torch.long)
    lengths = torch.tensor([len(l) for l in labels], dtype=torch.long)
    if len(labels) and int(lengths.max()) > 0:
        flat = torch.tensor([x for l in labels for x in l], dtype=torch.long)
        rows = torch.repeat_interleave(torch.arange(n_sentences), lengths)
        cols = torch.cat([torch.arange(int(n)) for n in lengths])
        word_labels[rows, cols] = flat
    token_labels = torch.full(encoded.token_word.shape, IGNORE_INDEX, dtype=torch.long)
    present = first >= 0
    token_labels[torch.nonzero(present, as_tuple=True)[0], first[present]] = word_labels[present]
    return token_labels
