"""The writers of trainables/formats.py: each format written, then read back by its reader, unchanged."""
from __future__ import annotations

from pathlib import Path

import pytest

from trainables import formats


def test_conllu_round_trip_with_every_column(tmp_path: Path) -> None:
    sentences = [
        {"sent_id": "s1", "text": "Le chat dort.", "words": ["Le", "chat", "dort", "."],
         "labels": ["DET", "NOUN", "VERB", "PUNCT"], "lemmas": ["le", "chat", "dormir", "."],
         "feats": ["_", "Number=Sing", "Tense=Pres", "_"], "heads": [2, 3, 0, 3],
         "deprels": ["det", "nsubj", "root", "punct"], "space_after": [True, True, False, False]},
        {"words": ["我", "睡"], "labels": ["PRON", "VERB"]},  # only the required keys
    ]
    path = formats.write_conllu(tmp_path / "ud" / "x-ud-test.conllu", sentences)
    assert formats.read_conllu(path) == [{"words": s["words"], "labels": s["labels"]} for s in sentences]
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[:2] == ["# sent_id = s1", "# text = Le chat dort."]
    assert lines[4].split("\t") == ["3", "dort", "dormir", "VERB", "_", "Tense=Pres", "0", "root", "_", "SpaceAfter=No"]
    assert lines[5].endswith("\t_")  # the last word of a sentence never carries SpaceAfter=No
    assert path.read_text(encoding="utf-8").endswith("\n\n")  # a blank line closes every sentence


def test_token_tsv_round_trip(tmp_path: Path) -> None:
    examples = [{"words": ["Maria", "Lopez", "lives", "in", "Paris", "."],
                 "labels": ["B-PER", "I-PER", "O", "O", "B-LOC", "O"]},
                {"words": ["ACME"], "labels": ["B-ORG"]}]
    path = formats.write_token_tsv(tmp_path / "test-en.tsv", examples)
    assert formats.read_token_tsv(path, "en") == examples
    assert path.read_text(encoding="utf-8") == "Maria\tB-PER\nLopez\tI-PER\nlives\tO\nin\tO\nParis\tB-LOC\n.\tO\n\nACME\tB-ORG\n\n"


def test_nli_tsv_round_trip(tmp_path: Path) -> None:
    examples = [{"premise": "A man sleeps.", "hypothesis": "A man does not sleep.", "label": "contradiction"},
                {"premise": "A man sleeps.", "hypothesis": "Someone sleeps.", "label": "entailment"}]
    path = formats.write_nli_tsv(tmp_path / "test-en.tsv", examples)
    assert formats.read_nli_tsv(path) == examples


def test_line_aligned_and_muse_round_trip(tmp_path: Path) -> None:
    pairs = [("The cat sleeps.", "Le chat dort."), ("Hello.", "Bonjour.")]
    en, fr = formats.write_line_aligned(tmp_path / "p" / "en-fr.en", tmp_path / "p" / "en-fr.fr", pairs)
    assert formats.read_line_aligned(en, fr) == pairs
    entries = [("cat", "chat"), ("cat", "matou"), ("sleeps", "dort")]
    assert formats.read_muse(formats.write_muse(tmp_path / "muse" / "en-fr.txt", entries)) == entries


@pytest.mark.parametrize("write, argument, message", [
    (formats.write_conllu, [{"words": ["a"], "labels": ["XYZ"]}], "UPOS 'XYZ'"),
    (formats.write_conllu, [{"words": ["a b\tc"], "labels": ["X"]}], "without tabs"),
    (formats.write_conllu, [{"words": ["a", "b"], "labels": ["X"]}], "2 words and 1 labels"),
    (formats.write_token_tsv, [{"words": ["a"], "labels": ["B-XYZ"]}], "tag 'B-XYZ'"),
    (formats.write_nli_tsv, [{"premise": "p", "hypothesis": "h", "label": "maybe"}], "label 'maybe'"),
    (formats.write_nli_tsv, [{"premise": "p\nq", "hypothesis": "h", "label": "neutral"}], "premise"),
    (formats.write_muse, [("ice cream", "glace")], "one word"),
])
def test_bad_items_are_one_error_naming_the_file_and_item(tmp_path: Path, write, argument, message) -> None:
    with pytest.raises(ValueError, match=message) as error:
        write(tmp_path / "out.txt", argument)
    assert str(tmp_path / "out.txt") in str(error.value) and "\n" not in str(error.value)


def test_line_aligned_rejects_a_line_break_inside_a_line(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"en-fr\.fr: item 1"):
        formats.write_line_aligned(tmp_path / "en-fr.en", tmp_path / "en-fr.fr", [("a", "b"), ("c", "d\ne")])
