"""Translated word pairs from a parallel corpus: what alignment is measured on and realigned with.

Three pair sources share one interface (registry `PAIR_SOURCES`, name -> callable
`(en_words, x_words, lang, context) -> DataFrame`), all following the paper (Gaschi et al.
2023, §3.3 and App. B.2; docs/protocol.md):

- `dico`: a bilingual dictionary (MUSE, both directions) with every ambiguity discarded;
- `fastalign`: FastAlign in both directions, symmetrised with grow-diag-final-and;
- `awesome`: AWESOME-align's softmax extraction over a multilingual encoder.

Every source keeps only one-to-one links (a word linked to several words is dropped with all its
links) and drops pairs whose two words are spelled identically, which would make alignment
trivially easy. As in the reference code, "identically" is exact and case-sensitive: FastAlign
and AWESOME links go through `get_pharaoh_dataset` (multilingual_eval/datasets/
realignment_task.py: one-to-one first, then `left_tokens[a] == right_tokens[b]` dropped), and
the dictionary drops its identical entries before matching (`get_dicos(ignore_identical=True)`,
multilingual_eval/data.py). The setting `dico_lowercase=True` restores a case-insensitive
dictionary rule (see `pairs_from_dictionary`). The result is a DataFrame with columns
`sentence`, `src_index`, `tgt_index` (int64; line index in the corpus as loaded, word indexes in
the segmented lines) and `src_word`, `tgt_word` (str); English is always the source.

AWESOME's encoder defaults to AWESOME-align's fine-tuned aligner, not plain mBERT: the paper's
code ran `awesome-align` with the `model_without_co` checkpoint (download_resources/
awesome_align.sh), mBERT fine-tuned by Dou & Neubig on parallel data. That checkpoint is only
published on Google Drive; the hub holds its sibling fine-tuned with the consistency objective
as well, `aneuraz/awesome-align-with-co` (which the authors' earlier alignment study used,
scripts/2022_ijcnn/word_level_alignment.py), so it is the default; the setting `awesome_model`
takes any hub id or local folder, e.g. an unzipped `model_without_co`.

`extract_pairs` loads a corpus, segments it and extracts pairs, caching the segmentation and the
pairs as parquet files under the cache dir so that concurrent trials compute them once. Their
keys cover the corpus text, the dictionary files' content (dico) and the aligner model's files
(awesome), not just their names.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import itertools
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, overload

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from trainables.cache import cache_key, cached, file_fingerprint, model_fingerprint
from trainables.data import (
    MUSE_REVERSE_FILE_DEFAULT,
    PARALLEL_SAMPLE,
    PARALLEL_SAMPLE_SEED,
    Subset,
    get_source,
    load_dictionary,
    load_parallel,
    local_source_files,
    muse_file_key,
    resolve_cache_dir,
)
from trainables.errors import TrialInputError
from trainables.models import model_family
from trainables.segmentation import segment_corpus, segmentation_id
from trainables.registry import did_you_mean, lookup
from trainables.settings import FASTALIGN_BACKENDS

if TYPE_CHECKING:  # torch and transformers are imported where used: the sweep driver stays light
    import torch

log = logging.getLogger(__name__)

PAIR_COLUMNS = ("sentence", "src_index", "tgt_index", "src_word", "tgt_word")
PAIRS_FORMAT_VERSION = "2"  # part of cache keys: bump when extraction changes its output

# AWESOME-align's defaults (Dou & Neubig 2021; the paper used them with `--extraction softmax`).
AWESOME_LAYER = 8
AWESOME_THRESHOLD = 1e-3
AWESOME_BATCH_SIZE = 32  # sentence pairs per forward pass
AWESOME_MAX_LENGTH = 512  # subwords per sentence, special tokens included; longer ones truncated
DEFAULT_AWESOME_MODEL = "aneuraz/awesome-align-with-co"  # AWESOME's fine-tuned aligner (see above)

# fast_align options of the paper's code: `fast_align -d -o -v` (diagonal favouring, optimised
# diagonal tension, variational Bayes), 5 EM iterations (fast_align's default).
FASTALIGN_ITERATIONS = 5
FASTALIGN_CHUNK = 10_000  # sentence pairs per Aligner.align_batch call (bounds memory)
# Sentence pairs segmented and searched at a time: memory holds one chunk's words as Python lists,
# the rest as Arrow arrays, so 1M-line corpora fit in bounded memory. Output does not depend on it.
EXTRACTION_CHUNK = 20_000
PROGRESS_INTERVAL_S = 2.0  # at most one on_progress call per interval (and one at the end)
# fast_align's input format separates the two sides with " ||| ": a token containing "|||"
# would break the line, so such tokens are renamed for the aligner only.
FASTALIGN_SEPARATOR = "|||"
FASTALIGN_SEPARATOR_STANDIN = "<bars>"
# The ways to run fast_align (see fastalign_links). "numpy" (the default): trainables.fastalign_numpy,
# the same links as clab/fast_align's programs on the paper's options, in bounded memory, anywhere;
# "systran-align": that package (wheels for CPython <= 3.11 on Linux x86_64 only), whose aligner
# links differently from the programs; "fast_align": clab/fast_align's programs on PATH; "auto":
# systran-align where installed, else the programs.
FASTALIGN_NUMPY, _, FASTALIGN_LIBRARY, _ = FASTALIGN_BACKENDS
FASTALIGN_PROGRAMS = ("fast_align", "atools")
PHARAOH_LINE = re.compile(r"(?:\d+-\d+(?:\s+\d+-\d+)*)?", re.ASCII)  # "0-0 1-2 ...", maybe empty


@dataclass(frozen=True)
class PairContext:
    """What pair sources need besides the segmented corpus: data/cache dirs and aligner settings."""

    data_dir: str | Path | None = None
    cache_dir: str | Path | None = None
    awesome_model: str = DEFAULT_AWESOME_MODEL  # a hub name or a local model folder
    awesome_layer: int = AWESOME_LAYER  # hidden_states index (0 = embeddings)
    awesome_threshold: float = AWESOME_THRESHOLD
    awesome_batch_size: int = AWESOME_BATCH_SIZE
    awesome_max_length: int = AWESOME_MAX_LENGTH
    device: str = "cpu"
    dico_lowercase: bool = False  # False: the reference's case-sensitive rule (pairs_from_dictionary)
    muse_reverse_file: str = MUSE_REVERSE_FILE_DEFAULT  # the reference's X-en file: a copy of en-X (data.muse_file_key)
    fastalign_iterations: int = FASTALIGN_ITERATIONS
    fastalign_favor_diagonal: bool = True  # -d
    fastalign_optimize_tension: bool = True  # -o
    fastalign_variational_bayes: bool = True  # -v
    fastalign_backend: str = FASTALIGN_NUMPY  # one of FASTALIGN_BACKENDS (fastalign_backend)
    # Sentence pairs a language sampled from the corpus (data.reservoir_sample; None: all) and its seed.
    parallel_sample: int | None = PARALLEL_SAMPLE
    parallel_sample_seed: int = PARALLEL_SAMPLE_SEED

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> "PairContext":
        """From a `trainables.settings.Settings` (data_dir, cache_dir, dico_lowercase, awesome_*, device)."""
        device = getattr(settings, "device", "cpu")
        if device == "auto":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        values = dict(
            data_dir=settings.data_dir,
            cache_dir=settings.cache_dir,
            awesome_model=settings.awesome_model,
            awesome_layer=settings.awesome_layer,
            awesome_threshold=settings.awesome_threshold,
            dico_lowercase=settings.dico_lowercase,
            muse_reverse_file=settings.muse_reverse_file,
            fastalign_backend=settings.fastalign_backend,
            parallel_sample=getattr(settings, "parallel_sample", PARALLEL_SAMPLE),
            device=device,
        )
        values.update(overrides)
        return cls(**values)

    def cache_parts(self, source: str, lang: str) -> dict[str, Any]:
        """What changes `source`'s output for en-`lang` besides the corpus: its settings and the
        content of the files it reads (device and batch size change nothing)."""
        if source == "dico":
            muse = get_source("muse")
            keys = (muse_file_key("en", lang, self.muse_reverse_file), muse_file_key(lang, "en", self.muse_reverse_file))
            files = [f for key in keys for f in local_source_files(muse, key, self.data_dir)]
            # no local files: the downloads, named by the source's version
            return dict(lowercase=self.dico_lowercase, reverse_file=self.muse_reverse_file,
                        dictionary=file_fingerprint(files), muse=muse.version)
        if source == "awesome":
            return dict(
                model=self.awesome_model,
                model_files=model_fingerprint(self.awesome_model),
                layer=self.awesome_layer,
                threshold=self.awesome_threshold,
                max_length=self.awesome_max_length,
            )
        if source == "fastalign":
            return dict(
                backend=fastalign_backend(self.fastalign_backend),  # the library links differently
                iterations=self.fastalign_iterations,
                d=self.fastalign_favor_diagonal,
                o=self.fastalign_optimize_tension,
                v=self.fastalign_variational_bayes,
            )
        return {}


class WordLists(Sequence):
    """One side of a segmented corpus, `list[str]` per sentence, held as an Arrow list<string>
    array: about 4 bytes a word plus the text, rather than a Python object per word, so that a
    1M-line corpus stays in bounded memory. Indexing gives a fresh `list[str]`."""

    def __init__(self, words: pa.ChunkedArray | pa.Array | Sequence[Sequence[str]]) -> None:
        if isinstance(words, pa.Array):
            words = pa.chunked_array([words], type=words.type)
        elif not isinstance(words, pa.ChunkedArray):
            words = pa.chunked_array([pa.array(list(words), type=pa.list_(pa.string()))])
        self.array = words

    def __len__(self) -> int:
        return len(self.array)

    @overload
    def __getitem__(self, index: int) -> list[str]: ...

    @overload
    def __getitem__(self, index: slice) -> list[list[str]]: ...

    def __getitem__(self, index: int | slice) -> list[str] | list[list[str]]:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step == 1:
                return self.array.slice(start, max(stop - start, 0)).to_pylist()
            return [self[i] for i in range(start, stop, step)]
        index = int(index)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"sentence {index} out of range ({len(self)} sentences)")
        return self.array[index].as_py()

    def __iter__(self) -> Iterator[list[str]]:
        for start in range(0, len(self), EXTRACTION_CHUNK):
            yield from self.array.slice(start, EXTRACTION_CHUNK).to_pylist()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, WordLists):
            return self.array.equals(other.array)
        if isinstance(other, Sequence):
            return len(self) == len(other) and all(a == list(b) for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable-looking sequence: compared by value

    def __repr__(self) -> str:
        return f"WordLists({len(self)} sentences)"


@dataclass(frozen=True, eq=False)
class AlignedCorpus:
    """A segmented parallel corpus and its word pairs (what alignment and realignment consume)."""

    lang: str
    en_words: Sequence[list[str]]  # a list, or WordLists as extract_pairs returns
    x_words: Sequence[list[str]]
    pairs: pd.DataFrame = field(repr=False)
    # None: the pairs of the whole corpus. A number n: pairs were extracted for the head of the
    # corpus only, holding n paired sentences (`extract_pairs(min_paired=...)`); streams reading
    # past the head would not see the sentences beyond (RealignmentBatches checks).
    head_paired: int | None = None
    # A content key of the words and pairs, as `extract_pairs` knows them from its cache keys
    # (the corpus text, the segmentation, the source and its settings); None: hashed from them.
    content_key: str | None = None

    @functools.cached_property
    def fingerprint(self) -> str:
        """A short content key of the language, both segmented sides and the pairs: what a
        measurement on this corpus depends on, for cache keys. `content_key` when given (free;
        hashing a 1M-line corpus's words takes seconds), else a hash of the words and pairs."""
        if self.content_key is not None:
            return self.content_key
        digest = hashlib.sha256(self.lang.encode("utf-8") + b"\0")
        for side in (self.en_words, self.x_words):
            for words in side:
                digest.update("\x1f".join(words).encode("utf-8") + b"\n")
            digest.update(b"\0")
        table = self.pairs[list(PAIR_COLUMNS)]
        digest.update(pd.util.hash_pandas_object(table, index=False).to_numpy().tobytes())
        digest.update(str(self.head_paired).encode())
        return digest.hexdigest()[:16]


# --- shared filters --------------------------------------------------------------------------------


def keep_one_to_one(links: pd.DataFrame) -> pd.DataFrame:
    """Links whose source word and target word each take part in no other link of the sentence."""
    if links.empty:
        return links
    src_links = links.groupby(["sentence", "src_index"])["tgt_index"].transform("size")
    tgt_links = links.groupby(["sentence", "tgt_index"])["src_index"].transform("size")
    return links[(src_links == 1) & (tgt_links == 1)]


def links_to_pairs(
    sentence: np.ndarray,
    src_index: np.ndarray,
    tgt_index: np.ndarray,
    en_words: list[list[str]],
    x_words: list[list[str]],
    ignore_case: bool = False,
) -> pd.DataFrame:
    """Word links -> the pairs DataFrame: one-to-one links only, identical spellings dropped.

    One-to-one is decided on all links first, so that a word also linked to its identical twin
    stays ambiguous rather than becoming one-to-one once the twin is dropped (the reference's
    order, `get_pharaoh_dataset`). Identical means equal as written; `ignore_case` also drops
    pairs that differ only in case ("Taxi" / "taxi").
    """
    links = pd.DataFrame(
        {
            "sentence": np.asarray(sentence, dtype=np.int64),
            "src_index": np.asarray(src_index, dtype=np.int64),
            "tgt_index": np.asarray(tgt_index, dtype=np.int64),
        }
    ).drop_duplicates()
    links = keep_one_to_one(links)
    src_word = [en_words[s][i] for s, i in zip(links["sentence"].tolist(), links["src_index"].tolist())]
    tgt_word = [x_words[s][j] for s, j in zip(links["sentence"].tolist(), links["tgt_index"].tolist())]
    pairs = links.assign(
        src_word=pd.Series(src_word, index=links.index, dtype=str),
        tgt_word=pd.Series(tgt_word, index=links.index, dtype=str),
    )
    if len(pairs):
        src, tgt = pairs["src_word"], pairs["tgt_word"]
        pairs = pairs[src.str.casefold() != tgt.str.casefold()] if ignore_case else pairs[src != tgt]
    return pairs.sort_values(["sentence", "src_index"]).reset_index(drop=True)[list(PAIR_COLUMNS)]


# --- dico --------------------------------------------------------------------------------------------


def _lowercased(dictionary: dict[str, frozenset[str]]) -> dict[str, set[str]]:
    merged: dict[str, set[str]] = {}
    for word, translations in dictionary.items():
        merged.setdefault(word.lower(), set()).update(t.lower() for t in translations)
    return merged


def _without_identical(dictionary: dict[str, frozenset[str]]) -> dict[str, set[str]]:
    """Entries spelled the same in both languages removed (`get_dicos(ignore_identical=True)`)."""
    return {word: set(translations) - {word} for word, translations in dictionary.items()}


def pairs_from_dictionary(
    en_words: list[list[str]],
    x_words: list[list[str]],
    en_to_x: dict[str, frozenset[str]],
    x_to_en: dict[str, frozenset[str]],
    lowercase: bool = False,
) -> pd.DataFrame:
    """Pairs found with a bilingual dictionary, every ambiguity discarded.

    For English word e at position i of a sentence, (e, t) is a pair when:
      1. exactly one translation t of e (en_to_x[e]) occurs in the target sentence;
      2. t occurs exactly once in the target sentence;
      3. exactly one position of the source sentence holds a word that translates to t
         (x_to_en[t]) - that position is i, so e occurs once and no other source word
         competes for t.
    This is the reference's rule (`DatasetMapperForRealignment.find_aligned_words`,
    multilingual_eval/datasets/realignment_dataset.py), with both dictionary directions: pass
    en_to_x built from the en-X file plus the inverted X-en file, and x_to_en from X-en plus
    inverted en-X (what `load_dictionary` returns, and what `get_dicos` builds). Rule 3 counts
    source positions, so a repeated English word is dropped even when the dictionaries are not
    symmetric. (The reference's download_resources/muse_dictionaries.sh saved en-X under the X-en
    name as well, so its maps held the en-X entries both ways round: `dico_source` does the same
    unless `muse_reverse_file="x-en"`, data.muse_file_key.)

    By default (the reference, `get_dicos(ignore_identical=True, tokenize=False)`) entries
    spelled the same in both languages are removed before matching, so that "taxi" -> {"taxi",
    "coche"} becomes the unambiguous "taxi" -> {"coche"}, and words are looked up as written,
    case-sensitive: MUSE is lowercase, so a capitalised "The" finds no translation. With
    `lowercase` (setting `dico_lowercase`), words are looked up lowercased and identical pairs
    (ignoring case) are dropped after matching, so an identical entry still makes its word
    ambiguous. Pairs keep the words as written either way.
    """
    if lowercase:
        forward, backward = _lowercased(en_to_x), _lowercased(x_to_en)
        fold = str.lower
    else:
        forward, backward = _without_identical(en_to_x), _without_identical(x_to_en)
        fold = str  # as written
    sentence, src_index, tgt_index = [], [], []
    for number, (en, x) in enumerate(zip(en_words, x_words)):
        en_keys = [fold(word) for word in en]
        x_positions: dict[str, list[int]] = {}
        for j, word in enumerate(x):
            x_positions.setdefault(fold(word), []).append(j)
        for i, word in enumerate(en_keys):
            present = [t for t in forward.get(word, ()) if t in x_positions]
            if len(present) != 1:
                continue  # no translation in the sentence, or several: ambiguous
            positions = x_positions[present[0]]
            if len(positions) != 1:
                continue  # the translation occurs several times
            back = backward.get(present[0], set())
            if sum(other in back for other in en_keys) != 1 or word not in back:
                continue  # another source word (or a repeat of this one) translates to it
            sentence.append(number)
            src_index.append(i)
            tgt_index.append(positions[0])
    return links_to_pairs(np.array(sentence), np.array(src_index), np.array(tgt_index), en_words, x_words,
                          ignore_case=lowercase)


@functools.lru_cache(maxsize=4)  # chunked extraction reads the dictionaries once, not once a chunk
def _dictionaries(lang: str, data_dir: Any, cache_dir: Any, reverse_file: str,
                  content: str) -> tuple[dict[str, frozenset[str]], dict[str, frozenset[str]]]:
    # `content` (the files' fingerprint) is only part of the key: a changed file is read again.
    return (load_dictionary("en", lang, data_dir, cache_dir, reverse_file),
            load_dictionary(lang, "en", data_dir, cache_dir, reverse_file))


def dico_source(en_words: list[list[str]], x_words: list[list[str]], lang: str, context: PairContext) -> pd.DataFrame:
    content = context.cache_parts("dico", lang)["dictionary"]
    en_to_x, x_to_en = _dictionaries(lang, context.data_dir, context.cache_dir, context.muse_reverse_file, content)
    return pairs_from_dictionary(en_words, x_words, en_to_x, x_to_en, lowercase=context.dico_lowercase)


# --- fastalign ---------------------------------------------------------------------------------------


def _fastalign_tokens(words: list[str]) -> list[str]:
    return [FASTALIGN_SEPARATOR_STANDIN if FASTALIGN_SEPARATOR in w else w for w in words]


def fastalign_backend(choice: str = "auto") -> str:
    """How the `fastalign` source runs fast_align (setting `fastalign_backend`): "numpy" as it is;
    "systran-align" or "fast_align" if installed; "auto": "systran-align" where that package is
    installed, else "fast_align" where clab/fast_align's `fast_align` and `atools` are on PATH.

    The package is looked up without importing it: importing loads its own OpenMP runtime into this
    process, which only the child process of `fastalign_links` needs. Not there: TrialInputError.
    """
    if choice not in FASTALIGN_BACKENDS:
        raise TrialInputError(f"setting fastalign_backend={choice!r}{did_you_mean(choice, FASTALIGN_BACKENDS)}")
    if choice == FASTALIGN_NUMPY:
        return FASTALIGN_NUMPY
    library = importlib.util.find_spec("systran_align") is not None
    programs = all(shutil.which(program) for program in FASTALIGN_PROGRAMS)
    if choice == FASTALIGN_LIBRARY and library or choice == "auto" and library:
        return FASTALIGN_LIBRARY
    if choice == FASTALIGN_PROGRAMS[0] and programs or choice == "auto" and programs:
        return FASTALIGN_PROGRAMS[0]
    wanted = {FASTALIGN_LIBRARY: "pip install systran-align (wheels for CPython 3.10-3.11 on Linux x86_64 only)",
              FASTALIGN_PROGRAMS[0]: "put the fast_align and atools programs (github.com/clab/fast_align) on PATH"}
    ways = " or ".join(wanted.values()) if choice == "auto" else wanted[choice]
    raise TrialInputError(
        f"pair source 'fastalign' needs fast_align (fastalign_backend={choice!r}): {ways}; found"
        f" {'neither' if choice == 'auto' else 'none'}; fastalign_backend='numpy' (the default) needs neither")


def fastalign_links(
    en_words: list[list[str]], x_words: list[list[str]], context: PairContext
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Symmetrised FastAlign links (sentence, src_index, tgt_index) over the whole corpus.

    fast_align's EM is trained on the corpus itself in both directions and the two directional
    Viterbi alignments are symmetrised with grow-diag-final-and, as the paper's code did
    (scripts/word_align_with_fastalign.sh: `fast_align -d -o -v`, the same with `-r`, then
    `atools -c grow-diag-final-and`). Two ways, chosen by `fastalign_backend`:

    - the `systran-align` package (fast_align as a library): its `Aligner` runs both directional
      alignments with the trained tables and symmetrises them with its bundled libfastalign's
      `GDFACommand`, the code of `atools -c grow-diag-final-and`;
    - else the programs on PATH, run exactly as the reference's script ran them. They output the
      Viterbi links of the last EM iteration rather than realigning with the final tables, so the
      two ways give different pairs (the backend is part of the cache key);
    - "numpy" (the default): `trainables.fastalign_numpy`, the programs' EM, Viterbi links and
      grow-diag-final-and re-implemented in bounded memory. On NTREX (5 languages, 1,997 lines)
      its links are identical to those of clab/fast_align's programs built from source, forward,
      reverse and symmetrised; only exact ties that the last bit of fast_align's tension decides
      can differ (tests/test_fastalign_numpy.py); systran-align's share 83% of them.

    Sentence pairs with an empty side are left out (fast_align cannot align them). fast_align's EM
    adds floats from several OpenMP threads in a varying order, so two runs on the same corpus can
    give different links: both ways run in child processes with OMP_NUM_THREADS=1 (for the
    library, the one way to pin the thread count of the OpenMP runtime it bundles, already
    initialised once imported), so that runs give the same pairs.
    """
    sentence, src_index, tgt_index = [], [], []
    for links, _, _ in _fastalign_link_chunks(WordLists(en_words), WordLists(x_words), context, len(en_words) or 1):
        sentence.append(links[:, 0])
        src_index.append(links[:, 1])
        tgt_index.append(links[:, 2])
    if not sentence:
        empty = np.empty(0, np.int64)
        return empty, empty, empty
    return np.concatenate(sentence), np.concatenate(src_index), np.concatenate(tgt_index)


def _fastalign_link_chunks(
    en_words: WordLists, x_words: WordLists, context: PairContext, chunk: int,
    on_aligned: Callable[[], None] | None = None,
) -> Iterator[tuple[np.ndarray, int, int]]:
    """fast_align over the whole corpus, its input file written and its links read a chunk of
    `chunk` sentence pairs at a time: yields ((n, 3) int64 links (sentence, src, tgt) of
    sentences start..stop-1, start, stop) in order. `on_aligned` is called once the aligner is done."""
    backend = fastalign_backend(context.fastalign_backend)
    options = dict(
        iterations=context.fastalign_iterations,
        favor_diagonal=context.fastalign_favor_diagonal,
        optimize_tension=context.fastalign_optimize_tension,
        variational_bayes=context.fastalign_variational_bayes,
    )
    single_thread = {**os.environ, "OMP_NUM_THREADS": "1"}
    n_sentences = len(en_words)
    with tempfile.TemporaryDirectory(prefix="fastalign-") as tmp:
        corpus, links_path = Path(tmp) / "corpus.txt", Path(tmp) / "links.bin"
        usable_parts, src_lengths, tgt_lengths = [], [], []
        with open(corpus, "w", encoding="utf-8") as handle:
            for start in range(0, n_sentences, chunk):
                en_chunk, x_chunk = en_words[start : start + chunk], x_words[start : start + chunk]
                for offset, (en, x) in enumerate(zip(en_chunk, x_chunk)):
                    if not (en and x):
                        continue  # fast_align cannot align an empty side
                    usable_parts.append(start + offset)
                    src_lengths.append(len(en))
                    tgt_lengths.append(len(x))
                    src, tgt = _fastalign_tokens(en), _fastalign_tokens(x)
                    handle.write(f"{' '.join(src)} {FASTALIGN_SEPARATOR} {' '.join(tgt)}\n")
        usable = np.asarray(usable_parts, dtype=np.int64)
        src_len, tgt_len = np.asarray(src_lengths, dtype=np.int64), np.asarray(tgt_lengths, dtype=np.int64)
        del usable_parts, src_lengths, tgt_lengths
        if len(usable):
            if backend == FASTALIGN_NUMPY:
                _fastalign_with_numpy(corpus, len(usable), options, links_path)
            elif backend != FASTALIGN_LIBRARY:
                _fastalign_with_programs(corpus, len(usable), options, single_thread, links_path)
            else:
                command = [sys.executable, "-c", _SYSTRAN_ALIGN_CHILD, str(corpus), str(links_path),
                           json.dumps(options), FASTALIGN_SEPARATOR, str(FASTALIGN_CHUNK)]
                done = subprocess.run(command, env=single_thread, capture_output=True, text=True)
                if done.returncode != 0:
                    last = (done.stderr.strip().splitlines() or ["no output"])[-1]
                    raise RuntimeError(f"fast_align (systran-align) failed on {len(usable)} sentence pairs: {last}")
            # (n_links, 3) int32 rows: line of the corpus file, src index, tgt index; in line order
            links = np.memmap(links_path, dtype=np.int32, mode="r") if links_path.stat().st_size else np.empty(0, np.int32)
            links = links.reshape(-1, 3)
        else:
            links = np.empty((0, 3), np.int32)
        if on_aligned is not None:
            on_aligned()
        line_bounds = np.searchsorted(usable, np.arange(0, n_sentences + chunk, chunk))
        link_bounds = np.searchsorted(links[:, 0], line_bounds) if len(links) else np.zeros_like(line_bounds)
        for number, start in enumerate(range(0, n_sentences, chunk)):
            block = np.asarray(links[link_bounds[number] : link_bounds[number + 1]], dtype=np.int64)
            rows = block[:, 0]
            if (block[:, 1] >= src_len[rows]).any() or (block[:, 2] >= tgt_len[rows]).any():
                raise RuntimeError(f"fast_align ({backend}): a link points past the end of its sentence")
            yield np.column_stack([usable[rows], block[:, 1], block[:, 2]]), start, min(start + chunk, n_sentences)
        del links


def _fastalign_with_numpy(corpus: Path, n_lines: int, options: dict[str, Any], links_path: Path) -> None:
    """trainables.fastalign_numpy on the corpus file: the (row, src, tgt) int32 links to `links_path`."""
    from trainables.fastalign_numpy import fastalign_gdfa, read_corpus

    words = read_corpus(corpus, FASTALIGN_SEPARATOR)
    if len(words) != n_lines:
        raise RuntimeError(f"fast_align (numpy): read {len(words)} sentence pairs of the {n_lines} written")
    links = fastalign_gdfa(words, **options, workdir=corpus.parent)
    links.astype(np.int32, copy=False).tofile(links_path)


def _fastalign_with_programs(corpus: Path, n_lines: int, options: dict[str, Any], env: dict[str, str],
                             links_path: Path) -> None:
    """`fast_align` forward and reverse, then `atools -c grow-diag-final-and` (the reference's
    scripts/word_align_with_fastalign.sh); writes the (row, src, tgt) int32 links of the corpus
    file to `links_path`, the programs' outputs going through files, never whole in memory."""
    flags = ["-I", str(options["iterations"])]
    flags += [flag for flag, on in (("-d", options["favor_diagonal"]), ("-o", options["optimize_tension"]),
                                    ("-v", options["variational_bayes"])) if on]
    fast_align, atools = (shutil.which(program) for program in FASTALIGN_PROGRAMS)
    forward, reverse = corpus.with_name("forward.align"), corpus.with_name("reverse.align")
    symmetrised = corpus.with_name("gdfa.align")
    steps = [
        ([fast_align, "-i", str(corpus), *flags], forward),
        ([fast_align, "-i", str(corpus), *flags, "-r"], reverse),
        ([atools, "-i", str(forward), "-j", str(reverse), "-c", "grow-diag-final-and"], symmetrised),
    ]
    for command, output in steps:
        with open(output, "wb") as out:
            done = subprocess.run(command, env=env, stdout=out, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"{Path(command[0]).name} failed on {n_lines} sentence pairs"
                               f" (exit {done.returncode}): {last}")
    what = "atools -c grow-diag-final-and"
    n_read = 0
    with open(symmetrised, encoding="utf-8") as lines, open(links_path, "wb") as out:
        while block := list(itertools.islice(lines, FASTALIGN_CHUNK)):
            if n_read + len(block) > n_lines:
                raise RuntimeError(f"{what}: more alignment lines than the {n_lines} sentence pairs")
            text = "".join(block)
            parsed = parse_pharaoh(text, len(block), what, first_line=n_read + 1)
            parsed[:, 0] += n_read
            parsed.astype(np.int32).tofile(out)
            n_read += len(block)
    if n_read != n_lines:
        raise RuntimeError(f"{what}: {n_read} alignment lines for {n_lines} sentence pairs")


def parse_pharaoh(text: str, n_lines: int, what: str, first_line: int = 1) -> np.ndarray:
    """Pharaoh alignments ("0-0 1-2 ...", one line per sentence pair, src-tgt) as (row, src, tgt)
    int64 rows; `what` names the producer in the error raised on a malformed output."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) != n_lines:
        raise RuntimeError(f"{what}: {len(lines)} alignment lines for {n_lines} sentence pairs")
    for number, line in enumerate(lines, start=first_line):
        if not PHARAOH_LINE.fullmatch(line.strip()):
            raise RuntimeError(f"{what}: line {number} is not Pharaoh format (i-j links): {line[:80]!r}")
    rows = np.repeat(np.arange(n_lines, dtype=np.int64), [line.count("-") for line in lines])
    flat = np.array(" ".join(lines).replace("-", " ").split(), dtype=np.int64).reshape(-1, 2)
    return np.column_stack([rows, flat])


# The child process of `fastalign_links` for systran-align: trains both directions on the corpus
# file and aligns it, saving (row, src, tgt) links as .npy. A script of its own rather than
# `python -m trainables.pairs`: this module's imports (torch and transformers, through
# trainables.data) would cost the child 9 s of CPU, while it needs only numpy and the library.
_SYSTRAN_ALIGN_CHILD = r"""
import itertools, json, sys, tempfile
from pathlib import Path

import numpy as np
import systran_align

corpus, links_path, options, separator, chunk = sys.argv[1:]
chunk = int(chunk)
with tempfile.TemporaryDirectory(prefix="fastalign-probs-") as tmp:
    forward, backward = str(Path(tmp) / "fwd.bin"), str(Path(tmp) / "bwd.bin")
    systran_align.generate_alignment_probabilities(corpus, forward, backward, **json.loads(options))
    aligner = systran_align.Aligner(forward, backward)
    row = 0
    # The corpus is read and aligned a chunk at a time, links appended as int32 rows: the child's
    # memory is one chunk's, not the corpus'.
    with open(corpus, encoding="utf-8") as lines, open(links_path, "wb") as out:
        while block := list(itertools.islice(lines, chunk)):
            pairs = [line.rstrip("\n").split(f" {separator} ") for line in block]
            results = aligner.align_batch([p[0].split() for p in pairs], [p[1].split() for p in pairs])
            rows = np.repeat(np.arange(row, row + len(results), dtype=np.int64),
                             [len(r["alignments"]) for r in results])
            flat = np.array([link for r in results for link in r["alignments"]], dtype=np.int64).reshape(-1, 2)
            np.column_stack([rows, flat]).astype(np.int32).tofile(out)
            row += len(results)
"""


def fastalign_source(en_words: list[list[str]], x_words: list[list[str]], lang: str, context: PairContext) -> pd.DataFrame:
    sentence, src_index, tgt_index = fastalign_links(en_words, x_words, context)
    return links_to_pairs(sentence, src_index, tgt_index, en_words, x_words)


# --- awesome -----------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=2)  # one load for all target languages of a trial
def _load_encoder(name: str, device: str) -> tuple[Any, Any]:
    from transformers import AutoModel, AutoTokenizer

    from trainables.model_files import pretrained_kwargs  # a hub id at its pinned revision, as every loader

    tokenizer = AutoTokenizer.from_pretrained(name, **pretrained_kwargs(name))
    model = AutoModel.from_pretrained(name, **pretrained_kwargs(name)).to(device).eval()
    return tokenizer, model


def release_encoders() -> None:
    """Drop the aligner encoders kept in memory (the extracted pairs are cached on disk)."""
    _load_encoder.cache_clear()


def _word_id_tensor(encoding: Any, batch_size: int, length: int) -> torch.Tensor:
    """Subword -> word index (-1 for special and padding tokens), from the tokenizer's word_ids."""
    import torch

    ids = [[-1 if w is None else w for w in encoding.word_ids(b)] for b in range(batch_size)]
    return torch.tensor(ids, dtype=torch.long).reshape(batch_size, length)


def awesome_links(
    en_words: list[list[str]], x_words: list[list[str]], context: PairContext
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AWESOME-align links with softmax extraction (Dou & Neubig 2021, §2.1), re-implemented.

    The `awesome-align` package (0.1.7) vendors its own 2020 copy of BERT and its WordPiece
    tokenizer, so it only runs BERT checkpoints with a vocab.txt (not e5-small's or XLM-R's
    sentencepiece tokenizers) and not through the installed transformers. This follows its
    `get_aligned_word` and `BertGuideHead` over any transformers encoder: each side is encoded
    on its own, words split into subwords (`is_split_into_words`, like its per-word
    `tokenizer.tokenize`); S = H_en H_x^T with H the hidden states at `awesome_layer`
    (hidden_states index, 0 = embeddings; its default 8 = the output of the 8th layer);
    softmax over target subwords (rows) and over source subwords (columns) with padding and
    special tokens masked out, as its guide head does; a subword link is kept where both
    probabilities exceed the threshold (1e-3); two words are linked when any of their subwords
    are. Pre-trained encoder only (no alignment fine-tuning), as in the paper.
    """
    import torch

    tokenizer, model = _load_encoder(context.awesome_model, context.device)
    family = model_family(model)
    max_length = min(context.awesome_max_length, tokenizer.model_max_length)
    # Batches of similar lengths waste less padding; order does not change the result.
    order = sorted(range(len(en_words)), key=lambda n: (len(en_words[n]) + len(x_words[n]), n))
    order = [n for n in order if en_words[n] and x_words[n]]
    found = []
    for start in range(0, len(order), context.awesome_batch_size):
        batch = order[start : start + context.awesome_batch_size]
        sides = []
        for words in ([en_words[n] for n in batch], [x_words[n] for n in batch]):
            encoding = tokenizer(
                words, is_split_into_words=True, truncation=True, max_length=max_length,
                padding=True, return_tensors="pt",
            )
            with torch.inference_mode():
                inputs = {name: encoding[name] for name in ("input_ids", "attention_mask")}
                hidden = family.hidden_state(model, inputs, context.awesome_layer, "awesome_layer", context.device)
            hidden = hidden.float()
            word_ids = _word_id_tensor(encoding, len(batch), encoding["input_ids"].shape[1]).to(context.device)
            sides.append((hidden, word_ids))
        (h_en, wid_en), (h_x, wid_x) = sides
        is_word_en, is_word_x = wid_en >= 0, wid_x >= 0  # False on special tokens and padding
        similarity = torch.bmm(h_en, h_x.transpose(1, 2))  # [batch, en subwords, x subwords]
        blocked = torch.finfo(similarity.dtype).min
        en_to_x = similarity.masked_fill(~is_word_x[:, None, :], blocked).softmax(dim=-1)
        x_to_en = similarity.masked_fill(~is_word_en[:, :, None], blocked).softmax(dim=-2)
        keep = (en_to_x > context.awesome_threshold) & (x_to_en > context.awesome_threshold)
        keep &= is_word_en[:, :, None] & is_word_x[:, None, :]
        b, i, j = keep.nonzero(as_tuple=True)
        sentence_ids = torch.tensor(batch, dtype=torch.long, device=context.device)
        found.append(torch.stack([sentence_ids[b], wid_en[b, i], wid_x[b, j]], dim=1).cpu())
    if not found:
        empty = np.empty(0, np.int64)
        return empty, empty, empty
    links = torch.unique(torch.cat(found), dim=0).numpy()
    return links[:, 0], links[:, 1], links[:, 2]


def awesome_source(en_words: list[list[str]], x_words: list[list[str]], lang: str, context: PairContext) -> pd.DataFrame:
    sentence, src_index, tgt_index = awesome_links(en_words, x_words, context)
    return links_to_pairs(sentence, src_index, tgt_index, en_words, x_words)


# --- registry and cached extraction ------------------------------------------------------------------

Extract = Callable[[list[list[str]], list[list[str]], str, PairContext], pd.DataFrame]


@dataclass(frozen=True)
class PairSource:
    """One pair source: `extract(en_words, x_words, lang, context)` gives the pairs of a stretch of
    the corpus (called like the function). `head_only`: a trial has it extract only the head of
    the corpus it reads (`extract_pairs(min_paired=...)`), for a source that costs a model's forward
    pass a sentence pair (AWESOME) and whose pairs of a sentence depend on that sentence alone, so
    the head's pairs are those a whole-corpus run would give it. fast_align learns from the whole
    corpus and the dictionary is cheap: they extract everything once."""

    extract: Extract
    head_only: bool = False

    def __call__(self, en_words: list[list[str]], x_words: list[list[str]], lang: str,
                 context: PairContext) -> pd.DataFrame:
        return self.extract(en_words, x_words, lang, context)


PAIR_SOURCES: dict[str, PairSource] = {
    "dico": PairSource(dico_source),
    "fastalign": PairSource(fastalign_source),
    "awesome": PairSource(awesome_source, head_only=True),
}


def get_pair_source(name: str) -> PairSource:
    return lookup(PAIR_SOURCES, name, "pair source")


def _save_segmented(value: tuple[WordLists, WordLists], path: Path) -> None:
    en_words, x_words = value
    pq.write_table(pa.table({"en": en_words.array, "x": x_words.array}), path)


def _load_segmented(path: Path) -> tuple[WordLists, WordLists]:
    table = pq.read_table(path)
    return WordLists(table.column("en")), WordLists(table.column("x"))


def segment_chunked(lines: list[tuple[str, str]], lang: str, chunk: int = EXTRACTION_CHUNK,
                    progress: Callable[[int], None] | None = None) -> tuple[WordLists, WordLists]:
    """Both sides of a parallel corpus segmented `chunk` lines at a time into Arrow arrays, so
    that only one chunk's words are ever Python lists; `progress(n)` after each chunk."""
    words = pa.list_(pa.string())
    en_chunks, x_chunks = [], []
    for start in range(0, len(lines), chunk):
        block = lines[start : start + chunk]
        en_chunks.append(pa.array(segment_corpus([en for en, _ in block], "en"), type=words))
        x_chunks.append(pa.array(segment_corpus([x for _, x in block], lang), type=words))
        if progress is not None:
            progress(len(block))
    return WordLists(pa.chunked_array(en_chunks, type=words)), WordLists(pa.chunked_array(x_chunks, type=words))


class _Progress:
    """Calls `on_progress(done, total)` at most every PROGRESS_INTERVAL_S seconds, and at `finish`."""

    def __init__(self, on_progress: Callable[[int, int], None] | None, total: int) -> None:
        self.on_progress, self.total, self.done = on_progress, total, 0
        self.last = time.monotonic()

    def advance(self, n: int) -> None:
        self.done = min(self.done + n, self.total)
        now = time.monotonic()
        if self.on_progress is not None and now - self.last >= PROGRESS_INTERVAL_S:
            self.last = now
            self.on_progress(self.done, self.total)

    def finish(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.total, self.total)


def _pairs_chunked(source: str, en_words: WordLists, x_words: WordLists, lang: str, context: PairContext,
                   chunk: int, progress: _Progress) -> pd.DataFrame:
    """The pairs of `source` over the corpus, `chunk` sentence pairs at a time. Every source links
    words within one sentence pair, so chunks give exactly the pairs of one pass; fast_align alone
    learns from the whole corpus (one run, its input and output streamed: `_fastalign_link_chunks`)."""
    n = len(en_words)
    parts = []
    # One string object per distinct word, as pyarrow's to_pandas gives a cached table: a
    # 1M-line corpus has millions of pairs but a vocabulary of about 10^5 words.
    pool: dict[str, str] = {}

    def compact(table: pd.DataFrame, start: int) -> pd.DataFrame:
        words = {column: [pool.setdefault(w, w) for w in table[column].tolist()] for column in ("src_word", "tgt_word")}
        return table.assign(sentence=table["sentence"] + start, **words)

    if source == "fastalign":
        for links, start, stop in _fastalign_link_chunks(en_words, x_words, context, chunk,
                                                         on_aligned=lambda: progress.advance(n)):
            en_chunk, x_chunk = en_words[start:stop], x_words[start:stop]
            table = links_to_pairs(links[:, 0] - start, links[:, 1], links[:, 2], en_chunk, x_chunk)
            parts.append(compact(table, start))
            progress.advance(stop - start)
    else:
        pair_source = get_pair_source(source)
        # AWESOME's forward passes are slow: smaller chunks report progress every few batches.
        step = min(chunk, context.awesome_batch_size * 8) if source == "awesome" else chunk
        for start in range(0, n, step):
            table = pair_source(en_words[start : start + step], x_words[start : start + step], lang, context)
            parts.append(compact(table, start))
            progress.advance(min(step, n - start))
    if not parts:
        return links_to_pairs(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64), [], [])
    pairs = pd.concat(parts, ignore_index=True)
    return pairs.astype({"sentence": np.int64, "src_index": np.int64, "tgt_index": np.int64})[list(PAIR_COLUMNS)]


def _head_pairs(source: str, en_words: WordLists, x_words: WordLists, lang: str, context: PairContext, chunk: int,
                min_paired: int, progress: _Progress,
                part_path: Callable[[int, int], Path]) -> tuple[pd.DataFrame, int | None]:
    """The pairs of the corpus's first parts of `chunk` lines, each cached on its own (`part_path`),
    until they hold `min_paired` paired sentences: (pairs, paired sentences), or (pairs, None) when
    the parts reached the end of the corpus (then they are the whole corpus's pairs)."""
    n = len(en_words)
    parts: list[pd.DataFrame] = []
    paired = 0
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        if progress.total < progress.done + (stop - start):  # more parts than estimated
            progress.total = progress.done + (stop - start)

        def compute(start: int = start, stop: int = stop) -> pd.DataFrame:
            part = _pairs_chunked(source, en_words[start:stop], x_words[start:stop], lang, context, chunk, progress)
            return part.assign(sentence=part["sentence"] + start)

        part = cached(part_path(start, stop), compute, _save_pairs, _load_pairs)
        parts.append(part)
        paired += int(part["sentence"].nunique())
        if paired >= min_paired and stop < n:
            pairs = pd.concat(parts, ignore_index=True)[list(PAIR_COLUMNS)]
            return pairs, paired
    pairs = (pd.concat(parts, ignore_index=True)[list(PAIR_COLUMNS)] if parts
             else links_to_pairs(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64), [], []))
    return pairs, None


def _save_pairs(pairs: pd.DataFrame, path: Path) -> None:
    pairs.to_parquet(path, index=False)


def _load_pairs(path: Path) -> pd.DataFrame:
    pairs = pd.read_parquet(path)
    dtypes = {"sentence": np.int64, "src_index": np.int64, "tgt_index": np.int64, "src_word": str, "tgt_word": str}
    return pairs.astype(dtypes)[list(PAIR_COLUMNS)]


def corpus_fingerprint(lines: list[tuple[str, str]]) -> str:
    """A short hash of a parallel corpus' text: cached pairs follow the data, not just its name."""
    digest = hashlib.sha256()
    for en, x in lines:
        digest.update(en.encode("utf-8") + b"\t" + x.encode("utf-8") + b"\n")
    return digest.hexdigest()[:16]


def extract_pairs(
    corpus: str,
    lang: str,
    source: str,
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    subset: Subset | None = None,
    context: PairContext | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    chunk_size: int = EXTRACTION_CHUNK,
    min_paired: int | None = None,
) -> AlignedCorpus:
    """Load `corpus` (en-`lang`), segment it and extract word pairs with `source`, cached.

    `min_paired`: a trial reads only the head of the corpus (its streams' buffer shuffle,
    `shuffle.items_read`), this many sentences that hold a pair at most. A `head_only` source
    (AWESOME) then extracts `chunk_size` sentence pairs at a time, each part cached on its own,
    until the parts hold `min_paired` paired sentences or the corpus ends; the result's
    `head_paired` says how many (None: the whole corpus was extracted). Other sources, and None,
    extract the whole corpus.

    Explicit `data_dir` / `cache_dir` take precedence over the context's. Cache files live under
    `<cache dir>/pairs/` and are keyed by corpus, language, subset, segmentation, the corpus
    text itself (a hash) and, for pairs, the source, its settings and the content of the files
    it reads (`PairContext.cache_parts`), and by the corpus sample's size and seed.

    Bounded memory: the corpus is a reservoir sample (`context.parallel_sample` pairs,
    data.load_parallel), segmented and searched `chunk_size` sentence pairs at a time; the words are
    kept as Arrow arrays (`WordLists`), the raw text is dropped. `on_progress(done, total)` is
    called at most every PROGRESS_INTERVAL_S seconds and once at the end, in sentence pairs over
    the phases still to run (segmentation, pair extraction, fast_align's training).
    """
    get_pair_source(source)  # an unknown name fails before any work
    context = context or PairContext()
    data_dir = data_dir if data_dir is not None else context.data_dir
    cache_dir = cache_dir if cache_dir is not None else context.cache_dir
    context = dataclasses.replace(context, data_dir=data_dir, cache_dir=cache_dir)
    subset = subset or Subset()

    lines = load_parallel(corpus, lang, data_dir, cache_dir, subset, context.parallel_sample,
                          context.parallel_sample_seed)
    n_lines = len(lines)
    text_hash = corpus_fingerprint(lines)
    segmentation = {"en": segmentation_id("en"), lang: segmentation_id(lang)}
    # The sample's size and seed are in the key through the text hash; named too, for clarity.
    base = dict(corpus=corpus, lang=lang, subset=subset.key, text=text_hash, segmentation=segmentation,
                sample=context.parallel_sample, sample_seed=context.parallel_sample_seed)
    folder = resolve_cache_dir(cache_dir) / "pairs"
    stem = f"{corpus}-en-{lang}-{subset.key}"
    segmented_path = folder / f"{stem}-segmented-{cache_key(**base)}.parquet"
    pairs_key = cache_key(**base, source=source, settings=context.cache_parts(source, lang),
                          version=PAIRS_FORMAT_VERSION)
    pairs_path = folder / f"{stem}-{source}-{pairs_key}.parquet"
    # Work in sentence pairs: one pass per phase still to run (segmentation, pairs; fast_align's
    # training counts as one more pass).
    head_only = min_paired is not None and getattr(get_pair_source(source), "head_only", False)
    if head_only:  # the parts' lines, at least one part; more if they hold too few paired sentences
        phases = (not segmented_path.is_file()) * n_lines + min(n_lines, max(1, -(-min_paired // chunk_size)) * chunk_size)
    else:
        phases = ((not segmented_path.is_file()) + (not pairs_path.is_file()) * (2 if source == "fastalign" else 1)) * n_lines
    progress = _Progress(on_progress, max(phases, n_lines))

    raw = {"lines": lines}
    del lines

    def segment_all() -> tuple[WordLists, WordLists]:
        return segment_chunked(raw["lines"], lang, chunk_size, progress.advance)

    en_words, x_words = cached(segmented_path, segment_all, _save_segmented, _load_segmented)
    raw.clear()  # the raw text is not needed any more: only the words and the pairs are kept
    if head_only:
        def part_path(start: int, stop: int) -> Path:  # what the whole corpus's pairs file is, on these lines
            return folder / f"{stem}-{source}-lines-{start}-{stop}-{cache_key(pairs=pairs_key, part=[start, stop])}.parquet"

        pairs, paired = _head_pairs(source, en_words, x_words, lang, context, chunk_size, min_paired, progress,
                                    part_path)
        progress.finish()
        # the whole corpus's pairs key names the content; the head is its pairs up to `paired` sentences
        head_key = cache_key(pairs=pairs_key, head=paired, lines=int(pairs["sentence"].max()) if len(pairs) else -1)
        return AlignedCorpus(lang=lang, en_words=en_words, x_words=x_words, pairs=pairs, head_paired=paired,
                             content_key=f"{lang}-{head_key}")
    pairs = cached(
        pairs_path,
        lambda: _pairs_chunked(source, en_words, x_words, lang, context, chunk_size, progress),
        _save_pairs,
        _load_pairs,
    )
    progress.finish()
    return AlignedCorpus(lang=lang, en_words=en_words, x_words=x_words, pairs=pairs, content_key=f"{lang}-{pairs_key}")
