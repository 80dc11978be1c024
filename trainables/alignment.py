"""Word-level alignment of a multilingual encoder (Gaschi et al. 2022; Gaschi et al. 2023, §3.2).

A sample of translated word pairs in context (default 1000, seeded) is encoded with the model;
a word is its first subword (optionally the mean of its subwords) at every layer 0..L, layer 0
being the embedding output. Each word then searches its nearest neighbour by cosine similarity,
and alignment is the top-1 accuracy of that search:

- weak: the candidates are the other language's words of the sample;
- strong: the candidates are the other language's words, then the query's own language's words.

Both directions are measured: `en-x` (English words search their translation) and `x-en`.

The sample (setting `align_sampling`). "sentences", the reference code's
(`training/alignment_evaluation_loops.evaluate_alignment` over
`datasets/realignment_task.get_realignment_dataset_for_one_pair`): the sentences that hold pairs
are shuffled with the seed and taken in turn, each with all of its pairs, until `align_pairs`
pairs; only the last sentence is cut (to its first pairs in English word order). Words of one
sentence are thus each other's distractors. The shuffle is the one the reference ran, HF
datasets 2.4.0's `IterableDataset.shuffle(seed=42, buffer_size=10_000)` (`shuffled_positions`).
"uniform": `align_pairs` pairs drawn uniformly from all pairs, kept in corpus order.

The search follows `retrieval.evaluate_alignment_with_cosim`: a plain argmax, so on a tie the
first candidate wins; the strong candidates are the other language's words (indexes 0..N-1) then
the query's own language's words (N..2N-1), the query's similarity to itself set to 0 (not
excluded: a query whose every other cosine is negative finds itself, which counts as wrong).
Exact ties occur at layer 0, where a word's vector depends only on its token and position, so
the order of the sample matters there: it is kept as sampled, like the reference.

Length limit (`align_max_length`, None: the tokenizer's limit). The reference measured the
pre-trained model at 128 subwords and the fine-tuned one at the tokenizer's limit
(`scripts/2023_acl/finetuning_and_alignment.py`): a measurement before fine-tuning reads
`align_max_length_before` instead (`before_finetuning`). A pair is measurable when both
of its words keep a subword after truncation; the reference maps the pairs to subwords and
drops the unmeasurable ones before it counts them (`AdaptAlignmentToTokenizerMapper.realign_pairs`
and the `filter` after it), so the sample holds measurable pairs only. A sampled pair that still
has no vector is dropped with a warning; `n_dropped` in the results counts them, `n_pairs` says
how many were used.

Run as a command: `python -m trainables.alignment --model PATH --data-dir DIR --corpus ntrex
--pairs dico --langs ar,es,fr,ru,zh --n-pairs 1000 --seed 0 --out FILE.csv`.
"""
from __future__ import annotations

import argparse
import itertools
import logging
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from trainables import data
from trainables.cache import atomic_save
from trainables.encoding import POOLINGS, encode_words, pool_words
from trainables.models import model_family
from trainables.pairs import PAIR_COLUMNS, PAIR_SOURCES, AlignedCorpus, PairContext, extract_pairs
from trainables.realignment import input_language
from trainables.runtime import autocast, eval_mode, resolve_device
from trainables.settings import Settings
from trainables.registry import unknown_name
from trainables.shuffle import SHUFFLE_BUFFER, shuffled_positions

log = logging.getLogger(__name__)

RESULT_COLUMNS: tuple[str, ...] = ("lang", "direction", "kind", "layer", "accuracy", "n_pairs", "n_dropped")
DUMP_COLUMNS: tuple[str, ...] = ("lang",) + PAIR_COLUMNS
KINDS: tuple[str, ...] = ("strong", "weak")
DIRECTIONS: tuple[str, ...] = ("en-x", "x-en")
SAMPLINGS: tuple[str, ...] = ("sentences", "uniform")
# Part of cache keys of measured alignment: bump when the sample or the search changes its result
# (2: the reference's sentence sample, argmax search and length filter; 3: 128 subwords before
# fine-tuning, lone pieces counted in the limit).
MEASUREMENT_VERSION = "3"
# Upper bound on one block of similarities (layers x queries x candidates, fp32: 256 MiB), so that
# large samples or deep models are searched in query chunks instead of one huge matrix.
MAX_SIMILARITY_ELEMENTS = 2**26
MIN_PAIRS = 2  # with a single pair, the weak search has no wrong candidate and is trivially right
# transformers gives a tokenizer that declares no limit model_max_length = int(1e30).
NO_TOKENIZER_LIMIT = 10**9
ENCODE_BATCH = 256  # sentences tokenised at a time to check which pairs are measurable
# A pair predicate over rows of a pairs table: True where the pair can be measured.
Measurable = Callable[[pd.DataFrame], np.ndarray]


# --------------------------------------------------------------------------------------------
# Sampling


def _sorted_pairs(pairs: pd.DataFrame) -> pd.DataFrame:
    # Within a sentence the reference keeps its alignment file's order, which for dictionary pairs
    # is the English word order (realignment_dataset.DatasetMapperForRealignment.find_aligned_words).
    return pairs.sort_values(["sentence", "src_index"], kind="stable").reset_index(drop=True)


def _sample_sentences(pairs: pd.DataFrame, n: int, seed: int, measurable: Measurable | None,
                      limit: int | None = None) -> pd.DataFrame:
    """The reference's sample: whole shuffled sentences in turn, measurable pairs only, the last cut.
    `limit`: how many shuffled positions may be drawn (a corpus head's, `sample_pairs`)."""
    table = _sorted_pairs(pairs)
    sentence_ids, starts, counts = np.unique(table["sentence"].to_numpy(), return_index=True, return_counts=True)
    order = shuffled_positions(len(sentence_ids), seed)
    # sentences examined per round: enough for n pairs at the corpus's mean, then twice as many
    per_round = max(16, int(1.25 * n / max(1.0, len(table) / max(1, len(sentence_ids)))) + 1)
    taken: list[pd.DataFrame] = []
    total = drawn = 0
    while total < n:
        positions = np.fromiter(itertools.islice(order, per_round), dtype=np.int64)
        drawn += len(positions)
        if limit is not None and drawn > limit:
            raise ValueError(f"the alignment sample drew {drawn} shuffled sentences, past the {limit} that the"
                             " extracted head of the corpus makes certain: extract a longer head (min_paired)")
        if len(positions) == 0:
            break  # every sentence used: fewer pairs than asked
        lengths = counts[positions]
        first_row = np.repeat(starts[positions] - np.cumsum(lengths) + lengths, lengths)
        rows = first_row + np.arange(int(lengths.sum()))  # each sentence's rows, sentence by sentence
        candidates = table.iloc[rows]
        if measurable is not None:
            candidates = candidates[np.asarray(measurable(candidates), dtype=bool)]
        candidates = candidates.iloc[: n - total]
        taken.append(candidates)
        total += len(candidates)
        per_round *= 2
    return pd.concat(taken, ignore_index=True) if taken else table.iloc[:0].reset_index(drop=True)


def _sample_uniform(pairs: pd.DataFrame, n: int, seed: int, measurable: Measurable | None) -> pd.DataFrame:
    """n pairs drawn uniformly among the measurable pairs, in corpus order.

    The draw is made on all pairs first and kept when all of its pairs are measurable (then it is
    the plain uniform draw); otherwise it is redrawn among the measurable pairs. Either way every
    n-subset of measurable pairs is equally likely, and only the drawn sentences are tokenised
    in the common case.
    """
    table = _sorted_pairs(pairs)
    if len(table) <= n:
        chosen = table
    else:
        chosen = table.iloc[np.sort(np.random.default_rng(seed).choice(len(table), size=n, replace=False))]
    if measurable is None:
        return chosen.reset_index(drop=True)
    ok = np.asarray(measurable(chosen), dtype=bool)
    if ok.all():
        return chosen.reset_index(drop=True)
    eligible = table[np.asarray(measurable(table), dtype=bool)].reset_index(drop=True)
    return _sample_uniform(eligible, n, seed, None)


def sample_pairs(
    pairs: pd.DataFrame, n: int, seed: int, sampling: str = "sentences", measurable: Measurable | None = None,
    head_paired: int | None = None,
) -> pd.DataFrame:
    """The `n` pairs alignment is measured on (all measurable ones if fewer), in search order.

    `sampling`: "sentences" (the reference: whole shuffled sentences until n pairs, the last one
    cut, in sampled order) or "uniform" (n pairs drawn uniformly, in corpus order).
    `measurable(rows) -> bool array` says which pairs can be measured (both words within the
    length limit); unmeasurable pairs are never sampled. None: all pairs are measurable.
    `head_paired`: the pairs are those of the corpus's head only, this many paired sentences
    (`AlignedCorpus.head_paired`): the sentence sample is then the whole corpus's as long as it
    draws fewer than head_paired - SHUFFLE_BUFFER shuffled positions, and raises otherwise.
    """
    missing = [c for c in PAIR_COLUMNS if c not in pairs.columns]
    if missing:
        raise ValueError(f"word pairs lack column(s) {', '.join(missing)}; expected {', '.join(PAIR_COLUMNS)}")
    if n < 0:
        raise ValueError(f"number of pairs to sample must be >= 0, got {n}")
    if sampling not in SAMPLINGS:
        raise ValueError(f"setting align_sampling={sampling!r}: valid are {', '.join(map(repr, SAMPLINGS))}")
    if sampling == "uniform":
        return _sample_uniform(pairs[list(PAIR_COLUMNS)], n, seed, measurable)
    limit = None if head_paired is None else head_paired - SHUFFLE_BUFFER
    return _sample_sentences(pairs[list(PAIR_COLUMNS)], n, seed, measurable, limit)


# --------------------------------------------------------------------------------------------
# Word vectors


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def resolve_max_length(tokenizer: PreTrainedTokenizerBase, max_length: int | None) -> int:
    """`align_max_length`, or the tokenizer's limit when None (the reference after fine-tuning)."""
    if max_length is not None:
        if max_length < 1:
            raise ValueError(f"setting align_max_length={max_length} must be >= 1 (or None: the tokenizer's limit)")
        return int(max_length)
    limit = getattr(tokenizer, "model_max_length", None)
    if not isinstance(limit, int) or not 0 < limit < NO_TOKENIZER_LIMIT:
        raise ValueError(
            f"tokenizer {type(tokenizer).__name__} declares no length limit (model_max_length={limit}):"
            " set align_max_length"
        )
    return limit


def before_finetuning(settings: Settings) -> Settings:
    """The settings of a measurement before fine-tuning (the pre-trained or realigned model): its
    length limit is `align_max_length_before` (the reference's 128), not `align_max_length`."""
    return replace(settings, align_max_length=settings.align_max_length_before)


def _checked_index(sentences: Sequence[Sequence[str]], word_index: torch.Tensor) -> torch.Tensor:
    word_index = torch.as_tensor(word_index, dtype=torch.long).cpu()
    if word_index.ndim != 2 or word_index.shape[1] != 2:
        raise ValueError(f"word_index must have shape (N, 2) (sentence, word), got {tuple(word_index.shape)}")
    if word_index.shape[0] == 0:
        raise ValueError("no words to encode: word_index is empty")
    lengths = torch.tensor([len(s) for s in sentences], dtype=torch.long)
    sentence_of, word_of = word_index[:, 0], word_index[:, 1]
    bad = (sentence_of < 0) | (sentence_of >= len(sentences))
    if bad.any():
        row = int(bad.nonzero()[0])
        raise ValueError(f"word_index row {row}: sentence {int(sentence_of[row])} outside 0..{len(sentences) - 1}")
    bad = (word_of < 0) | (word_of >= lengths[sentence_of])
    if bad.any():
        row = int(bad.nonzero()[0])
        raise ValueError(
            f"word_index row {row}: word {int(word_of[row])} outside sentence {int(sentence_of[row])}"
            f" of {int(lengths[sentence_of[row]])} words"
        )
    return word_index


def _batch_plan(
    sentences: Sequence[Sequence[str]], sentence_of: torch.Tensor, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(unique sentences, their encoding order, each word's batch, each word's row in it).

    Longest sentences first, so that a batch holds sentences of similar length (less padding).
    """
    if batch_size < 1:
        raise ValueError(f"setting align_batch_size={batch_size} must be >= 1")
    lengths = torch.tensor([len(s) for s in sentences], dtype=torch.long)
    unique, query_sentence = torch.unique(sentence_of, return_inverse=True)
    order = torch.argsort(lengths[unique], descending=True, stable=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order))
    return unique, order, rank[query_sentence] // batch_size, rank[query_sentence] % batch_size


def _encode(
    tokenizer: PreTrainedTokenizerBase, sentences: Sequence[Sequence[str]], max_length: int, settings: Settings
):
    return encode_words(tokenizer, sentences, max_length, keep_lone_prefix=settings.keep_lone_prefix,
                        lone_prefix_takes_room=settings.lone_prefix_takes_room)


def words_present(
    tokenizer: PreTrainedTokenizerBase,
    sentences: Sequence[Sequence[str]],
    word_index: torch.Tensor,
    settings: Settings,
) -> torch.Tensor:
    """(N,) bool: word `word_index[i] = (sentence, word)` keeps a subword once its sentence is
    encoded as for the model (`align_max_length`, `keep_lone_prefix`). Tokenisation only."""
    word_index = _checked_index(sentences, word_index)
    max_length = resolve_max_length(tokenizer, settings.align_max_length)
    unique, order, query_batch, query_row = _batch_plan(sentences, word_index[:, 0], ENCODE_BATCH)
    present = torch.zeros(len(word_index), dtype=torch.bool)
    for batch, start in enumerate(range(0, len(order), ENCODE_BATCH)):
        batch_sentences = [sentences[i] for i in unique[order[start : start + ENCODE_BATCH]].tolist()]
        encoded = _encode(tokenizer, batch_sentences, max_length, settings)
        wanted = (query_batch == batch).nonzero().squeeze(1)
        present[wanted] = encoded.word_mask[query_row[wanted], word_index[wanted, 1]]
    return present


def measurable_pairs(
    tokenizer: PreTrainedTokenizerBase, corpus: AlignedCorpus, pairs: pd.DataFrame, settings: Settings
) -> np.ndarray:
    """(len(pairs),) bool: both words of the pair keep a subword (see `words_present`)."""
    if len(pairs) == 0:
        return np.zeros(0, dtype=bool)
    sentence = torch.tensor(pairs["sentence"].to_numpy(), dtype=torch.long)
    ok = torch.ones(len(pairs), dtype=torch.bool)
    for words, column in ((corpus.en_words, "src_index"), (corpus.x_words, "tgt_index")):
        index = torch.stack([sentence, torch.tensor(pairs[column].to_numpy(), dtype=torch.long)], 1)
        ok &= words_present(tokenizer, words, index, settings)
    return ok.numpy()


def word_vectors_all_layers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sentences: Sequence[Sequence[str]],
    word_index: torch.Tensor,
    settings: Settings,
    return_present: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Vectors of the words `word_index[i] = (sentence, word)` at every layer: (L+1, N, H) fp32.

    Only the sentences that hold a requested word are encoded, `align_batch_size` at a time,
    longest first; one forward pass gives all layers (the model family's `hidden_states`). Words
    pooled by `settings.align_pooling`. A word truncated away by `align_max_length` (None: the
    tokenizer's limit) gets a zero vector; with `return_present=True` the (N,) bool mask of
    words that have a vector is returned too. Result on the model's device.
    `on_batch(n)`, if given, is called after each forward pass with the number of sentences it encoded.
    """
    word_index = _checked_index(sentences, word_index)
    max_length = resolve_max_length(tokenizer, settings.align_max_length)
    n_words = word_index.shape[0]
    device = _model_device(model)
    family = model_family(model)
    unique, order, query_batch, query_row = _batch_plan(sentences, word_index[:, 0], settings.align_batch_size)
    batch_size = settings.align_batch_size
    vectors: torch.Tensor | None = None
    present = torch.zeros(n_words, dtype=torch.bool)
    with eval_mode(model):
        for batch, start in enumerate(range(0, len(order), batch_size)):
            batch_sentences = [sentences[i] for i in unique[order[start : start + batch_size]].tolist()]
            encoded = _encode(tokenizer, batch_sentences, max_length, settings)
            with autocast(settings, device):
                hidden = family.hidden_states(model, encoded.inputs, device)
            hidden = hidden.float()  # (L+1, B, T, H)
            words = pool_words(hidden, encoded, settings.align_pooling)  # (L+1, B, W, H)
            wanted = (query_batch == batch).nonzero().squeeze(1)
            rows, cols = query_row[wanted], word_index[wanted, 1]
            if vectors is None:
                vectors = hidden.new_zeros(hidden.shape[0], n_words, hidden.shape[-1])
            vectors[:, wanted.to(device)] = words[:, rows.to(device), cols.to(device)]
            present[wanted] = encoded.word_mask[rows, cols]
            if on_batch is not None:
                on_batch(len(batch_sentences))
    assert vectors is not None  # n_words > 0, so at least one batch ran
    return (vectors, present.to(device)) if return_present else vectors


# --------------------------------------------------------------------------------------------
# Nearest-neighbour search


def _chunk_size(n_layers: int, n_queries: int, n_candidates: int, chunk: int | None) -> int:
    if chunk is not None:
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        return chunk
    return max(1, min(n_queries, MAX_SIMILARITY_ELEMENTS // max(1, n_layers * n_candidates)))


def _direction_correct(
    queries: torch.Tensor, translations: torch.Tensor, chunk: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(weak, strong) correctness, each (L+1, N) bool, of queries searching their translations.

    Inputs are unit vectors, row i of `translations` being the translation of row i of `queries`.
    The rule of `retrieval.evaluate_alignment_with_cosim`: weak = argmax over the translation
    side is i (first index wins a tie); strong = argmax over [translation side, query side] with
    the query's self-similarity set to 0 is i. The second is computed without concatenating: the
    winner lies on the translation side iff its best similarity is >= the query side's best
    (the translation side comes first, so it wins a tie between the two).
    """
    n_layers, n_pairs, _ = queries.shape
    weak = torch.empty(n_layers, n_pairs, dtype=torch.bool, device=queries.device)
    strong = torch.empty_like(weak)
    candidates = torch.arange(n_pairs, device=queries.device)
    for start in range(0, n_pairs, chunk):
        rows = torch.arange(start, min(start + chunk, n_pairs), device=queries.device)
        block = queries[:, rows]
        to_other = torch.bmm(block, translations.transpose(1, 2))  # (L+1, C, N)
        guess = to_other.argmax(dim=-1)  # (L+1, C): first index of the maximum
        best_other = to_other.gather(-1, guess.unsqueeze(-1)).squeeze(-1)
        to_own = torch.bmm(block, queries.transpose(1, 2))
        to_own = to_own.masked_fill(rows.unsqueeze(1) == candidates.unsqueeze(0), 0.0)  # the reference's 0
        weak_block = guess == rows.unsqueeze(0)
        weak[:, rows] = weak_block
        strong[:, rows] = weak_block & (best_other >= to_own.amax(dim=-1))
    return weak, strong


def correct_predictions(
    src: torch.Tensor, tgt: torch.Tensor, chunk: int | None = None
) -> dict[tuple[str, str], torch.Tensor]:
    """Per query, whether its nearest neighbour is its translation: {(kind, direction): (L+1, N) bool}.

    src, tgt: (L+1, N, H), pair i being (src[i], tgt[i]); en-x queries are the src words, x-en
    queries the tgt words. Cosine similarity = normalise, then batched matrix products over
    layers, `chunk` queries at a time (None: as many as keep a block under
    MAX_SIMILARITY_ELEMENTS). Search rule: see `_direction_correct`.
    """
    if src.shape != tgt.shape or src.ndim != 3:
        raise ValueError(f"src and tgt must both be (L+1, N, H), got {tuple(src.shape)} and {tuple(tgt.shape)}")
    n_layers, n_pairs, _ = src.shape
    if n_pairs < MIN_PAIRS:
        raise ValueError(f"alignment needs at least {MIN_PAIRS} word pairs, got {n_pairs}")
    src_unit = F.normalize(src.float(), dim=-1)
    tgt_unit = F.normalize(tgt.float(), dim=-1)
    size = _chunk_size(n_layers, n_pairs, n_pairs, chunk)
    result: dict[tuple[str, str], torch.Tensor] = {}
    for direction, (queries, translations) in {"en-x": (src_unit, tgt_unit), "x-en": (tgt_unit, src_unit)}.items():
        result[("weak", direction)], result[("strong", direction)] = _direction_correct(queries, translations, size)
    return result


def alignment_accuracy(
    src: torch.Tensor, tgt: torch.Tensor, chunk: int | None = None
) -> dict[tuple[str, str], torch.Tensor]:
    """Top-1 nearest-neighbour accuracy per layer: {(kind, direction): (L+1,) float64}.

    See `correct_predictions` for the inputs and the search rule.
    """
    n_pairs = src.shape[1] if src.ndim == 3 else 0
    # float64 counts / N: accuracies print as the exact fractions they are (0.108, not 0.1080000028)
    return {key: correct.sum(dim=1, dtype=torch.float64) / n_pairs
            for key, correct in correct_predictions(src, tgt, chunk).items()}


# --------------------------------------------------------------------------------------------
# Measurement over languages


def alignment_samples(
    tokenizer: PreTrainedTokenizerBase,
    corpora: Mapping[str, AlignedCorpus],
    settings: Settings,
    n_pairs: int | None = None,
    seed: int | None = None,
) -> dict[str, pd.DataFrame]:
    """Each language's sample of measurable pairs (`sample_pairs`), in search order: what
    `measure_alignment` measures. Tokenisation only. `n_pairs` / `seed` default to
    `settings.align_pairs` / `settings.align_seed`; the same seed serves every language."""
    n_pairs = settings.align_pairs if n_pairs is None else n_pairs
    seed = settings.align_seed if seed is None else seed
    max_length = resolve_max_length(tokenizer, settings.align_max_length)
    samples: dict[str, pd.DataFrame] = {}
    for lang, corpus in corpora.items():
        samples[lang] = sample = sample_pairs(
            corpus.pairs, n_pairs, seed, settings.align_sampling,
            measurable=lambda candidates, corpus=corpus: measurable_pairs(tokenizer, corpus, candidates, settings),
            head_paired=getattr(corpus, "head_paired", None),
        )
        if len(sample) < MIN_PAIRS:
            raise ValueError(
                f"language {lang}: only {len(sample)} measurable word pair(s) (align_max_length={max_length})"
            )
    return samples


def measure_alignment(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    corpora: Mapping[str, AlignedCorpus],
    settings: Settings,
    n_pairs: int | None = None,
    seed: int | None = None,
    return_pairs: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """Alignment of `model` on each language's `AlignedCorpus`: tidy rows of RESULT_COLUMNS.

    The sample (`alignment_samples`) follows `settings.align_sampling` and holds measurable
    pairs only (see the module's note on the length limit). With
    `return_pairs=True`, also returns the pairs actually used (DUMP_COLUMNS), in search order,
    e.g. for `--dump-pairs`.

    `on_progress(done, total)`, if given, follows the encoding, the long part: sentences encoded
    so far of all languages' sampled sentences, both sides (0 of total once every language is
    sampled, after each forward pass, and total of total at the end).
    """
    max_length = resolve_max_length(tokenizer, settings.align_max_length)
    # every language sampled first (tokenisation only), so that the encoding's total is known
    samples = alignment_samples(tokenizer, corpora, settings, n_pairs, seed)
    # each side encodes the sample's distinct sentences once (word_vectors_all_layers)
    total = sum(2 * int(sample["sentence"].nunique()) for sample in samples.values())
    encoded = 0

    def count_batch(n_sentences: int) -> None:
        nonlocal encoded
        encoded += n_sentences
        if on_progress is not None:
            on_progress(encoded, total)

    if on_progress is not None:
        on_progress(0, total)
    rows: list[dict[str, Any]] = []
    used: list[pd.DataFrame] = []
    for lang, corpus in corpora.items():
        sample = samples[lang]
        sentence = torch.tensor(sample["sentence"].to_numpy(), dtype=torch.long)
        src_index = torch.stack([sentence, torch.tensor(sample["src_index"].to_numpy(), dtype=torch.long)], 1)
        tgt_index = torch.stack([sentence, torch.tensor(sample["tgt_index"].to_numpy(), dtype=torch.long)], 1)
        src, src_present = word_vectors_all_layers(
            model, tokenizer, corpus.en_words, src_index, settings, return_present=True, on_batch=count_batch
        )
        with input_language(model, lang):  # a model with language maps (realign="linear") maps these
            tgt, tgt_present = word_vectors_all_layers(
                model, tokenizer, corpus.x_words, tgt_index, settings, return_present=True, on_batch=count_batch
            )
        keep = src_present & tgt_present
        kept = int(keep.sum())
        dropped = len(sample) - kept
        if dropped:
            log.warning(f"alignment {lang}: {dropped} of {len(sample)} sampled pairs have no vector"
                        f" (align_max_length={max_length}) and were dropped")
        if kept < MIN_PAIRS:
            raise ValueError(f"language {lang}: {kept} of {len(sample)} sampled pairs have a vector")
        accuracy = alignment_accuracy(src[:, keep], tgt[:, keep])
        for (kind, direction), per_layer in accuracy.items():
            for layer, value in enumerate(per_layer.tolist()):
                rows.append(dict(lang=lang, direction=direction, kind=kind, layer=layer, accuracy=value,
                                 n_pairs=kept, n_dropped=dropped))
        used.append(sample[keep.cpu().numpy()].assign(lang=lang)[list(DUMP_COLUMNS)])
    table = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    table = table.sort_values(["lang", "direction", "kind", "layer"], kind="stable").reset_index(drop=True)
    if not return_pairs:
        return table
    pairs = pd.concat(used, ignore_index=True) if used else pd.DataFrame(columns=list(DUMP_COLUMNS))
    return table, pairs


def alignment_metrics(table: pd.DataFrame) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """{kind: {direction: {lang: {str(layer): accuracy}}}}, to report as `align/{stage}/...`."""
    metrics: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for row in table.itertuples(index=False):
        by_lang = metrics.setdefault(row.kind, {}).setdefault(row.direction, {}).setdefault(row.lang, {})
        by_lang[str(int(row.layer))] = float(row.accuracy)
    return metrics


# --------------------------------------------------------------------------------------------
# Command line


def render_tables(table: pd.DataFrame) -> list[Any]:
    """One rich table per (kind, direction): layers as rows, languages (and their mean) as columns."""
    from rich.table import Table

    langs = list(dict.fromkeys(table["lang"]))
    counts = table.groupby("lang", sort=False)[["n_pairs", "n_dropped"]].first()
    caption = "pairs used: " + ", ".join(f"{lang} {int(counts.loc[lang, 'n_pairs'])}" for lang in langs)
    if counts["n_dropped"].any():
        caption += "; dropped: " + ", ".join(f"{lang} {int(counts.loc[lang, 'n_dropped'])}" for lang in langs)
    rendered = []
    for kind in KINDS:
        for direction in DIRECTIONS:
            part = table[(table["kind"] == kind) & (table["direction"] == direction)]
            grid = part.pivot(index="layer", columns="lang", values="accuracy")[langs]
            view = Table(title=f"{kind} alignment, {direction} (top-1 accuracy)", caption=caption)
            view.add_column("layer", justify="right")
            for lang in langs:
                view.add_column(lang, justify="right")
            view.add_column("mean", justify="right")
            for layer, values in grid.iterrows():
                view.add_row(str(layer), *(f"{v:.3f}" for v in values), f"{values.mean():.3f}")
            rendered.append(view)
    return rendered


def _parser() -> argparse.ArgumentParser:
    defaults = Settings()
    parser = argparse.ArgumentParser(
        prog="python -m trainables.alignment",
        description="Measure a model's word-level alignment (strong/weak, en-x/x-en, every layer).",
    )
    parser.add_argument("--model", required=True, help="model directory or name")
    parser.add_argument("--data-dir", default=None, help="local data (layout of ../shared/data); else $SWEEP_DATA_DIR")
    parser.add_argument("--cache-dir", default=None, help="cache of word pairs; else $SWEEP_CACHE_DIR")
    parser.add_argument("--corpus", default="ntrex", help="parallel corpus (default: ntrex)")
    parser.add_argument("--pairs", default="dico", help="word-pair source: dico, fastalign or awesome")
    parser.add_argument("--langs", default=",".join(defaults.langs), help="comma-separated target languages")
    parser.add_argument("--n-pairs", type=int, default=defaults.align_pairs, help="pairs sampled per language")
    parser.add_argument("--seed", type=int, default=defaults.align_seed, help="sampling seed")
    parser.add_argument("--sampling", default=defaults.align_sampling,
                        help=f"{' or '.join(SAMPLINGS)} (default: {defaults.align_sampling})")
    parser.add_argument("--pooling", default=defaults.align_pooling, help=f"word vector: {' or '.join(POOLINGS)}")
    parser.add_argument("--keep-lone-prefix", action="store_true",
                        help="keep XLM-R's lone '▁' ids in the model input (default: deleted, as the reference)")
    parser.add_argument("--parallel-subset", type=int, default=None, help="first N sentence pairs of the corpus")
    parser.add_argument("--batch-size", type=int, default=defaults.align_batch_size, help="sentences per forward pass")
    parser.add_argument("--max-length", type=_max_length_argument, default=defaults.align_max_length_before,
                        help=f"subwords per sentence (default {defaults.align_max_length_before}: the reference's limit"
                             " for a model before fine-tuning; 'none': the tokenizer's limit, the reference's after)")
    parser.add_argument("--device", default=defaults.device, help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--out", default=None, help="CSV of results (" + ", ".join(RESULT_COLUMNS) + ")")
    parser.add_argument("--dump-pairs", default=None, help="TSV of the sampled pairs actually used, in search order")
    return parser


def _max_length_argument(value: str) -> int | None:
    """`--max-length`: a whole number, or "none" for the tokenizer's limit."""
    if value.strip().lower() == "none":
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or 'none', got {value!r}") from None


def _unknown(what: str, name: str, valid: Sequence[str]) -> str:
    return f"error: {unknown_name(what, name, valid)}"


def _validate_names(args: argparse.Namespace, langs: tuple[str, ...]) -> str | None:
    """The one-line complaint about an unknown pair source, corpus, language or pooling, if any."""
    if args.pairs not in PAIR_SOURCES:
        return _unknown("pair source", args.pairs, list(PAIR_SOURCES))
    if args.pooling not in POOLINGS:
        return _unknown("pooling", args.pooling, list(POOLINGS))
    if args.sampling not in SAMPLINGS:
        return _unknown("sampling", args.sampling, list(SAMPLINGS))
    if not langs:
        return "error: --langs is empty"
    try:
        corpus = data.parallel_source(args.corpus, args.data_dir)  # registered, or parallel/<name> locally
        for lang in langs:
            corpus.validate(lang=lang)
    except ValueError as error:
        return f"error: {' '.join(str(error).split())}"
    return None


def _validate_numbers(args: argparse.Namespace) -> str | None:
    if args.n_pairs < MIN_PAIRS:
        return f"error: --n-pairs {args.n_pairs}: alignment needs at least {MIN_PAIRS} pairs"
    if args.batch_size < 1:
        return f"error: --batch-size {args.batch_size} must be >= 1"
    if args.max_length is not None and args.max_length < 1:
        return f"error: --max-length {args.max_length} must be >= 1"
    if args.parallel_subset is not None and args.parallel_subset < 1:
        return f"error: --parallel-subset {args.parallel_subset} must be >= 1"
    return None


def _validate_output(option: str, value: str | None) -> str | None:
    """A file we can write: not a folder, in an existing, writable folder (tried, not guessed)."""
    if value is None:
        return None
    path = Path(value).expanduser()
    if path.is_dir():
        return f"error: {option} {value} is a folder; give a file name"
    folder = path.parent
    if not folder.is_dir():
        return f"error: {option} {value}: folder {folder} does not exist"
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{path.name}.", suffix=".probe"):
            pass
    except OSError as error:
        return f"error: {option} {value}: folder {folder} is not writable ({error.strerror or error})"
    return None


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _load_quietly(tokenizer_class: Any, model_class: Any, name: str) -> tuple[Any, Any]:
    """Tokenizer and encoder without transformers' progress bar and load report (an encoder
    loaded without its pre-training pooler is expected here), so that stderr holds our lines."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        from trainables.model_files import pretrained_kwargs  # a hub id at its pinned revision

        return (tokenizer_class.from_pretrained(name, **pretrained_kwargs(name)),
                model_class.from_pretrained(name, **pretrained_kwargs(name)))
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit status (2: bad arguments, 1: data or model not found)."""
    from rich.console import Console
    from transformers import AutoModel, AutoTokenizer

    args = _parser().parse_args(argv)
    langs = tuple(lang.strip() for lang in args.langs.split(",") if lang.strip())
    complaint = (_validate_names(args, langs) or _validate_numbers(args)
                 or _validate_output("--out", args.out) or _validate_output("--dump-pairs", args.dump_pairs))
    if complaint:
        print(complaint, file=sys.stderr)
        return 2
    try:
        settings = replace(
            Settings(),
            data_dir=args.data_dir,
            cache_dir=args.cache_dir,
            langs=langs,
            parallel_subset=args.parallel_subset,
            align_pairs=args.n_pairs,
            align_seed=args.seed,
            align_sampling=args.sampling,
            align_pooling=args.pooling,
            align_batch_size=args.batch_size,
            align_max_length=args.max_length,
            keep_lone_prefix=args.keep_lone_prefix,
            device=args.device,
        )
        subset = data.Subset(settings.parallel_subset, settings.subset_mode, settings.subset_seed)
        device = resolve_device(settings)
    except (ValueError, RuntimeError) as error:
        print(f"error: {_first_line(error)}", file=sys.stderr)
        return 2

    started = time.perf_counter()
    # the model first: a wrong folder fails in seconds, before any pair extraction
    try:
        tokenizer, model = _load_quietly(AutoTokenizer, AutoModel, args.model)
        model = model.to(device)
    except Exception as error:  # noqa: BLE001 - a bad folder raises OSError, ValueError, SafetensorError...
        print(f"error: cannot load model {args.model}: {_first_line(error)}", file=sys.stderr)
        return 1
    try:
        limit = resolve_max_length(tokenizer, None)
    except ValueError:
        limit = None  # no declared limit: --max-length is then required
    if args.max_length is None and limit is None:
        print(f"error: the tokenizer of {args.model} declares no length limit: give --max-length", file=sys.stderr)
        return 2
    if args.max_length is not None and limit is not None and args.max_length > limit:
        print(f"error: --max-length {args.max_length} exceeds the tokenizer's limit {limit}", file=sys.stderr)
        return 2

    context = PairContext.from_settings(settings)
    try:
        corpora = {
            lang: extract_pairs(
                args.corpus, lang, args.pairs, settings.data_dir, settings.cache_dir, subset, context
            )
            for lang in langs
        }
        table, used = measure_alignment(model, tokenizer, corpora, settings, return_pairs=True)
    except (data.DataSourceError, ValueError) as error:  # files absent, or too few pairs to measure
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    if args.out:
        atomic_save(table, Path(args.out).expanduser(), lambda frame, path: frame.to_csv(path, index=False))
    if args.dump_pairs:
        atomic_save(used, Path(args.dump_pairs).expanduser(),
                    lambda frame, path: frame.to_csv(path, sep="\t", index=False))
    console = Console()
    for view in render_tables(table):
        console.print(view)
    sentences = int(used.groupby("lang")["sentence"].nunique().sum())
    print(
        f"{args.model}: {args.corpus}/{args.pairs}, {settings.align_sampling} sampling, seed {settings.align_seed},"
        f" pooling {settings.align_pooling}, {sentences} sentence pairs encoded,"
        f" {time.perf_counter() - started:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
