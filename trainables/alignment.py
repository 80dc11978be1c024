"""Word-level alignment of a multilingual encoder (Gaschi et al. 2022; paper §3.2, PAPER-NOTES).

A sample of translated word pairs in context (default 1000, seeded) is encoded with the model;
a word is its first subword (optionally the mean of its subwords) at every layer 0..L, layer 0
being the embedding output. Each word then searches its nearest neighbour by cosine similarity,
and alignment is the top-1 accuracy of that search:

- weak: the candidates are the other language's words of the sample;
- strong: the candidates are the words of both languages, the query itself excluded.

Both directions are measured: `en-x` (English words search their translation) and `x-en`.
Every strong candidate set contains the weak one, so strong accuracy <= weak accuracy.

Ties: a query is correct iff the similarity to its translation is >= the similarity to every
other candidate. Exact ties occur at layer 0, where a word's vector depends only on its token
and position: two occurrences of the same word type at the same position get identical vectors
and are indistinguishable to any nearest-neighbour search. Counting a tie as correct makes the
score independent of the order of the candidates (argmax's "first index wins" would not be).

Truncation: a pair whose word lies beyond `align_max_length` subwords has no vector. Pairs are
sampled first, then such pairs are dropped; `n_pairs` in the results is the number actually used.

Run as a command: `python -m trainables.alignment --model PATH --data-dir DIR --corpus ntrex
--pairs dico --langs ar,es,fr,ru,zh --n-pairs 1000 --seed 0 --out FILE.csv`.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from trainables import data
from trainables.cache import atomic_save
from trainables.encoding import POOLINGS, encode_words, pool_words
from trainables.pairs import PAIR_COLUMNS, PAIR_SOURCES, AlignedCorpus, PairContext, extract_pairs
from trainables.runtime import autocast, eval_mode, resolve_device
from trainables.settings import Settings
from trainables.registry import unknown_name

RESULT_COLUMNS: tuple[str, ...] = ("lang", "direction", "kind", "layer", "accuracy", "n_pairs")
DUMP_COLUMNS: tuple[str, ...] = ("lang",) + PAIR_COLUMNS
KINDS: tuple[str, ...] = ("strong", "weak")
DIRECTIONS: tuple[str, ...] = ("en-x", "x-en")
# Upper bound on one block of similarities (layers x queries x candidates, fp32: 256 MiB), so that
# large samples or deep models are searched in query chunks instead of one huge matrix.
MAX_SIMILARITY_ELEMENTS = 2**26
MIN_PAIRS = 2  # with a single pair, the weak search has no wrong candidate and is trivially right


# --------------------------------------------------------------------------------------------
# Sampling


def sample_pairs(pairs: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """`n` pairs drawn without replacement (all of them if fewer), seeded, in corpus order.

    The chosen rows keep their original order (sorted by row position), so a dump of the sample
    reads like the corpus; the order has no effect on the accuracies (see the module's note on ties).
    """
    missing = [c for c in PAIR_COLUMNS if c not in pairs.columns]
    if missing:
        raise ValueError(f"word pairs lack column(s) {', '.join(missing)}; expected {', '.join(PAIR_COLUMNS)}")
    if n < 0:
        raise ValueError(f"number of pairs to sample must be >= 0, got {n}")
    if len(pairs) <= n:
        return pairs.reset_index(drop=True)
    chosen = np.sort(np.random.default_rng(seed).choice(len(pairs), size=n, replace=False))
    return pairs.iloc[chosen].reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Word vectors


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def word_vectors_all_layers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sentences: Sequence[Sequence[str]],
    word_index: torch.Tensor,
    settings: Settings,
    return_present: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Vectors of the words `word_index[i] = (sentence, word)` at every layer: (L+1, N, H) fp32.

    Only the sentences that hold a requested word are encoded, `align_batch_size` at a time,
    longest first so that a batch holds sentences of similar length (less padding); one forward
    pass with `output_hidden_states=True` gives all layers. Words pooled by `settings.align_pooling`.
    A word truncated away by `align_max_length` gets a zero vector; with `return_present=True`
    the (N,) bool mask of words that have a vector is returned too. Result on the model's device.
    """
    word_index = torch.as_tensor(word_index, dtype=torch.long).cpu()
    if word_index.ndim != 2 or word_index.shape[1] != 2:
        raise ValueError(f"word_index must have shape (N, 2) (sentence, word), got {tuple(word_index.shape)}")
    n_words = word_index.shape[0]
    if n_words == 0:
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

    device = _model_device(model)
    unique, query_sentence = torch.unique(sentence_of, return_inverse=True)
    order = torch.argsort(lengths[unique], descending=True, stable=True)  # longest first
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order))
    batch_size = settings.align_batch_size
    query_batch = rank[query_sentence] // batch_size  # which forward pass holds each word
    query_row = rank[query_sentence] % batch_size  # its sentence's row in that pass

    vectors: torch.Tensor | None = None
    present = torch.zeros(n_words, dtype=torch.bool)
    with eval_mode(model):
        for batch, start in enumerate(range(0, len(order), batch_size)):
            batch_sentences = [sentences[i] for i in unique[order[start : start + batch_size]].tolist()]
            encoded = encode_words(tokenizer, batch_sentences, settings.align_max_length)
            with autocast(settings, device):
                output = model(**{k: v.to(device) for k, v in encoded.inputs.items()}, output_hidden_states=True)
            hidden = torch.stack(output.hidden_states).float()  # (L+1, B, T, H)
            words = pool_words(hidden, encoded, settings.align_pooling)  # (L+1, B, W, H)
            wanted = (query_batch == batch).nonzero().squeeze(1)
            rows, cols = query_row[wanted], word_of[wanted]
            if vectors is None:
                vectors = hidden.new_zeros(hidden.shape[0], n_words, hidden.shape[-1])
            vectors[:, wanted.to(device)] = words[:, rows.to(device), cols.to(device)]
            present[wanted] = encoded.word_mask[rows, cols]
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


def _max_other_similarity(queries: torch.Tensor, candidates: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Max cosine (unit vectors given) of each query to the candidates, its own index excluded.

    queries: (L+1, C, H) = rows `rows` of the sample; candidates: (L+1, N, H). Returns (L+1, C).
    """
    similarity = torch.bmm(queries, candidates.transpose(1, 2))  # (L+1, C, N)
    own = rows.unsqueeze(1) == torch.arange(candidates.shape[1], device=rows.device).unsqueeze(0)  # (C, N)
    return similarity.masked_fill(own, float("-inf")).amax(dim=-1)


def _direction_correct(
    queries: torch.Tensor, translations: torch.Tensor, chunk: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(weak, strong) correctness, each (L+1, N) bool, of queries searching their translations.

    Inputs are unit vectors, row i of `translations` being the translation of row i of `queries`.
    Weak: beat every other translation-side word. Strong: also beat every other query-side word.
    """
    n_layers, n_pairs, _ = queries.shape
    weak = torch.empty(n_layers, n_pairs, dtype=torch.bool, device=queries.device)
    strong = torch.empty_like(weak)
    for start in range(0, n_pairs, chunk):
        rows = torch.arange(start, min(start + chunk, n_pairs), device=queries.device)
        block = queries[:, rows]
        to_translation = (block * translations[:, rows]).sum(-1)  # (L+1, C)
        weak_block = to_translation >= _max_other_similarity(block, translations, rows)
        same_side_ok = to_translation >= _max_other_similarity(block, queries, rows)
        weak[:, rows] = weak_block
        strong[:, rows] = weak_block & same_side_ok
    return weak, strong


def alignment_accuracy(
    src: torch.Tensor, tgt: torch.Tensor, chunk: int | None = None
) -> dict[tuple[str, str], torch.Tensor]:
    """Top-1 nearest-neighbour accuracy per layer, for every (kind, direction).

    src, tgt: (L+1, N, H), pair i being (src[i], tgt[i]); en-x queries are the src words, x-en
    queries the tgt words. Cosine similarity = normalise, then batched matrix products over
    layers, `chunk` queries at a time (None: as many as keep a block under
    MAX_SIMILARITY_ELEMENTS). Correct iff sim(translation) >= every other candidate's similarity.
    Returns {(kind, direction): (L+1,) accuracy}, kind in KINDS, direction in DIRECTIONS.
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
        weak, strong = _direction_correct(queries, translations, size)
        # float64 counts / N: accuracies print as the exact fractions they are (0.108, not 0.1080000028)
        result[("weak", direction)] = weak.sum(dim=1, dtype=torch.float64) / n_pairs
        result[("strong", direction)] = strong.sum(dim=1, dtype=torch.float64) / n_pairs
    return result


# --------------------------------------------------------------------------------------------
# Measurement over languages


def measure_alignment(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    corpora: Mapping[str, AlignedCorpus],
    settings: Settings,
    n_pairs: int | None = None,
    seed: int | None = None,
    return_pairs: bool = False,
) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """Alignment of `model` on each language's `AlignedCorpus`: tidy rows of RESULT_COLUMNS.

    `n_pairs` / `seed` default to `settings.align_pairs` / `settings.align_seed`; the same seed
    serves every language. Pairs whose word was truncated away are dropped after sampling, and
    the `n_pairs` column says how many were used. With `return_pairs=True`, also returns the
    pairs actually used (DUMP_COLUMNS), e.g. for `--dump-pairs`.
    """
    n_pairs = settings.align_pairs if n_pairs is None else n_pairs
    seed = settings.align_seed if seed is None else seed
    rows: list[dict[str, Any]] = []
    used: list[pd.DataFrame] = []
    for lang, corpus in corpora.items():
        sample = sample_pairs(corpus.pairs, n_pairs, seed)
        if len(sample) < MIN_PAIRS:
            raise ValueError(f"language {lang}: only {len(sample)} word pair(s) to measure alignment on")
        sentence = torch.tensor(sample["sentence"].to_numpy(), dtype=torch.long)
        src_index = torch.stack([sentence, torch.tensor(sample["src_index"].to_numpy(), dtype=torch.long)], 1)
        tgt_index = torch.stack([sentence, torch.tensor(sample["tgt_index"].to_numpy(), dtype=torch.long)], 1)
        src, src_present = word_vectors_all_layers(
            model, tokenizer, corpus.en_words, src_index, settings, return_present=True
        )
        tgt, tgt_present = word_vectors_all_layers(
            model, tokenizer, corpus.x_words, tgt_index, settings, return_present=True
        )
        keep = src_present & tgt_present
        kept = int(keep.sum())
        if kept < MIN_PAIRS:
            raise ValueError(
                f"language {lang}: {kept} of {len(sample)} sampled pairs survive truncation to"
                f" align_max_length={settings.align_max_length}"
            )
        accuracy = alignment_accuracy(src[:, keep], tgt[:, keep])
        for (kind, direction), per_layer in accuracy.items():
            for layer, value in enumerate(per_layer.tolist()):
                rows.append(dict(lang=lang, direction=direction, kind=kind, layer=layer, accuracy=value, n_pairs=kept))
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
    counts = table.groupby("lang", sort=False)["n_pairs"].first()
    rendered = []
    for kind in KINDS:
        for direction in DIRECTIONS:
            part = table[(table["kind"] == kind) & (table["direction"] == direction)]
            grid = part.pivot(index="layer", columns="lang", values="accuracy")[langs]
            caption = "pairs used: " + ", ".join(f"{lang} {int(counts[lang])}" for lang in langs)
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
    parser.add_argument("--pooling", default=defaults.align_pooling, help=f"word vector: {' or '.join(POOLINGS)}")
    parser.add_argument("--parallel-subset", type=int, default=None, help="first N sentence pairs of the corpus")
    parser.add_argument("--batch-size", type=int, default=defaults.align_batch_size, help="sentences per forward pass")
    parser.add_argument("--max-length", type=int, default=defaults.align_max_length, help="subwords per sentence")
    parser.add_argument("--device", default=defaults.device, help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--out", default=None, help="CSV of results (lang, direction, kind, layer, accuracy, n_pairs)")
    parser.add_argument("--dump-pairs", default=None, help="TSV of the sampled pairs actually used")
    return parser


def _unknown(what: str, name: str, valid: Sequence[str]) -> str:
    return f"error: {unknown_name(what, name, valid)}"


def _validate_names(args: argparse.Namespace, langs: tuple[str, ...]) -> str | None:
    """The one-line complaint about an unknown pair source, corpus, language or pooling, if any."""
    if args.pairs not in PAIR_SOURCES:
        return _unknown("pair source", args.pairs, list(PAIR_SOURCES))
    if args.pooling not in POOLINGS:
        return _unknown("pooling", args.pooling, list(POOLINGS))
    if not langs:
        return "error: --langs is empty"
    try:
        corpus = data.parallel_source(args.corpus, args.data_dir)  # registered, or parallel/<name> locally
        for lang in langs:
            corpus.validate(lang=lang)
    except ValueError as error:
        return f"error: {' '.join(str(error).split())}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit status (2: bad arguments, 1: data not found)."""
    from rich.console import Console
    from transformers import AutoModel, AutoTokenizer


    args = _parser().parse_args(argv)
    langs = tuple(lang.strip() for lang in args.langs.split(",") if lang.strip())
    complaint = _validate_names(args, langs)
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
            align_pooling=args.pooling,
            align_batch_size=args.batch_size,
            align_max_length=args.max_length,
            device=args.device,
        )
        subset = data.Subset(settings.parallel_subset, settings.subset_mode, settings.subset_seed)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    started = time.perf_counter()
    context = PairContext.from_settings(settings)
    try:
        corpora = {
            lang: extract_pairs(
                args.corpus, lang, args.pairs, settings.data_dir, settings.cache_dir, subset, context
            )
            for lang in langs
        }
    except data.DataSourceError as error:  # files absent and no way to fetch them
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    device = resolve_device(settings)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModel.from_pretrained(args.model).to(device)
    table, used = measure_alignment(model, tokenizer, corpora, settings, return_pairs=True)
    if args.out:
        atomic_save(table, Path(args.out), lambda frame, path: frame.to_csv(path, index=False))
    if args.dump_pairs:
        atomic_save(used, Path(args.dump_pairs), lambda frame, path: frame.to_csv(path, sep="\t", index=False))
    console = Console()
    for view in render_tables(table):
        console.print(view)
    print(
        f"{args.model}: {args.corpus}/{args.pairs}, seed {settings.align_seed}, pooling {settings.align_pooling},"
        f" {time.perf_counter() - started:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
