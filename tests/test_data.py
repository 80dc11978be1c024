"""Data sources (trainables/data.py) and the disk cache (trainables/cache.py).

Real files from ../shared/data where the formats matter (counts from its README); hand-made
files for parsing rules; no network: remote fetchers are replaced or forbidden.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import urllib.error
from pathlib import Path
from types import SimpleNamespace

import pytest

from trainables import data
from trainables.cache import atomic_save, cache_key, cached
from trainables.data import (
    MUSE_REVERSE_FILE_DEFAULT,
    DataSourceError,
    Subset,
    check_available,
    describe_missing,
    describe_unreadable,
    load_dictionary,
    load_parallel,
    load_source,
    load_task_split,
    read_conllu,
    read_muse,
    resolve_cache_dir,
    resolve_data_dir,
)
from trainables.pairs import PairContext
from trainables.settings import Settings
from trainables.tasks import NLI_LABELS, UD_LABELS, WIKIANN_TAGS, preprocess_ud

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
TARGETS = ["ar", "es", "fr", "ru", "zh"]


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to reach a remote fails the test loudly."""

    def forbidden(*args, **kwargs):
        raise AssertionError("a test tried to load data remotely")

    monkeypatch.setattr(data, "_download", forbidden)
    monkeypatch.setattr(data, "_hub_rows", forbidden)
    for name in (data.DATA_DIR_ENV, data.CACHE_DIR_ENV, data.OFFLINE_ENV, *data.HUB_OFFLINE_ENVS):
        monkeypatch.delenv(name, raising=False)


# --- real data: counts from ../shared/data/README.md ------------------------------------------------


@pytest.mark.parametrize(
    "task, split, lang, count",
    [
        ("udpos", "train", "en", 12_544),
        ("udpos", "test", "es", 427),
        ("udpos", "test", "ar", 680),
        ("udpos", "test", "zh", 500),
        ("wikiann", "test", "ru", 10_000),
        ("xnli", "train", "en", 8_999),  # the MultiNLI sample
        ("xnli", "test", "fr", 5_010),
    ],
)
def test_real_split_counts_and_labels(task, split, lang, count):
    examples = load_task_split(task, split, lang, data_dir=SHARED_DATA)
    assert len(examples) == count
    if task == "xnli":
        assert {e["label"] for e in examples} == set(NLI_LABELS)
        assert all(e["premise"] and e["hypothesis"] for e in examples)
    else:
        tags = set(UD_LABELS if task == "udpos" else WIKIANN_TAGS)
        labels = {label for e in examples for label in e["labels"]}
        assert labels <= tags and len(labels) > 5
        assert all(len(e["words"]) == len(e["labels"]) > 0 for e in examples)


def test_ud_multiword_tokens_scored_as_the_reference_or_skipped():
    # es_gsd test has range lines such as "6-7 del" before its words "de" "el". The reference's
    # hub loader gave every line as a word, ranges labelled "_"; "skip" keeps the syntactic words.
    examples = load_task_split("udpos", "test", "es", data_dir=SHARED_DATA)
    scored = preprocess_ud(examples, "es", Settings())
    skipped = preprocess_ud(examples, "es", Settings(ud_multiword_tokens="skip"))
    words = [w for e in scored for w in e["words"]]
    labels = [t for e in scored for t in e["labels"]]
    assert "del" in words and labels.count("_") == 267  # the file's range lines
    assert len(words) == 12_002 + 267
    assert "del" not in [w for e in skipped for w in e["words"]]
    assert sum(len(e["words"]) for e in skipped) == 12_002
    assert all(set(e) == {"words", "labels"} for e in scored + skipped)


def test_conllu_ranges_and_empty_nodes_in_file_order(tmp_path):
    lines = ["1-2\tdel\t_\t_\t_\t_\t_\t_\t_\t_", "1\tde\tde\tADP\t_\t_\t0\troot\t_\t_",
             "2\tel\tel\tDET\t_\t_\t1\tdet\t_\t_", "2.1\tva\tir\tVERB\t_\t_\t_\t_\t1:x\t_"]
    path = tmp_path / "x.conllu"
    path.write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    assert read_conllu(path) == [{"words": ["de", "el"], "labels": ["ADP", "DET"]}]
    assert read_conllu(path, UD_LABELS, multiword_tokens=True) == [
        {"words": ["del", "de", "el", "va"], "labels": ["_", "ADP", "DET", "VERB"],
         "syntactic": [False, True, True, False]}]
    [example] = read_conllu(path, UD_LABELS, multiword_tokens=True)
    assert preprocess_ud([example], "es", Settings(ud_multiword_tokens="skip")) == [
        {"words": ["de", "el"], "labels": ["ADP", "DET"]}]


def test_real_parallel_and_dictionary():
    pairs = load_parallel("ntrex", "es", data_dir=SHARED_DATA)
    assert len(pairs) == 1_997
    first_en = (SHARED_DATA / "parallel/ntrex/en-es.en").read_text(encoding="utf-8").split("\n")[0]
    assert pairs[0][0] == first_en  # English first
    en_to_es = load_dictionary("en", "es", data_dir=SHARED_DATA)
    assert {"perro", "perros"} <= en_to_es["dog"]


# --- hand-made files: parsing rules ---------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def test_conllu_ranges_and_empty_nodes_scored_or_skipped(tmp_path):
    write(
        tmp_path / "ud/es_gsd-ud-test.conllu",
        """
        # sent_id = s1
        1-2\tdel\t_\t_\t_\t_\t_\t_\t_\t_
        1\tde\tde\tADP\t_\t_\t3\tcase\t_\t_
        2\tel\tel\tDET\t_\t_\t3\tdet\t_\t_
        2.1\tfue\tser\tAUX\t_\t_\t_\t_\t3:cop\t_
        3\tcampo\tcampo\tNOUN\t_\t_\t0\troot\t_\t_

        """,
    )
    examples = load_task_split("udpos", "test", "es", data_dir=tmp_path)
    assert preprocess_ud(examples, "es", Settings(ud_multiword_tokens="skip")) == [
        {"words": ["de", "el", "campo"], "labels": ["ADP", "DET", "NOUN"]}]
    assert preprocess_ud(examples, "es", Settings()) == [
        {"words": ["del", "de", "el", "fue", "campo"], "labels": ["_", "ADP", "DET", "AUX", "NOUN"]}]


def test_wikiann_language_prefix_is_stripped(tmp_path):
    write(tmp_path / "wikiann/test-fr.tsv", "fr:Paris\tB-LOC\nfr:est\tO\n\nLyon\tB-LOC\n")
    examples = load_task_split("wikiann", "test", "fr", data_dir=tmp_path)
    assert examples == [
        {"words": ["Paris", "est"], "labels": ["B-LOC", "O"]},
        {"words": ["Lyon"], "labels": ["B-LOC"]},
    ]


def test_nli_header_skipped_and_bad_label_named(tmp_path):
    write(tmp_path / "xnli/test-es.tsv", "premise\thypothesis\tlabel\nA\tB\tneutral\n")
    assert load_task_split("xnli", "test", "es", data_dir=tmp_path) == [
        {"premise": "A", "hypothesis": "B", "label": "neutral"}
    ]
    write(tmp_path / "xnli/test-fr.tsv", "A\tB\tneutral\nC\tD\tmaybe\n")
    with pytest.raises(DataSourceError, match=r"test-fr\.tsv:2: label 'maybe'"):
        load_task_split("xnli", "test", "fr", data_dir=tmp_path)


def test_dictionary_merges_both_files_and_both_separators(tmp_path):
    write(tmp_path / "muse/en-xx.txt", "dog\tperro\ncat gato\n")
    write(tmp_path / "muse/xx-en.txt", "perro\thound\nminino\tcat\n")
    assert load_dictionary("en", "xx", data_dir=tmp_path, reverse_file="x-en") == {
        "dog": frozenset({"perro"}),
        "cat": frozenset({"gato", "minino"}),
        "hound": frozenset({"perro"}),
    }
    assert load_dictionary("xx", "en", data_dir=tmp_path, reverse_file="x-en") == {
        "perro": frozenset({"dog", "hound"}),
        "gato": frozenset({"cat"}),
        "minino": frozenset({"cat"}),
    }


def test_dictionary_with_the_reference_copy_of_en_x_as_x_en(tmp_path):
    # The reference's download script saved en-X under the X-en name, and get_dicos read it as
    # X-en: each en-X entry lands in both maps both ways round; the real X-en file is never read.
    write(tmp_path / "muse/en-xx.txt", "dog\tperro\ncat gato\n")
    write(tmp_path / "muse/xx-en.txt", "perro\thound\nminino\tcat\n")
    both_ways = {
        "dog": frozenset({"perro"}), "cat": frozenset({"gato"}),
        "perro": frozenset({"dog"}), "gato": frozenset({"cat"}),
    }
    assert load_dictionary("en", "xx", data_dir=tmp_path, reverse_file="en-x-copy") == both_ways
    assert load_dictionary("xx", "en", data_dir=tmp_path, reverse_file="en-x-copy") == both_ways
    (tmp_path / "muse/xx-en.txt").unlink()  # not needed in that mode
    assert load_dictionary("en", "xx", data_dir=tmp_path, reverse_file="en-x-copy") == both_ways
    # the default of direct calls is the trials' setting: the reference's pipeline
    assert load_dictionary("en", "xx", data_dir=tmp_path) == both_ways
    assert Settings().muse_reverse_file == PairContext().muse_reverse_file == MUSE_REVERSE_FILE_DEFAULT
    with pytest.raises(ValueError, match="muse_reverse_file='xx-en'"):
        load_dictionary("en", "xx", data_dir=tmp_path, reverse_file="xx-en")


def test_parallel_files_must_be_line_aligned(tmp_path):
    write(tmp_path / "parallel/mine/en-es.en", "one\ntwo\n")
    write(tmp_path / "parallel/mine/en-es.es", "uno\n")
    with pytest.raises(DataSourceError, match="2 lines.*has 1"):
        load_parallel("mine", "es", data_dir=tmp_path)


def test_local_corpus_comes_first_even_for_registered_names(tmp_path):
    write(tmp_path / "parallel/opus100/en-es.en", "hello\n")
    write(tmp_path / "parallel/opus100/en-es.es", "hola\n")
    assert load_parallel("opus100", "es", data_dir=tmp_path) == [("hello", "hola")]


# --- errors --------------------------------------------------------------------------------------------


def test_missing_file_offline_is_one_line_naming_the_path(tmp_path, monkeypatch):
    monkeypatch.setenv("SWEEP_OFFLINE", "1")
    with pytest.raises(FileNotFoundError) as caught:
        load_task_split("udpos", "test", "es", data_dir=tmp_path, cache_dir=tmp_path / "cache")
    message = str(caught.value)
    assert isinstance(caught.value, DataSourceError)
    assert "\n" not in message
    assert str(tmp_path / "ud/es_gsd-ud-test.conllu") in message
    assert "CoNLL-U" in message and "SWEEP_OFFLINE=1" in message


def test_hub_offline_flag_is_honoured(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataSourceError, match="HF_HUB_OFFLINE=1"):
        load_parallel("opus100", "es", data_dir=tmp_path, cache_dir=tmp_path / "cache")


def test_failed_download_names_file_and_url(tmp_path, monkeypatch):
    def unreachable(url, dest):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(data, "_download", unreachable)
    with pytest.raises(DataSourceError) as caught:
        load_dictionary("en", "es", data_dir=tmp_path, cache_dir=tmp_path / "cache")
    message = str(caught.value)
    assert str(tmp_path / "muse/en-es.txt") in message
    assert "https://dl.fbaipublicfiles.com/arrival/dictionaries/en-es.txt" in message
    assert "no route to host" in message and "\n" not in message
    assert not list((tmp_path / "cache").rglob("*.parquet"))  # nothing cached on failure


def test_hub_result_is_converted_and_cached(tmp_path, monkeypatch):
    calls = []

    def fake_hub(dataset_id, config, split, limit):
        calls.append((dataset_id, config, split))
        return [{"tokens": ["Ana", "vit"], "ner_tags": [1, 0]}]  # 1 = B-PER in the hub's order

    monkeypatch.setattr(data, "_hub_rows", fake_hub)
    first = load_task_split("wikiann", "dev", "es", data_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert first == [{"words": ["Ana", "vit"], "labels": ["B-PER", "O"]}]
    assert calls == [("unimelb-nlp/wikiann", "es", "validation")]
    monkeypatch.setenv("SWEEP_OFFLINE", "1")  # the cached copy needs no remote
    again = load_task_split("wikiann", "dev", "es", data_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert again == first and len(calls) == 1


class HubRows(list):
    """Hub rows whose `label` column declares its ClassLabel names, as a hub dataset does."""

    def __init__(self, rows, names):
        super().__init__(rows)
        self.features = {"label": SimpleNamespace(names=names)}


def test_hub_labels_are_the_declared_names_and_must_be_the_tasks(tmp_path, monkeypatch):
    row = {"premise": "A", "hypothesis": "B", "label": 0}
    monkeypatch.setattr(data, "_hub_rows", lambda *args: HubRows([row], ["neutral", "entailment", "contradiction"]))
    # the declared order wins over the task's
    assert load_task_split("xnli", "test", "es", data_dir=tmp_path, cache_dir=tmp_path / "a")[0]["label"] == "neutral"
    monkeypatch.setattr(data, "_hub_rows", lambda *args: HubRows([row], ["entailment", "neutral", "contradiction", "x"]))
    with pytest.raises(DataSourceError, match=r"hub facebook/xnli \(es\): label 'x' is not one of entailment neutral"):
        load_task_split("xnli", "test", "es", data_dir=tmp_path, cache_dir=tmp_path / "b")


def test_hub_corpus_is_streamed_and_reservoir_sampled(tmp_path, monkeypatch):
    streamed = []

    def fake_stream(dataset_id, lang):
        streamed.append((dataset_id, lang))
        return ((f"e{i}", f"a{i}") for i in range(50))

    monkeypatch.setattr(data, "_stream_hub_parallel", fake_stream)
    whole = load_parallel("multiun", "ar", data_dir=tmp_path, cache_dir=tmp_path / "c", sample=100)
    assert whole == [(f"e{i}", f"a{i}") for i in range(50)]  # a corpus smaller than the sample: whole, in order
    sampled = load_parallel("multiun", "ar", data_dir=tmp_path, cache_dir=tmp_path / "c2", sample=10)
    assert len(sampled) == 10 and set(sampled) <= set(whole) and sampled != whole[:10]
    assert streamed == [("Helsinki-NLP/un_pc", "ar")] * 2


def test_unknown_names_suggest_close_ones():
    with pytest.raises(ValueError, match="did you mean 'wikiann'"):
        load_task_split("wikian", "test", "en")
    with pytest.raises(DataSourceError, match="did you mean 'ntrex'"):
        load_parallel("ntrx", "es", data_dir=SHARED_DATA)
    with pytest.raises(ValueError, match="MultiNLI is English only"):
        load_task_split("xnli", "train", "fr", data_dir=SHARED_DATA)


def test_preflight_descriptions(tmp_path, monkeypatch):
    for kind, name in [("task", "udpos"), ("task", "wikiann"), ("task", "xnli"), ("parallel", "ntrex"), ("dictionary", "muse")]:
        assert describe_missing(kind, name, TARGETS, SHARED_DATA) == []
    monkeypatch.setenv("SWEEP_OFFLINE", "1")
    missing = describe_missing("task", "udpos", ["ar"], tmp_path, tmp_path / "cache")
    assert len(missing) == 4  # en train, en dev, en test, ar test
    assert any(str(tmp_path / "ud/ar_padt-ud-test.conllu") in line for line in missing)
    with pytest.raises(DataSourceError, match="1 data file"):  # en-es only, as the trials read by default
        check_available("dictionary", "muse", ["es"], tmp_path, tmp_path / "cache")
    with pytest.raises(DataSourceError, match="2 data file"):
        check_available("dictionary", "muse", ["es"], tmp_path, tmp_path / "cache", muse_reverse_file="x-en")
    assert "did you mean 'ntrex'" in describe_missing("parallel", "ntrx", ["es"], SHARED_DATA)[0]


# --- bad files: found when read, one line `path:line: what is wrong` --------------------------------------

TEN = "1\tcasa\tcasa\tNOUN\t_\t_\t0\troot\t_\t_"


def one_line_error(call, *args, **kwargs) -> str:
    with pytest.raises(DataSourceError) as caught:
        call(*args, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_conllu_column_count_and_ids_are_checked_on_every_line(tmp_path):
    path = write(tmp_path / "ud/es_gsd-ud-test.conllu", f"# sent_id = a\n{TEN}\n\n# sent_id = b\n{TEN}\n"
                 "2\tes\tser\tAUX\t_\t_\t1\tcop\t_\n\n")
    assert one_line_error(load_task_split, "udpos", "test", "es", data_dir=tmp_path) == (
        f"{path}:6: expected 10 tab-separated CoNLL-U columns, got 9")
    write(path, f"{TEN}\nx\tcasa\tcasa\tNOUN\t_\t_\t0\troot\t_\t_\n")
    assert "es_gsd-ud-test.conllu:2: ID 'x' is not a word index" in one_line_error(read_conllu, path)
    write(path, f"{TEN.replace('NOUN', 'NOM')}\n")
    assert f"{path}:1: word 'casa' has UPOS 'NOM'" in one_line_error(read_conllu, path)


def test_conllu_without_final_blank_line_keeps_its_last_sentence_and_a_cut_line_is_named(tmp_path):
    path = tmp_path / "t.conllu"
    path.write_text(f"{TEN}\n\n{TEN}\n2\tes\tser\tAUX\t_\t_\t1\tcop\t_\t_", encoding="utf-8")  # no final newline
    assert read_conllu(path) == [{"words": ["casa"], "labels": ["NOUN"]},
                                 {"words": ["casa", "es"], "labels": ["NOUN", "AUX"]}]
    path.write_text(f"{TEN}\n\n{TEN}\n2\tes\tser\tAU", encoding="utf-8")  # download cut mid-line
    assert one_line_error(read_conllu, path) == f"{path}:4: expected 10 tab-separated CoNLL-U columns, got 4"


@pytest.mark.parametrize(
    "relative, content, line",
    [
        ("ud/es_gsd-ud-test.conllu", f"{TEN}\n\n".encode() + b"1\tca\xf1a\tx\tNOUN\t_\t_\t0\troot\t_\t_\n", 3),
        ("wikiann/test-es.tsv", b"Ana\tB-PER\n\nLe\xf3n\tB-LOC\n", 3),
        ("xnli/test-es.tsv", b"premise\thypothesis\tlabel\nA\tB\tneutral\nC\t\xff\tneutral\n", 3),
        ("muse/en-es.txt", b"dog perro\ncat gato\n\x80 x\n", 3),
        ("parallel/mine/en-es.es", b"uno\ndos\n\xc3(\n", 3),
    ],
)
def test_non_utf8_bytes_name_the_file_and_line(tmp_path, relative, content, line):
    path = tmp_path / relative
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    write(tmp_path / "parallel/mine/en-es.en", "one\ntwo\nthree\n")
    loaders = {"ud": lambda: load_task_split("udpos", "test", "es", data_dir=tmp_path),
               "wikiann": lambda: load_task_split("wikiann", "test", "es", data_dir=tmp_path),
               "xnli": lambda: load_task_split("xnli", "test", "es", data_dir=tmp_path),
               "muse": lambda: load_source(data.get_source("muse"), {"src": "en", "tgt": "es"}, tmp_path),
               "parallel": lambda: load_parallel("mine", "es", data_dir=tmp_path)}
    message = one_line_error(loaders[relative.split("/")[0]])
    assert message.startswith(f"{path}:{line}: not UTF-8 (byte 0x")


@pytest.mark.parametrize(
    "relative, content, expected",
    [
        ("wikiann/test-es.tsv", "Ana\tB-PER\nvive\tO\textra\n", ":2: expected 'token<TAB>tag', got 3 tab-separated fields"),
        ("wikiann/test-es.tsv", "Ana\tB-PER\n\tO\n", ":2: empty token before the tag 'O'"),
        ("wikiann/test-es.tsv", "Ana\tB-PERSON\n", ":1: tag 'B-PERSON' is not one of"),
        ("xnli/test-es.tsv", "A\tB\tneutral\nA\tneutral\n", ":2: expected 'premise<TAB>hypothesis<TAB>label', got 2 fields"),
        ("mnli/train.tsv", "premise\thypothesis\tlabel\nA\tB\tC\tneutral\n", ":2: expected 'premise<TAB>hypothesis<TAB>label', got 4"),
    ],
)
def test_tsv_column_counts_name_file_and_line(tmp_path, relative, content, expected):
    path = write(tmp_path / relative, content)
    task = {"wikiann": "wikiann", "xnli": "xnli", "mnli": "xnli"}[relative.split("/")[0]]
    split = "train" if relative.startswith("mnli") else "test"
    lang = "en" if relative.startswith("mnli") else "es"
    assert one_line_error(load_task_split, task, split, lang, data_dir=tmp_path).startswith(f"{path}{expected}")


def test_muse_skips_a_few_irregular_lines_but_rejects_a_wrong_file(tmp_path, caplog):
    good = [f"w{i}\tp{i}" for i in range(200)]
    path = write(tmp_path / "muse/en-es.txt", "\n".join(good[:100] + ["odd line here"] + good[100:]) + "\n")
    assert len(read_muse(path)) == 200  # the reference skips lines that are not two fields
    assert "skipped 1 malformed lines (first: line 101)" in caplog.text
    write(path, "".join(f"{i}\tw{i}\tp{i}\n" for i in range(10)))
    assert one_line_error(read_muse, path) == (
        f"{path}:1: expected 'source<TAB or space>target', got 3 fields (10 of 10 lines are malformed)")


@pytest.mark.parametrize(
    "relative, content, load, what",
    [
        ("ud/fr_gsd-ud-test.conllu", "# sent_id = 1\n# text = rien\n\n", ("udpos", "test", "fr"), "no example in it (udpos split=test lang=fr)"),
        ("xnli/test-ar.tsv", "premise\thypothesis\tlabel\n", ("xnli", "test", "ar"), "no example in it (xnli split=test lang=ar)"),
        ("wikiann/test-ru.tsv", "\n\n", ("wikiann", "test", "ru"), "no example in it (wikiann split=test lang=ru)"),
    ],
)
def test_a_split_without_examples_names_file_and_language(tmp_path, relative, content, load, what):
    path = tmp_path / relative
    path.parent.mkdir(parents=True)
    path.write_text(content, encoding="utf-8")
    assert one_line_error(load_task_split, *load, data_dir=tmp_path) == f"{path}: {what}"


def test_empty_parallel_files_and_dictionaries_are_named(tmp_path):
    for name in ("parallel/mine/en-es.en", "parallel/mine/en-es.es", "muse/en-es.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    en, es = tmp_path / "parallel/mine/en-es.en", tmp_path / "parallel/mine/en-es.es"
    assert one_line_error(load_parallel, "mine", "es", data_dir=tmp_path) == (
        f"{en} and {es}: no sentence pair in it (mine lang=es)")
    assert "muse/en-es.txt: no dictionary entry in it (muse src=en tgt=es)" in one_line_error(
        load_dictionary, "en", "es", data_dir=tmp_path)


def test_describe_unreadable_reads_every_file_once_and_reports_each_bad_one(tmp_path):
    write(tmp_path / "xnli/test-es.tsv", "A\tB\tneutral\n")
    write(tmp_path / "xnli/test-fr.tsv", "A\tB\tneutral\nC\tD\tmaybe\n")
    write(tmp_path / "xnli/test-en.tsv", "A\tB\tneutral\n")
    write(tmp_path / "mnli/train.tsv", "A\tB\tneutral\n")  # mnli/dev.tsv is absent: describe_missing's line
    read: set[Path] = set()
    lines = describe_unreadable("task", "xnli", ["es", "fr"], tmp_path, read)
    assert lines == [f"{tmp_path / 'xnli/test-fr.tsv'}:2: label 'maybe' is not one of entailment, neutral, contradiction"]
    assert read == {tmp_path / p for p in ("mnli/train.tsv", "xnli/test-en.tsv", "xnli/test-es.tsv", "xnli/test-fr.tsv")}
    assert describe_unreadable("task", "xnli", ["fr"], tmp_path, read) == []  # already read
    assert describe_unreadable("parallel", "nothere", ["es"], tmp_path) == []  # describe_missing names it


def test_the_real_files_pass_every_check():
    read: set[Path] = set()
    for kind, name in [("task", "udpos"), ("task", "wikiann"), ("task", "xnli"), ("parallel", "ntrex"), ("dictionary", "muse")]:
        # "x-en": the real X-en files too (the default, the reference's, reads en-X alone)
        assert describe_unreadable(kind, name, TARGETS, SHARED_DATA, read, muse_reverse_file="x-en") == []
    assert len(read) == 44  # every file of ../shared/data/README.md's layout



# --- settings and subsets -------------------------------------------------------------------------


def test_directories_from_settings_then_environment(monkeypatch, tmp_path):
    assert resolve_data_dir(None) is None
    assert resolve_cache_dir(None) == Path("~/.cache/alignment-sweep").expanduser()
    monkeypatch.setenv("SWEEP_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("SWEEP_CACHE_DIR", str(tmp_path / "c"))
    assert resolve_data_dir(None) == tmp_path / "d"
    assert resolve_cache_dir(None) == tmp_path / "c"
    assert resolve_data_dir(tmp_path / "x") == tmp_path / "x"


def test_subsets_are_deterministic():
    items = list(range(100))
    assert Subset(3).apply(items) == [0, 1, 2]
    assert Subset(None).apply(items) == items
    assert Subset(500, "random").apply(items) == items
    drawn = Subset(10, "random", seed=7).apply(items)
    assert drawn == Subset(10, "random", seed=7).apply(items)
    assert drawn == sorted(drawn) and len(set(drawn)) == 10
    assert drawn != Subset(10, "random", seed=8).apply(items)
    with pytest.raises(ValueError, match="subset mode"):
        Subset(3, "last")
    real = load_task_split("udpos", "test", "fr", data_dir=SHARED_DATA)
    assert load_task_split("udpos", "test", "fr", data_dir=SHARED_DATA, subset=Subset(5)) == real[:5]


# --- cache -----------------------------------------------------------------------------------------------

CONCURRENT_SCRIPT = """
import pathlib, sys, time
from trainables.cache import cached

target, log, me, other = (pathlib.Path(a) for a in sys.argv[1:5])
me.touch()
while not other.exists():  # both processes are running before either looks at the cache
    time.sleep(0.01)
existed = target.exists()

def compute():
    with open(log, "a") as handle:
        handle.write("computed\\n")
    time.sleep(1.0)
    return "value"

value = cached(target, compute, lambda v, p: p.write_text(v), lambda p: p.read_text())
print(existed, value)
"""


def test_concurrent_processes_compute_once_and_agree_on_the_value(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(CONCURRENT_SCRIPT)
    target, log = tmp_path / "cache" / "result.txt", tmp_path / "log.txt"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ready = [tmp_path / "ready-a", tmp_path / "ready-b"]
    workers = [
        subprocess.Popen(
            [sys.executable, str(script), str(target), str(log), str(ready[i]), str(ready[1 - i])],
            stdout=subprocess.PIPE, text=True, env=env,
        )
        for i in range(2)
    ]
    outputs = [worker.communicate(timeout=60)[0].split() for worker in workers]
    assert all(worker.returncode == 0 for worker in workers)
    assert outputs == [["False", "value"], ["False", "value"]]  # both missed the file at first
    # No lock (NFS may ignore them): the first to claim the entry computes, the other waits for its
    # file (trainables.cache.cached), so the value is computed once and both return it.
    assert log.read_text() == "computed\n"
    assert target.read_text() == "value"
    assert not [p.name for p in target.parent.iterdir() if ".tmp-" in p.name]


def test_failed_compute_leaves_nothing_and_can_retry(tmp_path):
    target = tmp_path / "x.txt"

    def broken():
        raise RuntimeError("boom")

    def save(value, path):
        path.write_text(value)

    with pytest.raises(RuntimeError):
        cached(target, broken, save, lambda p: p.read_text())
    assert not target.exists()
    assert cached(target, lambda: "ok", save, lambda p: p.read_text()) == "ok"

    def half_written(value, path):
        path.write_text("partial")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_save("v", tmp_path / "y.txt", half_written)
    assert not (tmp_path / "y.txt").exists()
    assert not [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name]  # temporary file removed


def test_cache_key_is_stable_and_order_insensitive():
    assert cache_key(a=1, b="x") == cache_key(b="x", a=1)
    assert cache_key(a=1, b="x") != cache_key(a=2, b="x")
    assert len(cache_key(a=1)) == 16
