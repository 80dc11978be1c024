"""WikiANN scoring (trainables/ner.py): the reference's post-processing of predicted tags before
seqeval, and the Chinese test set re-segmented from characters into words."""
from __future__ import annotations

import os
import random
from dataclasses import replace
from pathlib import Path

import pytest
from seqeval.metrics.sequence_labeling import get_entities

from trainables import finetuning
from trainables.data import Subset, read_token_tsv
from trainables.ner import ner_post_processing, postprocess_predictions, preprocess_wikiann, words_from_characters
from trainables.segmentation import segment
from trainables.settings import Settings
from trainables.tasks import preprocess_ud, TASKS, WIKIANN_TAGS, entity_f1

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ZH_TEST = SHARED_DATA / "wikiann" / "test-zh.tsv"
E5_SMALL_PATH = os.environ.get("E5_SMALL_PATH", os.path.expanduser("~/.cache/offline-models/multilingual-e5-small"))


# --------------------------------------------------------------------------------------------
# Post-processing of predictions


@pytest.mark.parametrize(
    "raw, expected",
    [
        # an I- that opens a span becomes B-
        (["I-PER"], ["B-PER"]),
        (["O", "I-LOC", "I-LOC"], ["O", "B-LOC", "I-LOC"]),
        (["B-ORG", "O", "I-PER"], ["B-ORG", "O", "B-PER"]),
        (["I-ORG", "B-LOC"], ["B-ORG", "B-LOC"]),
        (["I-PER", "B-PER"], ["B-PER", "B-PER"]),
        # a span takes the type of its last I- tag
        (["B-PER", "I-LOC"], ["B-LOC", "I-LOC"]),
        (["B-PER", "I-PER", "I-LOC"], ["B-LOC", "I-LOC", "I-LOC"]),
        (["B-ORG", "B-PER", "I-LOC"], ["B-ORG", "B-LOC", "I-LOC"]),  # the retyped B- ends the run
        (["B-LOC", "I-PER", "O", "I-ORG", "I-LOC"], ["B-PER", "I-PER", "O", "B-LOC", "I-LOC"]),
        # the reference's rule: a B- of the run's own type does not end it
        (["B-PER", "I-PER", "B-LOC", "I-LOC"], ["B-LOC", "I-LOC", "B-LOC", "I-LOC"]),
        # nothing to do
        (["B-PER", "B-LOC"], ["B-PER", "B-LOC"]),
        (["O", "B-ORG", "I-ORG", "O"], ["O", "B-ORG", "I-ORG", "O"]),
        ([], []),
    ],
)
def test_post_processing_retypes_like_the_reference(raw, expected):
    assert ner_post_processing(raw) == expected


def test_post_processing_always_yields_valid_iob2():
    rng = random.Random(0)
    changed = 0
    for _ in range(2000):
        raw = [rng.choice(WIKIANN_TAGS) for _ in range(rng.randint(1, 8))]
        out = ner_post_processing(raw)
        assert len(out) == len(raw)
        assert [t == "O" for t in out] == [t == "O" for t in raw]  # O tags are never added or removed
        for i, tag in enumerate(out):
            if tag.startswith("I-"):
                assert i > 0 and out[i - 1] != "O" and out[i - 1][2:] == tag[2:], (raw, out)
        changed += out != raw
    assert changed > 500


# gold entities: LOC(0-1) PER(3) | ORG(1-3) | PER(0-1) LOC(2-3)
GOLD = [
    ["B-LOC", "I-LOC", "O", "B-PER"],
    ["O", "B-ORG", "I-ORG", "I-ORG"],
    ["B-PER", "I-PER", "B-LOC", "I-LOC"],
]
# raw, in seqeval's default mode: PER(0) LOC(1) PER(3) | ORG(1) PER(2) ORG(3) | PER(0-1) LOC(2-3)
#   -> 8 predicted, 3 correct: P = 3/8, R = 3/5, F1 = 6/13
# post-processed: LOC(0-1) PER(3) | ORG(1-3) | LOC(0-1) LOC(2-3)
#   -> 5 predicted, 4 correct: P = R = F1 = 4/5
PREDICTED = [
    ["B-PER", "I-LOC", "O", "I-PER"],
    ["O", "B-ORG", "I-PER", "I-ORG"],
    ["B-PER", "I-PER", "B-LOC", "I-LOC"],
]


def test_post_processing_changes_f1_as_worked_by_hand():
    assert entity_f1(GOLD, PREDICTED) == pytest.approx(6 / 13)
    processed = postprocess_predictions(PREDICTED, Settings())
    assert processed == [
        ["B-LOC", "I-LOC", "O", "B-PER"],
        ["O", "B-ORG", "I-ORG", "I-ORG"],
        ["B-LOC", "I-LOC", "B-LOC", "I-LOC"],
    ]
    assert entity_f1(GOLD, processed) == pytest.approx(4 / 5)
    assert postprocess_predictions(PREDICTED, Settings(ner_post_processing=False)) == PREDICTED


def test_evaluate_applies_the_task_hook_only(monkeypatch):
    outputs = {}
    monkeypatch.setattr(finetuning, "predict", lambda model, tokenizer, task, examples, settings: outputs[task.name])
    outputs["wikiann"] = (GOLD, PREDICTED)
    assert finetuning.evaluate(None, None, "wikiann", [], Settings()) == pytest.approx(4 / 5)
    assert finetuning.evaluate(None, None, "wikiann", [], Settings(ner_post_processing=False)) == pytest.approx(6 / 13)
    # the same predictions through a task without the hook are scored raw
    unhooked = replace(TASKS["wikiann"], postprocess=None)
    assert finetuning.evaluate(None, None, unhooked, [], Settings()) == pytest.approx(6 / 13)
    outputs["udpos"] = ([["NOUN", "VERB"], ["X"]], [["NOUN", "NOUN"], ["X"]])
    assert finetuning.evaluate(None, None, "udpos", [], Settings()) == pytest.approx(2 / 3)


def test_the_hooks_of_each_task():
    assert TASKS["wikiann"].preprocess is preprocess_wikiann
    assert TASKS["wikiann"].postprocess is postprocess_predictions
    assert TASKS["udpos"].preprocess is preprocess_ud and TASKS["udpos"].postprocess is None  # multiword lines
    assert TASKS["xnli"].preprocess is None and TASKS["xnli"].postprocess is None


# --------------------------------------------------------------------------------------------
# Chinese: characters -> words


def _chars(text: str, labels: list[str]) -> dict[str, list[str]]:
    assert len(text) == len(labels)
    return {"words": list(text), "labels": labels}


def test_words_from_characters_on_real_sentences_worked_by_hand():
    # test-zh.tsv sentence 29: jieba's word 及斯里蘭卡 spans O + a LOC entity, and is cut there
    text = "針尾蛇主要分布於南印度及斯里蘭卡。"
    assert segment(text, "zh") == ["針尾蛇", "主要", "分布", "於", "南", "印度", "及斯里蘭卡", "。"]
    labels = ["O"] * 9 + ["B-LOC", "I-LOC", "O", "B-LOC", "I-LOC", "I-LOC", "I-LOC", "O"]
    [out] = words_from_characters([_chars(text, labels)])
    assert out["words"] == ["針尾蛇", "主要", "分布", "於", "南", "印度", "及", "斯里蘭卡", "。"]
    assert out["labels"] == ["O", "O", "O", "O", "O", "B-LOC", "O", "B-LOC", "O"]

    # sentence 8: 東華貴 = I-LOC O O; the piece 東 keeps I-LOC, continuing the entity 遠東
    text = "#自稱為遠東華貴之高尚消遣場所；"
    assert segment(text, "zh") == ["#", "自稱", "為", "遠", "東華貴", "之", "高尚", "消遣", "場所", "；"]
    labels = ["O"] * 4 + ["B-LOC", "I-LOC"] + ["O"] * 10
    [out] = words_from_characters([_chars(text, labels)])
    assert out["words"] == ["#", "自稱", "為", "遠", "東", "華貴", "之", "高尚", "消遣", "場所", "；"]
    assert out["labels"] == ["O", "O", "O", "B-LOC", "I-LOC", "O", "O", "O", "O", "O", "O"]

    # sentence 262: a B- character always opens a piece (西拉 = I-ORG B-ORG)
    text = "#拉西拉天文台"
    assert segment(text, "zh") == ["#", "拉", "西拉", "天文台"]
    [out] = words_from_characters([_chars(text, ["O", "B-ORG", "I-ORG", "B-ORG", "I-ORG", "I-ORG", "I-ORG"])])
    assert out == {"words": ["#", "拉", "西", "拉", "天文台"], "labels": ["O", "B-ORG", "I-ORG", "B-ORG", "I-ORG"]}


def test_spaces_written_none_are_dropped_with_their_label():
    # sentence 9302: 銀獎<space>蘇永康; advancing by word lengths over the joined text (the
    # reference) would label 蘇 with the space's O and start the person at 永
    example = {"words": ["銀", "獎", "None", "蘇", "永", "康"], "labels": ["O", "O", "O", "B-PER", "I-PER", "I-PER"]}
    assert segment("銀獎 蘇永康", "zh") == ["銀獎", "蘇", "永康"]
    assert words_from_characters([example]) == [{"words": ["銀獎", "蘇", "永康"], "labels": ["O", "B-PER", "I-PER"]}]


def test_words_from_characters_rejects_words():
    with pytest.raises(ValueError, match=r"example 1: token '北京' is not one character.*ner_zh_words"):
        words_from_characters([_chars("中文", ["O", "O"]), {"words": ["北京", "大"], "labels": ["B-LOC", "I-LOC"]}])
    with pytest.raises(ValueError, match="example 0: 2 tokens but 1 labels"):
        words_from_characters([{"words": ["中", "文"], "labels": ["O"]}])


def _char_spans(words: list[str], labels: list[str]) -> set[tuple[str, int, int]]:
    """Entities as (type, first character, one past the last character)."""
    starts = [0]
    for word in words:
        starts.append(starts[-1] + len(word))
    return {(kind, starts[a], starts[b + 1]) for kind, a, b in get_entities(labels)}


def test_real_zh_test_sentences_keep_their_entities():
    examples = read_token_tsv(ZH_TEST, "zh")[:50]
    assert all(len(w) == 1 or w == "None" for e in examples for w in e["words"])
    out = words_from_characters(examples)
    assert sum(len(e["words"]) for e in out) < 0.7 * sum(len(e["words"]) for e in examples)
    cut = spaces = 0
    for before, after in zip(examples, out):
        kept = [(c, label) for c, label in zip(before["words"], before["labels"]) if c != "None"]
        spaces += len(kept) < len(before["words"])
        chars, labels = [c for c, _ in kept], [label for _, label in kept]
        assert len(after["words"]) == len(after["labels"])
        assert "".join(after["words"]) == "".join(chars)
        # every gold entity survives with its type and characters: words are cut at entity edges
        assert _char_spans(after["words"], after["labels"]) == _char_spans(chars, labels)
        cut += len(after["words"]) - len(segment("".join(chars), "zh"))
    assert cut > 0  # some jieba words did span an entity boundary
    assert spaces > 0  # and the sample has a space (written "None")


def test_preprocess_is_for_chinese_only():
    examples = [_chars("北京大学", ["B-ORG", "I-ORG", "I-ORG", "I-ORG"])]
    assert preprocess_wikiann(examples, "zh", Settings()) == [{"words": ["北京大学"], "labels": ["B-ORG"]}]
    assert preprocess_wikiann(examples, "zh", Settings(ner_zh_words=False)) is examples
    assert preprocess_wikiann(examples, "es", Settings()) is examples


def test_featurized_zh_test_set_is_in_words(tmp_path):
    from transformers import AutoTokenizer

    from trainables.encoding import IGNORE_INDEX
    from trainables.trial import featurize_cached

    tokenizer = AutoTokenizer.from_pretrained(E5_SMALL_PATH)
    settings = Settings(data_dir=str(SHARED_DATA), cache_dir=str(tmp_path))
    features = featurize_cached(TASKS["wikiann"], tokenizer, {"model_source": E5_SMALL_PATH}, settings,
                                "test", "zh", Subset(20))
    chars = read_token_tsv(ZH_TEST, "zh")[:20]
    expected = TASKS["wikiann"].featurize(tokenizer, words_from_characters(chars), settings)
    assert features.labels.equal(expected.labels) and features.tokens["input_ids"].equal(expected.tokens["input_ids"])
    as_chars = TASKS["wikiann"].featurize(tokenizer, chars, settings)
    assert int((features.labels != IGNORE_INDEX).sum()) < int((as_chars.labels != IGNORE_INDEX).sum())
