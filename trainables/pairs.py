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
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from trainables.cache import cache_key, cached, file_fingerprint, model_fingerprint
from trainables.data import (
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
from trainables.registry import lookup

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
# fast_align's input format separates the two sides with " ||| ": a token containing "|||"
# would break the line, so such tokens are renamed for the aligner only.
FASTALIGN_SEPARATOR = "|||"
FASTALIGN_SEPARATOR_STANDIN = "<bars>"
# The two ways to run fast_align (see fastalign_links): the systran-align package, whose wheels
# exist for CPython <= 3.11 on Linux x86_64 only, else clab/fast_align's programs on PATH.
FASTALIGN_LIBRARY = "systran-align"
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
    muse_reverse_file: str = "en-x-copy"  # the reference's X-en file: a copy of en-X (data.muse_file_key)
    fastalign_iterations: int = FASTALIGN_ITERATIONS
    fastalign_favor_diagonal: bool = True  # -d
    fastalign_optimize_tension: bool = True  # -o
    fastalign_variational_bayes: bool = True  # -v

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
                backend=fastalign_backend(),  # the library and the programs may link differently
                iterations=self.fastalign_iterations,
                d=self.fastalign_favor_diagonal,
                o=self.fastalign_optimize_tension,
                v=self.fastalign_variational_bayes,
            )
        return {}


@dataclass(frozen=True, eq=False)
class AlignedCorpus:
    """A segmented parallel corpus and its word pairs (what alignment and realignment consume)."""

    lang: str
    en_words: list[list[str]]
    x_words: list[list[str]]
    pairs: pd.DataFrame = field(repr=False)

    @functools.cached_property
    def fingerprint(self) -> str:
        """A short hash of the language, both segmented sides and the pairs: what a measurement
        on this corpus depends on, for cache keys."""
        digest = hashlib.sha256(self.lang.encode("utf-8") + b"\0")
        for side in (self.en_words, self.x_words):
            for words in side:
                digest.update("\x1f".join(words).encode("utf-8") + b"\n")
            digest.update(b"\0")
        table = self.pairs[list(PAIR_COLUMNS)]
        digest.update(pd.util.hash_pandas_object(table, index=False).to_numpy().tobytes())
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


def dico_source(en_words: list[list[str]], x_words: list[list[str]], lang: str, context: PairContext) -> pd.DataFrame:
    en_to_x = load_dictionary("en", lang, context.data_dir, context.cache_dir, context.muse_reverse_file)
    x_to_en = load_dictionary(lang, "en", context.data_dir, context.cache_dir, context.muse_reverse_file)
    return pairs_from_dictionary(en_words, x_words, en_to_x, x_to_en, lowercase=context.dico_lowercase)


# --- fastalign ---------------------------------------------------------------------------------------


def _fastalign_tokens(words: list[str]) -> list[str]:
    return [FASTALIGN_SEPARATOR_STANDIN if FASTALIGN_SEPARATOR in w else w for w in words]


def fastalign_backend() -> str:
    """How the `fastalign` source runs fast_align here: "systran-align" where that package is
    installed, else "fast_align" where clab/fast_align's `fast_align` and `atools` are on PATH.

    The package is looked up without importing it: importing loads its own OpenMP runtime into this
    process, which only the child process of `fastalign_links` needs. Neither way: TrialInputError.
    """
    if importlib.util.find_spec("systran_align") is not None:
        return FASTALIGN_LIBRARY
    if all(shutil.which(program) for program in FASTALIGN_PROGRAMS):
        return FASTALIGN_PROGRAMS[0]
    raise TrialInputError(
        "pair source 'fastalign' needs fast_align: pip install systran-align (wheels for CPython"
        " 3.10-3.11 on Linux x86_64 only) or put the fast_align and atools programs"
        " (github.com/clab/fast_align) on PATH; found neither")


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
      two ways can give slightly different pairs (the backend is part of the cache key).

    Sentence pairs with an empty side are left out (fast_align cannot align them). fast_align's EM
    adds floats from several OpenMP threads in a varying order, so two runs on the same corpus can
    give different links: both ways run in child processes with OMP_NUM_THREADS=1 (for the
    library, the one way to pin the thread count of the OpenMP runtime it bundles, already
    initialised once imported), so that runs give the same pairs.
    """
    usable = [n for n, (en, x) in enumerate(zip(en_words, x_words)) if en and x]
    if not usable:
        empty = np.empty(0, np.int64)
        return empty, empty, empty
    backend = fastalign_backend()
    src = [_fastalign_tokens(en_words[n]) for n in usable]
    tgt = [_fastalign_tokens(x_words[n]) for n in usable]
    options = dict(
        iterations=context.fastalign_iterations,
        favor_diagonal=context.fastalign_favor_diagonal,
        optimize_tension=context.fastalign_optimize_tension,
        variational_bayes=context.fastalign_variational_bayes,
    )
    single_thread = {**os.environ, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory(prefix="fastalign-") as tmp:
        corpus, links_path = Path(tmp) / "corpus.txt", Path(tmp) / "links.npy"
        with open(corpus, "w", encoding="utf-8") as handle:
            for s, t in zip(src, tgt):
                handle.write(f"{' '.join(s)} {FASTALIGN_SEPARATOR} {' '.join(t)}\n")
        if backend != FASTALIGN_LIBRARY:
            links = _fastalign_with_programs(corpus, len(src), options, single_thread)
        else:
            command = [sys.executable, "-c", _SYSTRAN_ALIGN_CHILD, str(corpus), str(links_path), json.dumps(options),
                       FASTALIGN_SEPARATOR, str(FASTALIGN_CHUNK)]
            done = subprocess.run(command, env=single_thread, capture_output=True, text=True)
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["no output"])[-1]
                raise RuntimeError(f"fast_align (systran-align) failed on {len(src)} sentence pairs: {last}")
            links = np.load(links_path)  # (n_links, 3): row in `usable`, src index, tgt index
    src_lengths, tgt_lengths = (np.array([len(words) for words in side], dtype=np.int64) for side in (src, tgt))
    if (links[:, 1] >= src_lengths[links[:, 0]]).any() or (links[:, 2] >= tgt_lengths[links[:, 0]]).any():
        raise RuntimeError(f"fast_align ({backend}): a link points past the end of its sentence")
    sentence = np.asarray(usable, dtype=np.int64)[links[:, 0]]
    return sentence, links[:, 1], links[:, 2]


def _fastalign_with_programs(corpus: Path, n_lines: int, options: dict[str, Any], env: dict[str, str]) -> np.ndarray:
    """`fast_align` forward and reverse, then `atools -c grow-diag-final-and` (the reference's
    scripts/word_align_with_fastalign.sh); returns the (row, src, tgt) links of the corpus file."""
    flags = ["-I", str(options["iterations"])]
    flags += [flag for flag, on in (("-d", options["favor_diagonal"]), ("-o", options["optimize_tension"]),
                                    ("-v", options["variational_bayes"])) if on]
    fast_align, atools = (shutil.which(program) for program in FASTALIGN_PROGRAMS)
    forward, reverse = corpus.with_name("forward.align"), corpus.with_name("reverse.align")
    steps = [
        ([fast_align, "-i", str(corpus), *flags], forward),
        ([fast_align, "-i", str(corpus), *flags, "-r"], reverse),
        ([atools, "-i", str(forward), "-j", str(reverse), "-c", "grow-diag-final-and"], None),
    ]
    for command, output in steps:
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"{Path(command[0]).name} failed on {n_lines} sentence pairs"
                               f" (exit {done.returncode}): {last}")
        if output is not None:
            output.write_text(done.stdout, encoding="utf-8")
    return parse_pharaoh(done.stdout, n_lines, "atools -c grow-diag-final-and")


def parse_pharaoh(text: str, n_lines: int, what: str) -> np.ndarray:
    """Pharaoh alignments ("0-0 1-2 ...", one line per sentence pair, src-tgt) as (row, src, tgt)
    int64 rows; `what` names the producer in the error raised on a malformed output."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) != n_lines:
        raise RuntimeError(f"{what}: {len(lines)} alignment lines for {n_lines} sentence pairs")
    for number, line in enumerate(lines, start=1):
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
import json, sys, tempfile
from pathlib import Path

import numpy as np
import systran_align

corpus, links_path, options, separator, chunk = sys.argv[1:]
chunk = int(chunk)
with tempfile.TemporaryDirectory(prefix="fastalign-probs-") as tmp:
    forward, backward = str(Path(tmp) / "fwd.bin"), str(Path(tmp) / "bwd.bin")
    systran_align.generate_alignment_probabilities(corpus, forward, backward, **json.loads(options))
    aligner = systran_align.Aligner(forward, backward)
    pairs = [line.rstrip("\n").split(f" {separator} ") for line in open(corpus, encoding="utf-8")]
    src, tgt = [p[0].split() for p in pairs], [p[1].split() for p in pairs]
    results = []
    for start in range(0, len(src), chunk):
        results.extend(aligner.align_batch(src[start : start + chunk], tgt[start : start + chunk]))
rows = np.repeat(np.arange(len(results), dtype=np.int64), [len(r["alignments"]) for r in results])
flat = np.array([link for r in results for link in r["alignments"]], dtype=np.int64).reshape(-1, 2)
np.save(links_path, np.column_stack([rows, flat]))
"""


def fastalign_source(en_words: list[list[str]], x_words: list[list[str]], lang: str, context: PairContext) -> pd.DataFrame:
    sentence, src_index, tgt_index = fastalign_links(en_words, x_words, context)
    return links_to_pairs(sentence, src_index, tgt_index, en_words, x_words)


# --- awesome -----------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=2)  # one load for all target languages of a trial
def _load_encoder(name: str, device: str) -> tuple[Any, Any]:
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name)
    model = AutoModel.from_pretrained(name).to(device).eval()
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

PairSource = Callable[[list[list[str]], list[list[str]], str, PairContext], pd.DataFrame]

PAIR_SOURCES: dict[str, PairSource] = {
    "dico": dico_source,
    "fastalign": fastalign_source,
    "awesome": awesome_source,
}


def get_pair_source(name: str) -> PairSource:
    return lookup(PAIR_SOURCES, name, "pair source")


def _save_segmented(value: tuple[list[list[str]], list[list[str]]], path: Path) -> None:
    en_words, x_words = value
    words = pa.list_(pa.string())
    pq.write_table(pa.table({"en": pa.array(en_words, type=words), "x": pa.array(x_words, type=words)}), path)


def _load_segmented(path: Path) -> tuple[list[list[str]], list[list[str]]]:
    table = pq.read_table(path)
    return table.column("en").to_pylist(), table.column("x").to_pylist()


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
) -> AlignedCorpus:
    """Load `corpus` (en-`lang`), segment it and extract word pairs with `source`, cached.

    Explicit `data_dir` / `cache_dir` take precedence over the context's. Cache files live under
    `<cache dir>/pairs/` and are keyed by corpus, language, subset, segmentation, the corpus
    text itself (a hash) and, for pairs, the source, its settings and the content of the files
    it reads (`PairContext.cache_parts`).
    """
    pair_source = get_pair_source(source)
    context = context or PairContext()
    data_dir = data_dir if data_dir is not None else context.data_dir
    cache_dir = cache_dir if cache_dir is not None else context.cache_dir
    context = dataclasses.replace(context, data_dir=data_dir, cache_dir=cache_dir)
    subset = subset or Subset()

    lines = load_parallel(corpus, lang, data_dir, cache_dir, subset)
    text_hash = corpus_fingerprint(lines)
    segmentation = {"en": segmentation_id("en"), lang: segmentation_id(lang)}
    base = dict(corpus=corpus, lang=lang, subset=subset.key, text=text_hash, segmentation=segmentation)
    folder = resolve_cache_dir(cache_dir) / "pairs"
    stem = f"{corpus}-en-{lang}-{subset.key}"

    en_words, x_words = cached(
        folder / f"{stem}-segmented-{cache_key(**base)}.parquet",
        lambda: (segment_corpus([en for en, _ in lines], "en"), segment_corpus([x for _, x in lines], lang)),
        _save_segmented,
        _load_segmented,
    )
    pairs_key = cache_key(**base, source=source, settings=context.cache_parts(source, lang),
                          version=PAIRS_FORMAT_VERSION)
    pairs = cached(
        folder / f"{stem}-{source}-{pairs_key}.parquet",
        lambda: pair_source(en_words, x_words, lang, context),
        _save_pairs,
        _load_pairs,
    )
    return AlignedCorpus(lang=lang, en_words=en_words, x_words=x_words, pairs=pairs)
