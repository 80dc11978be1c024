"""From segmented words to subword batches, and back from subword states to word vectors.

The paper represents a word by its first subword (PAPER-NOTES, "A word's vector is its first
subword"), and puts a token-classification label on the first subword only, the other subwords
getting the ignore index. XLM-R-style tokenizers may emit a lone "▁" piece in front of a word
(e.g. before punctuation); that piece carries no information about the word, so it is skipped
and the next piece counts as the first subword.

Everything after tokenisation is vectorised: a word is located by a `scatter_reduce` over the
flattened token grid, never by a Python loop over words.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import torch
from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100  # the label value cross-entropy ignores (torch's default)
LONE_PREFIX_PIECES = ("▁",)  # sentencepiece word-boundary marker alone in a token
Pooling = Literal["first", "mean"]
POOLINGS: tuple[str, ...] = ("first", "mean")


@dataclass
class EncodedWords:
    """A tokenised batch of pre-segmented sentences plus the word <-> token maps.

    `token_word[b, t]` is the index of the word that token t of sentence b belongs to, or -1 for
    special tokens, padding, skipped lone "▁" pieces and second-segment tokens.
    `first_subword[b, w]` is the position of word w's first subword in sentence b, or -1 if the
    word is absent (sentence shorter, or truncated away by `max_length`).
    """

    inputs: dict[str, torch.Tensor]
    token_word: torch.Tensor  # (B, T) long
    first_subword: torch.Tensor  # (B, W) long

    @property
    def word_mask(self) -> torch.Tensor:
        """(B, W) bool: the word has at least one subword inside the batch."""
        return self.first_subword >= 0

    def to(self, device: torch.device | str) -> "EncodedWords":
        return EncodedWords(
            inputs={k: v.to(device) for k, v in self.inputs.items()},
            token_word=self.token_word.to(device),
            first_subword=self.first_subword.to(device),
        )


def lone_prefix_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Vocabulary ids of the lone word-boundary pieces this tokenizer has (none for WordPiece)."""
    # convert_tokens_to_ids is a hash lookup; get_vocab() would copy the whole vocabulary (250k
    # entries for XLM-R) at every batch. A piece the vocabulary lacks comes back as the unknown id.
    ids = [tokenizer.convert_tokens_to_ids(piece) for piece in LONE_PREFIX_PIECES]
    return [i for i in ids if i is not None and i != tokenizer.unk_token_id]


def encode_words(
    tokenizer: PreTrainedTokenizerBase,
    sentences: Sequence[Sequence[str]],
    max_length: int,
    second_segments: Sequence[Sequence[str]] | None = None,
) -> EncodedWords:
    """Tokenise pre-segmented sentences (dynamic padding to the longest in the batch).

    `second_segments`, if given, are encoded as the pair segment (NLI-style); word maps refer to
    the first segment only.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"tokenizer {type(tokenizer).__name__} is not a fast tokenizer: word_ids() is needed")
    batch = tokenizer(
        [list(s) for s in sentences],
        [list(s) for s in second_segments] if second_segments is not None else None,
        is_split_into_words=True,
        truncation=True,
        max_length=max_length,
        padding=True,
        return_tensors="pt",
    )
    n_sentences, n_tokens = batch["input_ids"].shape
    word_ids = torch.full((n_sentences, n_tokens), -1, dtype=torch.long)
    for row in range(n_sentences):  # word_ids() is a per-sentence Python list from the tokenizer
        ids = batch.word_ids(row)
        seq = batch.sequence_ids(row)
        word_ids[row] = torch.tensor([w if (w is not None and s == 0) else -1 for w, s in zip(ids, seq)])
    lone = torch.isin(batch["input_ids"], torch.tensor(lone_prefix_ids(tokenizer), dtype=torch.long))
    token_word = word_ids.masked_fill(lone, -1)
    n_words = max((len(s) for s in sentences), default=0)
    first_subword = _first_token_of_each_word(token_word, n_words)
    inputs = {k: v for k, v in batch.items()}
    return EncodedWords(inputs=inputs, token_word=token_word, first_subword=first_subword)


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
