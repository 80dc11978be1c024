"""fast_align (`fast_align -d -o -v`) and `atools -c grow-diag-final-and`, in numpy, in bounded memory.

The `fastalign` pair source runs clab/fast_align (Dyer et al. 2013) as the paper's code did. Its
translation table is two C++ hash maps (probabilities and counts) with an entry for every pair of
words that share a sentence pair: at 1M lines that passed 4.5 GB (benchmarks/RESULTS.md, corpus
memory). This module is the same model and the same EM, written for memory: the table is one sorted
array of (source word, target word) keys with a float64 probability and count each (24 bytes an
entry, against fast_align's ~80), and the co-occurrences of the corpus, which every iteration
visits, are computed a block of sentences at a time, their table positions kept in a file on disk
rather than looked up again. It is chosen with the setting `fastalign_backend="numpy"`.

What is reproduced from fast_align.cc, ttables.h and da.h (clab/fast_align), on purpose:
- the initial pass: an entry for every co-occurring pair and for (NULL, f) of every target word;
  the first iteration uses 1e-9 for every translation probability (so only the diagonal prior
  decides it);
- the E-step: p(a_j = 0) = p0 (0.08) x t(f|NULL); p(a_j = i) = (1 - p0) x exp(-T |i/n - (j+1)/m|)
  / Z x t(f|e_i), Z in fast_align's closed form (`ComputeZ`); the expected feature with fast_align's
  own 0-based j (`Feature(j, i, m, n)`);
- the tension update after iterations 2..I-1, 8 gradient steps of rate 20 clipped to [0.1, 14],
  with fast_align's `ComputeDLogZ` (including its call of ComputeZ with m and n swapped);
- variational Bayes: t(f|e) = exp(digamma(c(e,f) + a) - digamma(sum_f c(e,f) + a)), a = 0.01,
  with fast_align's series for digamma (not scipy's);
- the last iteration outputs each target word's Viterbi link (the first maximum, NULL first, so no
  link); `-r` swaps the sides;
- grow-diag-final-and exactly as atools (its neighbour order, its set-ordered growing passes).
Sums are taken in another order than fast_align's (per-word totals over a hash map's order), so
the two can differ where two links tie to the last bits; tests/test_fastalign_numpy.py measures
the agreement with fast_align itself on real text.
"""
from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

P0 = 0.08  # fast_align's prob_align_null
INITIAL_TENSION = 4.0
ALPHA = 0.01
UNINITIALISED_PROB = 1e-9  # TTable::prob before the first normalisation
TENSION_STEPS, TENSION_RATE, TENSION_MIN, TENSION_MAX = 8, 20.0, 0.1, 14.0
PAIRS_PER_BLOCK = 2_000_000  # co-occurrences computed at a time (about 100 MB of work arrays)
READ_LINES = 50_000  # corpus lines read at a time


@dataclass
class Corpus:
    """The corpus as word ids: each side flattened, with per-sentence offsets (int64, n + 1)."""

    src: np.ndarray
    src_offsets: np.ndarray
    tgt: np.ndarray
    tgt_offsets: np.ndarray
    src_vocab: int
    tgt_vocab: int

    def __len__(self) -> int:
        return len(self.src_offsets) - 1

    def swapped(self) -> "Corpus":
        return Corpus(self.tgt, self.tgt_offsets, self.src, self.src_offsets, self.tgt_vocab, self.src_vocab)


def read_corpus(path: Path, separator: str = "|||") -> Corpus:
    """fast_align's input (`src words ||| tgt words` a line) as word ids, read in blocks of lines.
    Words are split on ASCII whitespace (fast_align splits on spaces and tabs only: the same for the
    files trainables.pairs writes, whose words hold no whitespace). Lines end at "\\n" only."""
    vocabularies: tuple[dict[str, int], dict[str, int]] = ({}, {})
    ids: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])
    lengths: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])
    with open(path, encoding="utf-8", newline="\n") as handle:
        while True:
            lines = [line.rstrip("\n") for _, line in zip(range(READ_LINES), handle)]
            if not lines:
                break
            sides = [line.split(f" {separator} ", 1) for line in lines]
            for side in (0, 1):
                words = pc.ascii_split_whitespace(pa.array([s[side] if len(s) > side else "" for s in sides]))
                lengths[side].append(pc.list_value_length(words).to_numpy(zero_copy_only=False).astype(np.int64))
                encoded = pc.dictionary_encode(pc.list_flatten(words))
                vocabulary = vocabularies[side]
                mapping = np.fromiter((vocabulary.setdefault(w, len(vocabulary)) for w in encoded.dictionary.to_pylist()),
                                      dtype=np.int32, count=len(encoded.dictionary))
                ids[side].append(mapping[encoded.indices.to_numpy(zero_copy_only=False)] if len(mapping)
                                 else np.empty(0, np.int32))

    (src, src_offsets), (tgt, tgt_offsets) = (_flatten(ids[side], lengths[side]) for side in (0, 1))
    vocabulary_sizes = (len(vocabularies[0]), len(vocabularies[1]))
    del ids, lengths, vocabularies
    pa.default_memory_pool().release_unused()  # Arrow's allocator keeps freed blocks otherwise
    return Corpus(src, src_offsets, tgt, tgt_offsets, vocabulary_sizes[0], vocabulary_sizes[1])


def _flatten(ids: list[np.ndarray], lengths: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """One side's word ids, concatenated, and its sentence offsets (n + 1)."""
    counts = np.concatenate(lengths) if lengths else np.empty(0, np.int64)
    return (np.concatenate(ids) if ids else np.empty(0, np.int32),
            np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))


# --- the diagonal prior (da.h), vectorised ---------------------------------------------------------
# exp and pow come from the C library (math.exp, math.pow), as in fast_align: numpy's vectorised
# exp differs from it in the last bit for about 5% of arguments (and by CPU: its SIMD code is chosen
# at run time), and the prior has exact ties (two source positions as far from the diagonal), which
# such a bit decides. With the C library's functions the ties fall as in fast_align, on any CPU.


def _libm_exp(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return np.fromiter(map(math.exp, x.ravel().tolist()), np.float64, x.size).reshape(x.shape)


def _libm_pow(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x, y = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    return np.fromiter(map(math.pow, x.ravel().tolist(), y.ravel().tolist()), np.float64, x.size).reshape(x.shape)


def _feature(i: np.ndarray, j: np.ndarray, m: np.ndarray, n: np.ndarray) -> np.ndarray:
    return -np.abs(j / n - i / m)


def _unnormalized(i: np.ndarray, j: np.ndarray, m: np.ndarray, n: np.ndarray, tension: float) -> np.ndarray:
    return _libm_exp(_feature(i, j, m, n) * tension)


def _compute_z(i: np.ndarray, m: np.ndarray, n: np.ndarray, tension: float) -> np.ndarray:
    split = i.astype(np.float64) * n / m
    floor = split.astype(np.int64)
    ratio = _libm_exp(-tension / n)
    # `unsigned num_top = n - floor` in da.h: when ComputeDLogZ calls this with m and n swapped, floor
    # can pass n, and the difference wraps around to about 2^32 (so pow(ratio, num_top) is 0)
    num_top = (n - floor) % (1 << 32)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        top = _unnormalized(i, floor + 1, m, n, tension) * (1.0 - _libm_pow(ratio, num_top)) / (1.0 - ratio)
        bottom = _unnormalized(i, floor, m, n, tension) * (1.0 - _libm_pow(ratio, floor)) / (1.0 - ratio)
    return np.where(floor > 0, bottom, 0.0) + np.where(num_top > 0, top, 0.0)


def _series(a_1: np.ndarray, g_1: np.ndarray, r: np.ndarray, d: np.ndarray, count: np.ndarray) -> np.ndarray:
    g_np1 = g_1 * _libm_pow(r, count)
    a_n = d * (count - 1) + a_1
    rm1 = r - 1
    return (a_n * g_np1 - a_1 * g_1) / rm1 - d * (g_np1 - g_1 * r) / (rm1 * rm1)


def _compute_dlogz(i: np.ndarray, m: np.ndarray, n: np.ndarray, tension: float) -> np.ndarray:
    z = _compute_z(i, n, m, tension)  # fast_align's argument order (m and n swapped)
    split = i.astype(np.float64) * n / m
    floor = split.astype(np.int64)
    ratio = _libm_exp(-tension / n)
    d = -1.0 / n
    num_top = n - floor
    with np.errstate(divide="ignore", invalid="ignore"):
        top = _series(_feature(i, floor + 1, m, n), _unnormalized(i, floor + 1, m, n, tension), ratio, d, num_top)
        bottom = _series(_feature(i, floor, m, n), _unnormalized(i, floor, m, n, tension), ratio, d, floor)
    return (np.where(num_top > 0, top, 0.0) + np.where(floor > 0, bottom, 0.0)) / z


def _digamma(x: np.ndarray) -> np.ndarray:
    """fast_align's digamma (ttables.h Md::digamma): recurrence up to 7, then the series."""
    x = np.array(x, dtype=np.float64)
    result = np.zeros_like(x)
    for _ in range(7):  # x >= alpha > 0: at most 7 steps reach 7
        small = x < 7
        if not small.any():
            break
        result[small] -= 1 / x[small]
        x[small] += 1
    x = x - 0.5
    xx = 1.0 / x
    xx2 = xx * xx
    xx4 = xx2 * xx2
    # grouped as ttables.h: result += log(x) + ... (the series summed first, then added)
    return result + (np.log(x) + (1 / 24) * xx2 - (7 / 960) * xx4 + (31 / 8064) * xx4 * xx2 - (127 / 30720) * xx4 * xx4)


# --- one direction ---------------------------------------------------------------------------------

@dataclass
class Block:
    """A block of consecutive sentences' co-occurrences: one row per (target word, source position
    or NULL), grouped by target word, NULL first."""

    sentence: np.ndarray  # per target word
    group_starts: np.ndarray  # start row of each target word's group
    row_target: np.ndarray  # target word (index within the block) of each row
    i: np.ndarray  # 0 = NULL, else 1-based source position
    j: np.ndarray  # 0-based target position, per target word
    m: np.ndarray  # target length, per target word
    n: np.ndarray  # source length, per target word
    keys: np.ndarray  # e * (tgt_vocab) + f of each row (e = src_vocab for NULL)


def _blocks(corpus: Corpus, with_keys: bool = True) -> Iterator[Block]:
    """Consecutive sentences, about PAIRS_PER_BLOCK co-occurrences a block (the same blocks every
    pass); `with_keys` False leaves out the table keys (the EM passes read their positions)."""
    src_len = np.diff(corpus.src_offsets)
    tgt_len = np.diff(corpus.tgt_offsets)
    rows = np.cumsum(tgt_len * (src_len + 1))
    total = int(rows[-1]) if len(rows) else 0
    cuts = np.searchsorted(rows, np.arange(PAIRS_PER_BLOCK, total, PAIRS_PER_BLOCK), "left") + 1
    boundaries = np.unique(np.concatenate([[0], cuts, [len(corpus)]]).astype(np.int64))
    for start, stop in zip(boundaries[:-1], boundaries[1:]):
        yield _block(corpus, int(start), int(stop), src_len, tgt_len, with_keys)


def _block(corpus: Corpus, start: int, stop: int, src_len: np.ndarray, tgt_len: np.ndarray,
           with_keys: bool = True) -> Block:
    sentences = np.arange(start, stop)
    word_sentence = np.repeat(sentences, tgt_len[start:stop])  # per target word
    tgt_first = corpus.tgt_offsets[start]
    f = corpus.tgt[tgt_first : corpus.tgt_offsets[stop]]
    j = np.arange(len(f)) - (corpus.tgt_offsets[word_sentence] - tgt_first)
    m, n = tgt_len[word_sentence], src_len[word_sentence]
    group_size = n + 1
    group_starts = np.concatenate([[0], np.cumsum(group_size)[:-1]]).astype(np.int64)
    row_target = np.repeat(np.arange(len(f)), group_size)
    i = np.arange(int(group_size.sum())) - group_starts[row_target]
    keys = np.empty(0, np.int64)
    if with_keys:
        src_position = corpus.src_offsets[word_sentence[row_target]] + np.maximum(i - 1, 0)
        e = np.where(i == 0, corpus.src_vocab, corpus.src[np.minimum(src_position, len(corpus.src) - 1)])
        keys = e.astype(np.int64) * np.int64(corpus.tgt_vocab) + f[row_target]
    return Block(word_sentence, group_starts, row_target, i, j, m, n, keys)


def _distinct_sorted(parts: list[np.ndarray]) -> np.ndarray:
    """The sorted distinct values of the arrays in `parts` (emptied: each is released as soon as it
    is copied). Sorted in place, then repeats dropped: numpy 2's np.unique hashes integers first,
    about 10x slower here, and would hold another copy."""
    keys = np.concatenate(parts) if parts else np.empty(0, np.int64)
    parts.clear()
    keys.sort()
    if len(keys) < 2:
        return keys
    keep = np.empty(len(keys), bool)
    keep[0] = True
    np.not_equal(keys[1:], keys[:-1], out=keep[1:])
    return keys[keep]


def _table_keys(corpus: Corpus) -> np.ndarray:
    """The sorted distinct keys of every co-occurrence (fast_align's InitialPass)."""
    table = np.empty(0, np.int64)
    pending: list[np.ndarray] = []
    pending_size = 0
    for block in _blocks(corpus):
        distinct = _distinct_sorted([block.keys])
        pending.append(distinct)
        pending_size += len(distinct)
        if pending_size > max(len(table), PAIRS_PER_BLOCK):  # merge when the pending part is as large
            pending.insert(0, table)
            del table
            table, pending_size = _distinct_sorted(pending), 0
    if pending:
        pending.insert(0, table)
        del table
        table = _distinct_sorted(pending)
    return table


def _positions(table: np.ndarray, keys: np.ndarray) -> np.ndarray:
    order = np.argsort(keys, kind="stable")  # sorted needles: numpy's binary search reuses its bounds
    found = np.empty(len(keys), np.int64)
    found[order] = np.searchsorted(table, keys[order])
    return found


@dataclass
class PriorTable:
    """p(a_j = i | m, n) for every sentence-length pair (m target, n source words) of the corpus,
    i = 1..n, j = 0..m-1, flattened (fast_align's diagonal prior, NULL's p0 apart); and the model's
    expected diagonal feature over the same pairs, which the tension update needs (size_counts)."""

    sizes: np.ndarray  # (k, 2): m, n
    sentence_size: np.ndarray  # per sentence, its row of `sizes`
    sentences_of_size: np.ndarray  # per row of `sizes`, how many sentences have it
    starts: np.ndarray  # where each size's m x n block begins
    target_size: np.ndarray  # per (size, target position): its row of `sizes`
    target_j: np.ndarray  # per (size, target position): the 0-based position
    values: np.ndarray

    @classmethod
    def build(cls, corpus: Corpus) -> "PriorTable":
        src_len, tgt_len = np.diff(corpus.src_offsets), np.diff(corpus.tgt_offsets)
        sizes, sentence_size, sentences_of_size = np.unique(
            np.stack([tgt_len, src_len], axis=1), axis=0, return_inverse=True, return_counts=True)
        m = sizes[:, 0]
        cells = m * sizes[:, 1]
        starts = np.concatenate([[0], np.cumsum(cells)[:-1]]).astype(np.int64)
        target_size = np.repeat(np.arange(len(sizes)), m)
        target_j = np.arange(len(target_size)) - np.repeat(np.cumsum(m) - m, m)
        return cls(sizes, sentence_size.ravel(), sentences_of_size, starts, target_size, target_j,
                   np.empty(int(cells.sum()), np.float64))

    def fill(self, tension: float) -> None:
        m_of_size, n_of_size = self.sizes[:, 0], self.sizes[:, 1]
        cells = m_of_size * n_of_size
        size = np.repeat(np.arange(len(self.sizes)), cells)
        local = np.arange(len(self.values)) - self.starts[size]
        m, n = m_of_size[size], n_of_size[size]
        j, i = local // n, local % n + 1
        # az of each (size, target position): ComputeZ(j + 1, m, n) / (1 - p0)
        az = _compute_z(self.target_j + 1, m_of_size[self.target_size], n_of_size[self.target_size],
                        tension) / (1.0 - P0)
        az_start = np.cumsum(m_of_size) - m_of_size
        self.values[:] = _unnormalized(j + 1, i, m, n, tension) / az[az_start[size] + j]

    def model_feature(self, tension: float, n_target_words: float) -> float:
        """fast_align's `mod_feat`: ComputeDLogZ summed over every target position of every sentence."""
        size = self.target_size
        return float(np.sum(self.sentences_of_size[size] * _compute_dlogz(
            self.target_j + 1, self.sizes[size, 0], self.sizes[size, 1], tension))) / n_target_words

    def rows(self, block: "Block") -> np.ndarray:
        t = block.row_target
        size = self.sentence_size[block.sentence[t]]
        index = self.starts[size] + block.j[t] * block.n[t] + np.maximum(block.i - 1, 0)
        return np.where(block.i == 0, P0, self.values[index])


def _prior(block: Block, table: PriorTable | None) -> np.ndarray:
    """p(a_j = i) of each row, NULL included: fast_align's diagonal prior (-d), else uniform."""
    if table is None:
        return 1.0 / (block.n[block.row_target] + 1.0)
    return table.rows(block)


def viterbi_links(corpus: Corpus, iterations: int = 5, favor_diagonal: bool = True, optimize_tension: bool = True,
                  variational_bayes: bool = True, workdir: Path | None = None) -> np.ndarray:
    """fast_align's output: the Viterbi links of its last iteration, (n, 3) int32 rows (sentence,
    source position, target position) in sentence order. Options as fast_align's -I, -d, -o, -v.

    Memory: the table (24 bytes an entry) and one block's work arrays; every co-occurrence's table
    position (4 bytes) is kept in a temporary file under `workdir` (default: the system's)."""
    if iterations < 1:
        raise ValueError(f"fast_align iterations must be >= 1, got {iterations}")
    src_len, tgt_len = np.diff(corpus.src_offsets), np.diff(corpus.tgt_offsets)
    if ((src_len == 0) | (tgt_len == 0)).any():  # fast_align cannot align them either (its "Error in line")
        raise ValueError(f"fast_align: sentence pair {int(np.flatnonzero((src_len == 0) | (tgt_len == 0))[0])}"
                         " has an empty side")
    if not len(corpus):
        return np.empty((0, 3), np.int32)
    table = _table_keys(corpus)
    probabilities: np.ndarray | None = None  # None: fast_align's 1e-9 before the first normalisation
    counts = np.zeros(len(table), np.float64)
    tension = INITIAL_TENSION
    n_target_words = float(tgt_len.sum())
    position_type = np.int32 if len(table) < np.iinfo(np.int32).max else np.int64
    links: list[np.ndarray] = []
    with tempfile.TemporaryDirectory(prefix="fastalign-numpy-", dir=workdir) as tmp:
        positions_path = Path(tmp) / "positions.bin"
        block_rows: list[int] = []
        with open(positions_path, "wb") as handle:  # each co-occurrence's table entry, looked up once
            for block in _blocks(corpus):
                _positions(table, block.keys).astype(position_type).tofile(handle)
                block_rows.append(len(block.keys))
        prior = PriorTable.build(corpus) if favor_diagonal else None
        for iteration in range(iterations):
            final = iteration == iterations - 1
            expected_feature = 0.0
            if prior is not None:
                prior.fill(tension)
            with open(positions_path, "rb") as handle:
                for block, rows in zip(_blocks(corpus, with_keys=False), block_rows):
                    position = np.fromfile(handle, position_type, rows)
                    translation = probabilities[position] if probabilities is not None else UNINITIALISED_PROB
                    probs = translation * _prior(block, prior)
                    if final:
                        links.append(_best_links(block, probs))
                        continue
                    totals = np.add.reduceat(probs, block.group_starts)
                    posterior = probs / totals[block.row_target]
                    np.add.at(counts, position, posterior)
                    t = block.row_target
                    aligned = block.i > 0
                    feature = _feature(block.j[t][aligned].astype(np.float64), block.i[aligned], block.m[t][aligned],
                                       block.n[t][aligned])
                    expected_feature += float(np.sum(feature * posterior[aligned]))
            if final:
                break
            expected_feature /= n_target_words
            if prior is not None and optimize_tension and iteration > 0:
                for _ in range(TENSION_STEPS):
                    model = prior.model_feature(tension, n_target_words)
                    tension = min(max(tension + (expected_feature - model) * TENSION_RATE, TENSION_MIN), TENSION_MAX)
            probabilities = _normalize(table, counts, corpus.tgt_vocab, ALPHA if variational_bayes else None,
                                       out=probabilities)
            counts[:] = 0.0
    return np.concatenate(links) if links else np.empty((0, 3), np.int32)


NORMALIZE_CHUNK = 1 << 21  # table entries normalised at a time (digamma's temporaries stay small)


def _normalize(table: np.ndarray, counts: np.ndarray, tgt_vocab: int, alpha: float | None,
               out: np.ndarray | None = None) -> np.ndarray:
    """t(f|e) from the expected counts, per source word e (ttables.h): NormalizeVB with `alpha`,
    else Normalize (c / total; a total of 0 counts as 1). Written into `out` when given."""
    out = np.empty(len(table), np.float64) if out is None else out
    if not len(table):
        return out
    source = table // tgt_vocab
    starts = np.flatnonzero(np.concatenate([[True], source[1:] != source[:-1]]))
    del source
    totals = np.add.reduceat(counts if alpha is None else counts + alpha, starts)
    if alpha is None:
        totals[totals == 0] = 1.0
    else:
        totals = _digamma(totals)
    for begin in range(0, len(table), NORMALIZE_CHUNK):
        end = min(begin + NORMALIZE_CHUNK, len(table))
        group = np.searchsorted(starts, np.arange(begin, end), "right") - 1
        if alpha is None:
            out[begin:end] = counts[begin:end] / totals[group]
        else:
            out[begin:end] = np.exp(_digamma(counts[begin:end] + alpha) - totals[group])
    return out


def _best_links(block: Block, probs: np.ndarray) -> np.ndarray:
    """Each target word's first most probable row (NULL first): a link unless it is NULL."""
    best = np.maximum.reduceat(probs, block.group_starts)
    rows = np.arange(len(probs))
    candidate = np.where(probs == best[block.row_target], rows, len(probs))
    first = np.minimum.reduceat(candidate, block.group_starts)
    source = block.i[first]
    keep = source > 0
    return np.stack([block.sentence[keep], source[keep] - 1, block.j[keep]], axis=1).astype(np.int32)


# --- symmetrisation (atools -c grow-diag-final-and) -------------------------------------------------

NEIGHBOURS = ((1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, 1), (1, -1), (-1, -1))  # atools' DiagCommand


def _grow_diag_final_and(forward: set[tuple[int, int]], reverse: set[tuple[int, int]]) -> set[tuple[int, int]]:
    """atools' GDFACommand on one sentence pair's two link sets ((source, target) each)."""
    result = forward & reverse
    source_aligned = {i for i, _ in result}
    target_aligned = {j for _, j in result}
    pending = sorted((forward | reverse) - result)  # atools' std::set order
    while pending:  # grow-diag: passes in order until one adds nothing
        added = []
        for i, j in pending:
            if (i in source_aligned and j in target_aligned) or not any(
                    (i + di, j + dj) in result for di, dj in NEIGHBOURS):
                continue
            result.add((i, j))
            source_aligned.add(i)
            target_aligned.add(j)
            added.append((i, j))
        if not added:
            break
        pending = [point for point in pending if point not in result]
    for links in (forward, reverse):  # final-and: each direction's links in (i, j) order
        for i, j in sorted(links - result):
            if i not in source_aligned and j not in target_aligned:
                result.add((i, j))
                source_aligned.add(i)
                target_aligned.add(j)
    return result


def symmetrize(forward: np.ndarray, reverse: np.ndarray, n_sentences: int) -> np.ndarray:
    """grow-diag-final-and of two directional link arrays ((n, 3) sentence, source, target, grouped
    by sentence in sentence order): (n, 3) int32 links, sorted by sentence, source, target."""
    forward_bounds = np.searchsorted(forward[:, 0], np.arange(n_sentences + 1))
    reverse_bounds = np.searchsorted(reverse[:, 0], np.arange(n_sentences + 1))
    out = np.empty((len(forward) + len(reverse), 3), np.int32)  # the union bounds the result
    size = 0
    for sentence in range(n_sentences):
        a = forward[forward_bounds[sentence] : forward_bounds[sentence + 1], 1:]
        b = reverse[reverse_bounds[sentence] : reverse_bounds[sentence + 1], 1:]
        if not len(a) and not len(b):
            continue
        points = sorted(_grow_diag_final_and(set(map(tuple, a.tolist())), set(map(tuple, b.tolist()))))
        out[size : size + len(points), 0] = sentence
        out[size : size + len(points), 1:] = points
        size += len(points)
    return out[:size].copy()


def fastalign_gdfa(corpus: Corpus, iterations: int = 5, favor_diagonal: bool = True, optimize_tension: bool = True,
                   variational_bayes: bool = True, workdir: Path | None = None) -> np.ndarray:
    """`fast_align` (options as -I, -d, -o, -v), the same with `-r`, then `atools -c
    grow-diag-final-and`: (n, 3) int32 links (sentence, source, target), sorted."""
    options = dict(iterations=iterations, favor_diagonal=favor_diagonal, optimize_tension=optimize_tension,
                   variational_bayes=variational_bayes, workdir=workdir)
    with tempfile.TemporaryDirectory(prefix="fastalign-numpy-links-", dir=workdir) as tmp:
        # the forward links wait on disk while the reverse direction builds its table
        forward_path = Path(tmp) / "forward.npy"
        np.save(forward_path, viterbi_links(corpus, **options))
        reverse = viterbi_links(corpus.swapped(), **options)
        reverse[:, [1, 2]] = reverse[:, [2, 1]]  # (sentence, target, source) -> (sentence, source, target), in place
        return symmetrize(np.load(forward_path), reverse, len(corpus))
