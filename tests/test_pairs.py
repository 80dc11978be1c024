"""Word pairs (trainables/pairs.py): dictionary rule by hand, FastAlign and AWESOME on real NTREX."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trainables import pairs as pairs_module
from trainables.data import Subset, load_dictionary, load_parallel
from trainables.pairs import (
    DEFAULT_AWESOME_MODEL,
    PAIR_COLUMNS,
    PAIR_SOURCES,
    AlignedCorpus,
    PairContext,
    awesome_source,
    extract_pairs,
    fastalign_source,
    get_pair_source,
    links_to_pairs,
    pairs_from_dictionary,
)
from trainables.segmentation import segment_corpus
from trainables.settings import Settings

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
E5_SMALL = Path("~/.cache/offline-models/multilingual-e5-small").expanduser()


def frame(rows: list[tuple]) -> pd.DataFrame:
    table = pd.DataFrame(rows, columns=list(PAIR_COLUMNS))
    return table.astype({"sentence": np.int64, "src_index": np.int64, "tgt_index": np.int64, "src_word": str, "tgt_word": str})


def invert(dictionary: dict[str, set[str]]) -> dict[str, frozenset[str]]:
    inverted: dict[str, set[str]] = {}
    for word, translations in dictionary.items():
        for t in translations:
            inverted.setdefault(t, set()).add(word)
    return {w: frozenset(ts) for w, ts in inverted.items()}


def assert_valid_pairs(table: pd.DataFrame, en_words, x_words) -> None:
    """The contract of every pair source: columns, ranges, words, one-to-one, no identical
    spellings (exact, as the reference's `left_tokens[a] == right_tokens[b]`)."""
    assert list(table.columns) == list(PAIR_COLUMNS)
    assert all(table[c].dtype == np.int64 for c in PAIR_COLUMNS[:3])
    for s, i, j, src, tgt in table.itertuples(index=False):
        assert 0 <= i < len(en_words[s]) and 0 <= j < len(x_words[s])
        assert en_words[s][i] == src and x_words[s][j] == tgt
        assert src != tgt
    assert not table.duplicated(["sentence", "src_index"]).any()
    assert not table.duplicated(["sentence", "tgt_index"]).any()


def dictionary_precision(table: pd.DataFrame, en_to_x: dict[str, frozenset[str]]) -> tuple[int, float]:
    """How many pairs have an English word in MUSE, and the share of those MUSE confirms."""
    known = [(s.lower(), t.lower()) for s, t in zip(table["src_word"], table["tgt_word"]) if s.lower() in en_to_x]
    return len(known), sum(t in en_to_x[s] for s, t in known) / max(1, len(known))


# --- dico ----------------------------------------------------------------------------------------------

EN_TO_X = {
    "the": {"la", "el"},
    "big": {"grande", "gran"},
    "house": {"casa"},
    "red": {"rojo"},
    "dog": {"perro"},
    "hotel": {"hotel"},
    "car": {"coche"},
    "automobile": {"coche"},
}


def test_lowercase_dictionary_rule_discards_every_ambiguity():
    # dico_lowercase=True: lowercased lookup, identical pairs dropped after matching.
    en_words = [
        ["The", "big", "house"],  # big: two of its translations present -> dropped
        ["the", "red", "dog"],  # red: its translation occurs twice -> dropped
        ["dog", "and", "dog"],  # dog repeated in the source -> dropped
        ["the", "hotel"],  # hotel = hotel: identical spelling -> dropped
        ["car", "automobile"],  # both translate to the one coche -> both dropped
    ]
    x_words = [
        ["La", "gran", "casa", "grande"],
        ["el", "perro", "rojo", "rojo"],
        ["perro", "y", "gato"],
        ["el", "hotel"],
        ["coche"],
    ]
    en_to_x = {w: frozenset(ts) for w, ts in EN_TO_X.items()}
    result = pairs_from_dictionary(en_words, x_words, en_to_x, invert(EN_TO_X), lowercase=True)
    expected = frame(
        [
            (0, 0, 0, "The", "La"),  # looked up lowercased, written as in the text
            (0, 2, 2, "house", "casa"),
            (1, 0, 0, "the", "el"),
            (1, 2, 1, "dog", "perro"),
            (3, 0, 0, "the", "el"),
        ]
    )
    pd.testing.assert_frame_equal(result, expected)


def test_reference_dictionary_rule_is_case_sensitive():
    # The default (the reference's get_dicos + find_aligned_words): tokens looked up as written.
    # MUSE is lowercase, so the capitalised "The" finds no translation, nor does "La" match "la".
    en_to_x = {"the": frozenset({"la", "el"}), "house": frozenset({"casa"})}
    en_words, x_words = [["The", "house"], ["the", "house"]], [["La", "casa"], ["la", "casa"]]
    default = pairs_from_dictionary(en_words, x_words, en_to_x, invert(en_to_x))
    pd.testing.assert_frame_equal(default, frame([(0, 1, 1, "house", "casa"), (1, 0, 0, "the", "la"),
                                                  (1, 1, 1, "house", "casa")]))
    lowercase = pairs_from_dictionary(en_words, x_words, en_to_x, invert(en_to_x), lowercase=True)
    assert (0, 0, 0, "The", "La") in set(lowercase.itertuples(index=False, name=None))
    assert len(lowercase) == 4


def test_identical_entries_are_dropped_before_matching():
    # MUSE has both taxi -> taxi and taxi -> coche. The reference drops the identical entry from
    # both maps first, so "taxi" has one translation left and pairs with "coche"; the lowercase
    # rule keeps the entry, finds two translations in the sentence and drops the word.
    en_to_x = {"taxi": frozenset({"taxi", "coche"}), "the": frozenset({"el"})}
    x_to_en = invert({"taxi": {"taxi", "coche"}, "the": {"el"}})
    en_words, x_words = [["the", "taxi"]], [["el", "taxi", "coche"]]
    default = pairs_from_dictionary(en_words, x_words, en_to_x, x_to_en)
    pd.testing.assert_frame_equal(default, frame([(0, 0, 0, "the", "el"), (0, 1, 2, "taxi", "coche")]))
    lowercase = pairs_from_dictionary(en_words, x_words, en_to_x, x_to_en, lowercase=True)
    pd.testing.assert_frame_equal(lowercase, frame([(0, 0, 0, "the", "el")]))
    # Dropped from the backward map too: Spanish "taxi" no longer back-translates to English
    # "taxi", so in "cab taxi" / "taxi" only "cab" competes for it and pairs with it.
    both = {"cab": {"taxi"}, "taxi": {"taxi"}}
    en_to_x, x_to_en = {w: frozenset(ts) for w, ts in both.items()}, invert(both)
    pd.testing.assert_frame_equal(pairs_from_dictionary([["cab", "taxi"]], [["taxi"]], en_to_x, x_to_en),
                                  frame([(0, 0, 0, "cab", "taxi")]))
    assert pairs_from_dictionary([["cab", "taxi"]], [["taxi"]], en_to_x, x_to_en, lowercase=True).empty


def test_dictionary_back_translation_uses_the_x_en_direction():
    # en-X knows only cat -> gato; X-en also says gato -> kitty. With kitty in the sentence, the
    # target word gato has two possible sources: ambiguous, so no pair (the code's en-X-only
    # dictionaries would have kept cat-gato).
    en_to_x = {"cat": frozenset({"gato"})}
    x_to_en = {"gato": frozenset({"cat", "kitty"})}
    assert pairs_from_dictionary([["cat", "kitty"]], [["gato"]], en_to_x, x_to_en).empty
    assert len(pairs_from_dictionary([["cat", "sat"]], [["gato"]], en_to_x, x_to_en)) == 1


def test_one_to_one_is_decided_before_dropping_identical_spellings():
    en_words = [["a", "b", "c", "d", "Taxi"]]
    x_words = [["w", "x", "y", "z", "taxi", "coche"]]
    links = np.array([(0, 0), (0, 1), (1, 2), (2, 2), (3, 3), (4, 4), (4, 5)])
    table = links_to_pairs(np.zeros(len(links), np.int64), links[:, 0], links[:, 1], en_words, x_words)
    # a has two links, y has two links, Taxi links to taxi (identical) and coche: only d-z stays.
    pd.testing.assert_frame_equal(table, frame([(0, 3, 3, "d", "z")]))


def test_identical_spellings_are_exact_unless_case_is_ignored():
    # The reference (get_pharaoh_dataset) drops `left_tokens[a] == right_tokens[b]`: exact.
    en_words, x_words = [["Taxi", "taxi", "red"]], [["taxi", "taxi", "rojo"]]
    links = np.array([(0, 0), (1, 1), (2, 2)])
    exact = links_to_pairs(np.zeros(3, np.int64), links[:, 0], links[:, 1], en_words, x_words)
    pd.testing.assert_frame_equal(exact, frame([(0, 0, 0, "Taxi", "taxi"), (0, 2, 2, "red", "rojo")]))
    folded = links_to_pairs(np.zeros(3, np.int64), links[:, 0], links[:, 1], en_words, x_words, ignore_case=True)
    pd.testing.assert_frame_equal(folded, frame([(0, 2, 2, "red", "rojo")]))


def test_settings_reach_the_pair_context_and_its_cache_key(tmp_path):
    assert Settings().awesome_model == DEFAULT_AWESOME_MODEL == PairContext().awesome_model
    settings = Settings(data_dir=str(tmp_path), dico_lowercase=True)
    context = PairContext.from_settings(settings)
    assert context.dico_lowercase and not PairContext.from_settings(Settings()).dico_lowercase
    assert context.cache_parts("dico", "es") != PairContext(data_dir=str(tmp_path)).cache_parts("dico", "es")


# --- fastalign / awesome on real text ------------------------------------------------------------


@pytest.fixture(scope="module")
def ntrex_es():
    lines = load_parallel("ntrex", "es", data_dir=SHARED_DATA, subset=Subset(200))
    return segment_corpus([en for en, _ in lines], "en"), segment_corpus([x for _, x in lines], "es")


@pytest.fixture(scope="module")
def muse_en_es():
    return load_dictionary("en", "es", data_dir=SHARED_DATA)


def test_fastalign_on_real_lines_gives_one_to_one_pairs(ntrex_es, muse_en_es):
    en_words, x_words = ntrex_es
    table = fastalign_source(en_words, x_words, "es", PairContext())
    assert_valid_pairs(table, en_words, x_words)
    assert table["sentence"].nunique() > 150 and len(table) > 1000
    known, precision = dictionary_precision(table, muse_en_es)
    assert known > 500 and precision > 0.35  # 200 lines of EM training: rough but far above chance
    pd.testing.assert_frame_equal(table, fastalign_source(en_words, x_words, "es", PairContext()))


def test_fastalign_survives_separator_tokens_and_empty_lines():
    en_words = [["a", "|||", "cat"], [], ["a", "dog"]] * 3
    x_words = [["un", "|||", "gato"], ["x"], ["un", "perro"]] * 3
    table = fastalign_source(en_words, x_words, "es", PairContext())
    assert_valid_pairs(table, en_words, x_words)
    assert 1 not in set(table["sentence"])


# --- fastalign without systran-align: clab/fast_align's programs on PATH -------------------------

# A fake `fast_align` logs its arguments, OMP_NUM_THREADS and the corpus it was given, and prints
# one (ignored) line per sentence pair; a fake `atools` checks that it got both directional files
# and prints the symmetrised alignment of FAKE_PHARAOH, which the test knows.
FAKE_FAST_ALIGN = """\
import json, os, sys
args = sys.argv[1:]
corpus = open(args[args.index("-i") + 1], encoding="utf-8").read().splitlines()
with open(os.environ["FAKE_LOG"], "a", encoding="utf-8") as log:
    log.write(json.dumps(dict(program="fast_align", args=args, threads=os.environ.get("OMP_NUM_THREADS"),
                              corpus=corpus)) + "\\n")
print("\\n".join("0-0" for _ in corpus))
"""
FAKE_ATOOLS = """\
import json, os, sys
args = sys.argv[1:]
lines = [len(open(args[args.index(flag) + 1]).read().splitlines()) for flag in ("-i", "-j")]
with open(os.environ["FAKE_LOG"], "a", encoding="utf-8") as log:
    log.write(json.dumps(dict(program="atools", args=args, lines=lines)) + "\\n")
sys.stdout.write(open(os.environ["FAKE_PHARAOH"], encoding="utf-8").read())
"""


def install_fake_programs(tmp_path: Path, monkeypatch, pharaoh: str, programs=("fast_align", "atools")) -> Path:
    """Fake programs alone on PATH, systran_align made unimportable; returns the log file."""
    import sys

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in programs:
        script = bin_dir / name
        script.write_text(f"#!{sys.executable}\n" + (FAKE_FAST_ALIGN if name == "fast_align" else FAKE_ATOOLS))
        script.chmod(0o755)
    (tmp_path / "pharaoh.txt").write_text(pharaoh, encoding="utf-8")
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "log.jsonl"))
    monkeypatch.setenv("FAKE_PHARAOH", str(tmp_path / "pharaoh.txt"))
    monkeypatch.setitem(sys.modules, "systran_align", None)  # `import systran_align` now fails
    return tmp_path / "log.jsonl"


def test_fastalign_backend_prefers_systran_align_then_the_programs(tmp_path, monkeypatch):
    # A stand-in systran_align module makes the library "installed" whatever this machine has.
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "systran_align.py").write_text("", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path / "lib"))
    monkeypatch.setenv("PATH", str(tmp_path))
    assert pairs_module.fastalign_backend() == "systran-align"
    library_key = PairContext(fastalign_backend="auto").cache_parts("fastalign", "es")

    install_fake_programs(tmp_path, monkeypatch, "")
    assert pairs_module.fastalign_backend() == "fast_align"
    programs_key = PairContext(fastalign_backend="auto").cache_parts("fastalign", "es")
    assert library_key != programs_key and {library_key["backend"], programs_key["backend"]} == {
        "systran-align", "fast_align"}


@pytest.mark.parametrize("programs", [(), ("fast_align",), ("atools",)])
def test_fastalign_without_either_way_fails_in_one_line_naming_both(tmp_path, monkeypatch, programs):
    install_fake_programs(tmp_path, monkeypatch, "", programs=programs)
    for attempt in (pairs_module.fastalign_backend,
                    lambda: fastalign_source([["a"]], [["b"]], "es", PairContext(fastalign_backend="auto")),
                    lambda: PairContext(fastalign_backend="auto").cache_parts("fastalign", "es")):
        with pytest.raises(ValueError) as failure:
            attempt()
        message = str(failure.value)
        assert "\n" not in message and "'fastalign'" in message
        assert "pip install systran-align" in message and "fast_align and atools programs" in message
    # the other pair sources do not need fast_align
    assert set(PairContext(data_dir=str(tmp_path)).cache_parts("dico", "es")) == {"lowercase", "reverse_file", "dictionary", "muse"}
    assert len(pairs_from_dictionary([["red"]], [["rojo"]], {"red": frozenset({"rojo"})},
                                     {"rojo": frozenset({"red"})})) == 1


def test_fastalign_programs_run_as_the_reference_script_and_their_links_become_pairs(tmp_path, monkeypatch):
    en_words = [["the", "cat", "sleeps"], [], ["a", "dog", "|||", "Paris"], ["hello"]]
    x_words = [["el", "gato", "duerme"], ["x"], ["un", "perro", "ladra", "Paris"], ["hola"]]
    # Sentence 1 has an empty side: the programs see sentences 0, 2 and 3 as lines 1-3. Line 2:
    # "dog" links to two words (dropped with both links), Paris-Paris is identical (dropped).
    # Line 3 has no links.
    log = install_fake_programs(tmp_path, monkeypatch, "0-0 1-1 2-2\n0-0 1-1 1-2 3-3\n\n")
    context = PairContext(fastalign_iterations=7, fastalign_optimize_tension=False, fastalign_backend="auto")
    table = fastalign_source(en_words, x_words, "es", context)
    pd.testing.assert_frame_equal(table, frame([
        (0, 0, 0, "the", "el"), (0, 1, 1, "cat", "gato"), (0, 2, 2, "sleeps", "duerme"), (2, 0, 0, "a", "un")]))

    import json

    calls = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    assert [c["program"] for c in calls] == ["fast_align", "fast_align", "atools"]
    forward, reverse, symmetrise = calls
    corpus = forward["args"][1]
    assert forward["args"] == ["-i", corpus, "-I", "7", "-d", "-v"]  # -o off in this context
    assert reverse["args"] == ["-i", corpus, "-I", "7", "-d", "-v", "-r"]
    assert forward["threads"] == reverse["threads"] == "1"  # single-threaded EM: deterministic
    assert forward["corpus"] == ["the cat sleeps ||| el gato duerme", "a dog <bars> Paris ||| un perro ladra Paris",
                                 "hello ||| hola"]
    assert symmetrise["args"][-2:] == ["-c", "grow-diag-final-and"] and symmetrise["lines"] == [3, 3]


@pytest.mark.parametrize("pharaoh, error", [
    ("0-0\n0-0\n", "2 alignment lines for 3 sentence pairs"),
    ("0-0\n0-x\n1-1\n", "line 2 is not Pharaoh format"),
    ("0-0\n0-0\n0-1\n", "a link points past the end of its sentence"),
])
def test_fastalign_programs_bad_output_is_reported(tmp_path, monkeypatch, pharaoh, error):
    install_fake_programs(tmp_path, monkeypatch, pharaoh)
    with pytest.raises(RuntimeError, match=error):
        fastalign_source([["a"], ["b"], ["c"]], [["x"], ["y"], ["z"]], "es", PairContext(fastalign_backend="auto"))


def test_parse_pharaoh_by_hand():
    links = pairs_module.parse_pharaoh("0-0 1-2\n\n3-1\n", 3, "test")
    assert links.dtype == np.int64 and links.tolist() == [[0, 0, 0], [0, 1, 2], [2, 3, 1]]
    assert pairs_module.parse_pharaoh("\n\n", 2, "test").shape == (0, 3)


def test_awesome_with_e5_small_on_real_lines(ntrex_es, muse_en_es):
    en_words, x_words = (side[:8] for side in ntrex_es)
    context = PairContext(awesome_model=str(E5_SMALL), awesome_batch_size=4)
    table = awesome_source(en_words, x_words, "es", context)
    assert_valid_pairs(table, en_words, x_words)
    assert len(table) > 40
    known, precision = dictionary_precision(table, muse_en_es)
    assert known > 30 and precision > 0.5  # 0.60 with this encoder; chance is far below
    assert ("Parliament", "Parlamento") in set(zip(table["src_word"], table["tgt_word"]))
    # Batching (padding) does not change the links: sentences alone give the same pairs.
    alone = PairContext(awesome_model=str(E5_SMALL), awesome_batch_size=1)
    single = awesome_source(en_words[:3], x_words[:3], "es", alone)
    pd.testing.assert_frame_equal(table[table["sentence"] < 3].reset_index(drop=True), single)
    with pytest.raises(ValueError, match="awesome_layer=13"):
        awesome_source(en_words, x_words, "es", PairContext(awesome_model=str(E5_SMALL), awesome_layer=13))


# --- extraction with cache -------------------------------------------------------------------------


def test_extract_pairs_caches_segmentation_and_pairs(tmp_path, monkeypatch):
    corpus = extract_pairs("ntrex", "zh", "dico", data_dir=SHARED_DATA, cache_dir=tmp_path, subset=Subset(60))
    assert isinstance(corpus, AlignedCorpus) and corpus.lang == "zh"
    assert len(corpus.en_words) == len(corpus.x_words) == 60
    assert_valid_pairs(corpus.pairs, corpus.en_words, corpus.x_words)
    assert len(corpus.pairs) > 60
    cache_files = sorted(p.name for p in (tmp_path / "pairs").glob("*.parquet"))
    assert len(cache_files) == 2 and any("-dico-" in name for name in cache_files)

    def must_not_run(*args, **kwargs):
        raise AssertionError("pairs were recomputed instead of read from the cache")

    monkeypatch.setitem(PAIR_SOURCES, "dico", must_not_run)
    monkeypatch.setattr(pairs_module, "segment_corpus", must_not_run)
    again = extract_pairs("ntrex", "zh", "dico", data_dir=SHARED_DATA, cache_dir=tmp_path, subset=Subset(60))
    pd.testing.assert_frame_equal(again.pairs, corpus.pairs)
    assert again.en_words == corpus.en_words and again.x_words == corpus.x_words


def write_tiny_corpus(data: Path, muse_en_es: str) -> None:
    (data / "parallel" / "tiny").mkdir(parents=True, exist_ok=True)
    (data / "muse").mkdir(exist_ok=True)
    (data / "parallel" / "tiny" / "en-es.en").write_text("the red car\nThe taxi\n", encoding="utf-8")
    (data / "parallel" / "tiny" / "en-es.es").write_text("el coche rojo\nEl taxi\n", encoding="utf-8")
    (data / "muse" / "en-es.txt").write_text(muse_en_es, encoding="utf-8")
    (data / "muse" / "es-en.txt").write_text("coche car\n", encoding="utf-8")


def test_dico_pairs_follow_the_dictionary_files_content_and_rule(tmp_path):
    data, cache = tmp_path / "data", tmp_path / "cache"
    write_tiny_corpus(data, "red rojo\n")

    def words(**context):
        context = {"muse_reverse_file": "x-en", **context}  # es-en.txt is read as itself
        corpus = extract_pairs("tiny", "es", "dico", data_dir=data, cache_dir=cache, context=PairContext(**context))
        return sorted(zip(corpus.pairs["src_word"], corpus.pairs["tgt_word"]))

    assert words() == [("car", "coche"), ("red", "rojo")]
    # Same path, new content: a cached value must not be served.
    (data / "muse" / "en-es.txt").write_text("red rojo\nthe el\n", encoding="utf-8")
    assert words() == [("car", "coche"), ("red", "rojo"), ("the", "el")]
    # The rule is part of the key: lowercase lookup also pairs "The" with "El".
    assert words(dico_lowercase=True) == [("The", "El"), ("car", "coche"), ("red", "rojo"), ("the", "el")]
    assert len(list((cache / "pairs").glob("*-dico-*.parquet"))) == 3


def test_unknown_pair_source_suggests():
    with pytest.raises(ValueError, match="did you mean 'fastalign'"):
        get_pair_source("fast_align")


# --- corpora at the paper's size: reservoir sample, chunked extraction ---------------------------


def write_numbered_corpus(data: Path, name: str, n: int) -> None:
    folder = data / "parallel" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "en-es.en").write_text("".join(f"line {i}\n" for i in range(n)), encoding="utf-8")
    (folder / "en-es.es").write_text("".join(f"linea {i}\n" for i in range(n)), encoding="utf-8")


def test_reservoir_sample_is_seeded_bounded_and_uniform(tmp_path):
    write_numbered_corpus(tmp_path, "big", 1000)

    def sample(n, seed):
        return load_parallel("big", "es", tmp_path, tmp_path / "cache", sample=n, seed=seed)

    first = sample(100, 7)
    assert len(first) == 100 and first == sample(100, 7) and first != sample(100, 8)
    assert all(en == f"line {x.split()[1]}" for en, x in first)  # pairs stay together
    assert len({en for en, _ in first}) == 100
    # A corpus no larger than the sample comes whole, in its own order (OPUS-100 at 1M).
    assert sample(1000, 3) == sample(None, 0) == [(f"line {i}", f"linea {i}") for i in range(1000)]
    # Uniform: over 300 seeds, each tenth of the corpus holds about a tenth of the sampled lines.
    counts = np.zeros(10)
    for seed in range(300):
        lines = [int(en.split()[1]) for en, _ in sample(50, seed)]
        counts += np.bincount(np.array(lines) // 100, minlength=10)
    expected = 300 * 50 / 10
    assert np.all(np.abs(counts - expected) < 0.1 * expected), counts
    assert ((counts - expected) ** 2 / expected).sum() < 27.9  # chi-square, 9 dof, p = 0.001


def test_reservoir_sample_holds_only_the_sample():
    from trainables.data import reservoir_sample

    def stream():
        for i in range(10_000):
            yield i
            assert held[0] <= 5  # the generator runs inside the sampler: never more than n held

    held = [0]
    taken = reservoir_sample(stream(), 5, 0)
    held[0] = len(taken)
    assert len(taken) == 5 and len(set(taken)) == 5 and max(taken) > 5


def test_local_corpus_errors_name_the_file_and_line(tmp_path):
    from trainables.data import DataSourceError

    write_numbered_corpus(tmp_path, "bad", 3)
    (tmp_path / "parallel" / "bad" / "en-es.es").write_bytes(b"uno\ndos \xff\n")
    with pytest.raises(DataSourceError, match=r"en-es\.es:2: not UTF-8"):
        load_parallel("bad", "es", tmp_path, tmp_path / "cache")
    (tmp_path / "parallel" / "bad" / "en-es.es").write_text("uno\ndos\n", encoding="utf-8")
    with pytest.raises(DataSourceError, match=r"en-es\.en has 3 lines but .*en-es\.es has 2"):
        load_parallel("bad", "es", tmp_path, tmp_path / "cache")


@pytest.mark.parametrize("source", ["dico", "fastalign"])
def test_chunked_extraction_gives_the_pairs_of_one_pass_on_ntrex(tmp_path, source):
    subset = Subset(400)
    calls = []
    whole = extract_pairs("ntrex", "fr", source, data_dir=SHARED_DATA, cache_dir=tmp_path / "a", subset=subset,
                          chunk_size=100_000)
    chunked = extract_pairs("ntrex", "fr", source, data_dir=SHARED_DATA, cache_dir=tmp_path / "b", subset=subset,
                            chunk_size=37, on_progress=lambda done, total: calls.append((done, total)))
    assert len(whole.pairs) > 300
    pd.testing.assert_frame_equal(chunked.pairs, whole.pairs)
    assert chunked.en_words == whole.en_words and chunked.x_words == whole.x_words
    # The same as the list-based source on the same words (the registry's function, in one pass).
    en_words, x_words = list(whole.en_words), list(whole.x_words)
    direct = PAIR_SOURCES[source](en_words, x_words, "fr", PairContext(data_dir=SHARED_DATA))
    pd.testing.assert_frame_equal(chunked.pairs, direct)
    assert_valid_pairs(chunked.pairs, en_words, x_words)
    phases = 3 if source == "fastalign" else 2  # segmentation, (fast_align's training,) pairs
    assert calls and calls[-1] == (phases * 400, phases * 400)
    assert all(a[0] <= b[0] for a, b in zip(calls, calls[1:]))


def test_word_lists_behave_like_lists():
    from trainables.pairs import WordLists

    words = [["a", "b"], [], ["c"]]
    lists = WordLists(words)
    assert len(lists) == 3 and lists[0] == ["a", "b"] and lists[-1] == ["c"] and lists[1:] == [[], ["c"]]
    assert list(lists) == words and lists == words and lists != [["a"]]
    with pytest.raises(IndexError, match="sentence 3 out of range"):
        lists[3]


# --- AWESOME on the head of the corpus that trials read ---------------------------------------------


def test_a_head_only_source_extracts_parts_until_the_head_holds_enough_paired_sentences(tmp_path, monkeypatch):
    assert PAIR_SOURCES["awesome"].head_only and not PAIR_SOURCES["dico"].head_only
    calls = []

    def counted(en_words, x_words, lang, context):
        calls.append(len(en_words))
        return pairs_module.dico_source(en_words, x_words, lang, context)

    whole = extract_pairs("ntrex", "es", "dico", data_dir=SHARED_DATA, cache_dir=tmp_path, subset=Subset(1000))
    monkeypatch.setitem(PAIR_SOURCES, "dico", pairs_module.PairSource(counted, head_only=True))
    paired_lines = np.unique(whole.pairs["sentence"])
    need = int((paired_lines < 250).sum()) + 1  # more paired sentences than the first 250 lines hold
    head = extract_pairs("ntrex", "es", "dico", data_dir=SHARED_DATA, cache_dir=tmp_path, subset=Subset(1000),
                         chunk_size=250, min_paired=need)
    # two parts of 250 lines: their pairs are the whole corpus's pairs of those lines, nothing beyond
    assert head.head_paired == int((paired_lines < 500).sum()) >= need
    pd.testing.assert_frame_equal(head.pairs, whole.pairs[whole.pairs["sentence"] < 500].reset_index(drop=True))
    assert head.en_words == whole.en_words  # the words of the whole corpus, for its later lines too
    assert sum(calls) == 500
    # a longer head reuses the parts already extracted and adds one
    longer = extract_pairs("ntrex", "es", "dico", data_dir=SHARED_DATA, cache_dir=tmp_path, subset=Subset(1000),
                           chunk_size=250, min_paired=head.head_paired + 1)
    assert sum(calls) == 750 and longer.head_paired == int((paired_lines < 750).sum())
    # content keys from the extraction's cache keys: what is measured on a corpus is keyed by them
    again = extract_pairs("ntrex", "es", "dico", data_dir=SHARED_DATA, cache_dir=tmp_path, subset=Subset(1000),
                          chunk_size=250, min_paired=need)
    assert again.fingerprint == head.fingerprint
    assert len({whole.fingerprint, head.fingerprint, longer.fingerprint}) == 3
    # a head as long as the corpus is the whole corpus
    everything = extract_pairs("ntrex", "es", "dico", data_dir=SHARED_DATA, cache_dir=tmp_path, subset=Subset(1000),
                               chunk_size=250, min_paired=10**6)
    assert everything.head_paired is None and sum(calls) == 1000
    pd.testing.assert_frame_equal(everything.pairs, whole.pairs)
    # without min_paired (the CLI, prefetch) a head-only source extracts the whole corpus at once
    extract_pairs("ntrex", "es", "dico", data_dir=SHARED_DATA, cache_dir=tmp_path, subset=Subset(1000))
    assert sum(calls) == 1000  # the whole-corpus file was already there, from the first call
