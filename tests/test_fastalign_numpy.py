"""trainables.fastalign_numpy against clab/fast_align itself.

The golden files in tests/fixtures/fast_align are the links of clab/fast_align (commit cab1e9a,
2020-01-08, `g++ -O3 -std=c++11 src/fast_align.cc src/ttables.cc`, no OpenMP so that its sums run
in order) on the first 500 NTREX en-es and en-zh lines of ../shared/data, segmented and written as
`trainables.pairs` writes fast_align's input: `fast_align -i c.txt -d -o -v` (forward), the same
with `-r` (reverse), then `atools -i forward -j reverse -c grow-diag-final-and`, gzipped. The input
itself is not kept (the data stays in ../shared/data); its sha256 is, so that a change of the
segmentation is reported as such rather than as a disagreement of the aligners.
"""
from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest

from trainables import pairs as pairs_module
from trainables.data import load_parallel
import trainables.fastalign_numpy as fastalign_numpy
from trainables.fastalign_numpy import Corpus, _grow_diag_final_and, fastalign_gdfa, read_corpus, viterbi_links
from trainables.segmentation import segment_corpus

GOLDEN = Path(__file__).parent / "fixtures" / "fast_align"
LINES = 500


def pharaoh(path: Path) -> set[tuple[int, int, int]]:
    text = gzip.decompress(path.read_bytes()).decode("ascii")
    return {(row, int(link.split("-")[0]), int(link.split("-")[1]))
            for row, line in enumerate(text.splitlines()) for link in line.split()}


def links(array: np.ndarray) -> set[tuple[int, int, int]]:
    return set(map(tuple, array.tolist()))


@pytest.fixture(scope="module", params=["es", "zh"])
def ntrex_corpus(request, shared_data, tmp_path_factory):
    lang = request.param
    lines = load_parallel("ntrex", lang, data_dir=shared_data)[:LINES]
    en, x = segment_corpus([a for a, _ in lines], "en"), segment_corpus([b for _, b in lines], lang)
    text = "".join(f"{' '.join(pairs_module._fastalign_tokens(a))} ||| {' '.join(pairs_module._fastalign_tokens(b))}\n"
                   for a, b in zip(en, x) if a and b)
    expected = (GOLDEN / f"ntrex-en-{lang}.corpus.sha256").read_text().strip()
    assert hashlib.sha256(text.encode("utf-8")).hexdigest() == expected, (
        "fast_align's input differs from the golden files' (segmentation changed?): regenerate them as the"
        " module docstring says")
    path = tmp_path_factory.mktemp("fast_align") / f"en-{lang}.txt"
    path.write_text(text, encoding="utf-8")
    return lang, read_corpus(path)


# Links may differ only where fast_align's last bits decide: two source positions exactly as far
# from the diagonal, whose priors its tension (a sum in a hash map's order) makes equal or not. On
# these files: en-es identical in all three, en-zh 1 forward link of 10,768 (and none after
# symmetrisation); on all 1,997 NTREX lines of ar, es, fr, ru and zh, identical (measured once).
MOST_DIFFERING = 0.001


def test_each_direction_and_the_symmetrised_links_are_fast_aligns_own(ntrex_corpus):
    lang, corpus = ntrex_corpus
    forward = viterbi_links(corpus)
    reverse = viterbi_links(corpus.swapped())[:, [0, 2, 1]]
    symmetrised = fastalign_gdfa(corpus)
    for name, ours in (("forward", forward), ("reverse", reverse), ("gdfa", symmetrised)):
        theirs = pharaoh(GOLDEN / f"ntrex-en-{lang}.{name}.gz")
        differing = len(links(ours) ^ theirs)
        assert differing <= MOST_DIFFERING * len(theirs), f"{name}: {differing} of {len(theirs)} links differ"
        assert len(theirs) > 10 * LINES  # real alignments, not a degenerate agreement
    if lang == "es":  # where nothing ties, identical
        assert links(forward) == pharaoh(GOLDEN / "ntrex-en-es.forward.gz")
        assert links(symmetrised) == pharaoh(GOLDEN / "ntrex-en-es.gdfa.gz")
    assert (np.diff(symmetrised[:, 0]) >= 0).all()


def test_small_blocks_chunks_and_reads_give_the_same_links(ntrex_corpus, monkeypatch, tmp_path):
    # at 1M lines the corpus is read, blocked, merged and normalised in many parts: the same parts
    # made small on 500 lines must not change a link
    lang, corpus = ntrex_corpus
    expected = fastalign_gdfa(corpus)
    monkeypatch.setattr(fastalign_numpy, "PAIRS_PER_BLOCK", 5_000)
    monkeypatch.setattr(fastalign_numpy, "NORMALIZE_CHUNK", 1_000)
    monkeypatch.setattr(fastalign_numpy, "READ_LINES", 37)
    assert len(list(fastalign_numpy._blocks(corpus))) > 50
    path = tmp_path / "corpus.txt"
    path.write_text("".join(f"{' '.join(map(str, corpus.src[a:b]))} ||| {' '.join(map(str, corpus.tgt[c:d]))}\n"
                            for a, b, c, d in zip(corpus.src_offsets[:-1], corpus.src_offsets[1:],
                                                  corpus.tgt_offsets[:-1], corpus.tgt_offsets[1:])))
    reread = read_corpus(path)  # the words as numbers: other ids, the same co-occurrences
    np.testing.assert_array_equal(fastalign_gdfa(reread), expected)


def test_an_empty_side_is_refused_and_an_empty_corpus_has_no_links():
    offsets = np.array([0, 2, 2], np.int64)
    with_empty = Corpus(np.array([0, 1], np.int32), offsets, np.array([0, 1, 2], np.int32),
                        np.array([0, 1, 3], np.int64), 2, 3)
    with pytest.raises(ValueError, match="sentence pair 1 has an empty side"):
        viterbi_links(with_empty)
    empty = Corpus(np.empty(0, np.int32), np.zeros(1, np.int64), np.empty(0, np.int32), np.zeros(1, np.int64), 0, 0)
    assert fastalign_gdfa(empty).shape == (0, 3)


def test_grow_diag_final_and_by_hand():
    # forward 0-0 1-2, reverse 0-0 1-1 2-2: the intersection is 0-0; grow-diag's pass over the rest
    # in order adds 1-1 (diagonal neighbour of 0-0, both words unaligned), then 1-2 (next to 1-1,
    # target 2 unaligned), then 2-2 (next to 1-2, source 2 unaligned).
    assert _grow_diag_final_and({(0, 0), (1, 2)}, {(0, 0), (1, 1), (2, 2)}) == {(0, 0), (1, 1), (1, 2), (2, 2)}
    # final-and: a link far from everything joins only if both its words are unaligned
    assert _grow_diag_final_and({(0, 0), (5, 5)}, {(0, 0), (5, 0)}) == {(0, 0), (5, 5)}
    assert _grow_diag_final_and(set(), set()) == set()


def test_the_numpy_backend_is_the_default_and_needs_no_program(shared_data, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(pairs_module.importlib.util, "find_spec", lambda name, *args: None)
    context = pairs_module.PairContext()
    assert context.fastalign_backend == "numpy" and pairs_module.fastalign_backend(context.fastalign_backend) == "numpy"
    assert context.cache_parts("fastalign", "es")["backend"] == "numpy"
    lines = load_parallel("ntrex", "es", data_dir=shared_data)[:60]
    en, x = segment_corpus([a for a, _ in lines], "en"), segment_corpus([b for _, b in lines], "es")
    table = pairs_module.fastalign_source(en, x, "es", context)
    assert table["sentence"].nunique() > 40 and len(table) > 300
    with pytest.raises(ValueError, match=r"fastalign_backend='fast_align'.*the default\) needs neither"):
        pairs_module.fastalign_backend("fast_align")
    with pytest.raises(ValueError, match="did you mean 'numpy'"):
        pairs_module.fastalign_backend("nunpy")
