"""WikiANN NER scoring as the paper's code did it: prediction post-processing and Chinese words.

Two steps of the reference code (multilingual_eval/datasets/wikiann_ner.py and
lang_preprocessing.py) sit between the model and seqeval; the paper's text mentions neither.

- `ner_post_processing(tags)` rewrites a predicted IOB2 sequence before seqeval
  (`wikiann_ner.ner_post_processing`, "following Wu et al."): an I-X that opens a span (first tag,
  or after O) becomes B-X, then each span is retyped after its last I- tag. Gold tags are not
  touched. Setting `ner_post_processing`.
- `words_from_characters(examples)`: WikiANN's Chinese test set has one character per token. The
  reference joins the characters, segments the sentence into words (the Stanford segmenter; jieba
  here, `trainables.segmentation`) and realigns the labels
  (`StanfordSegmenterWithLabelAlignmentMapper.relabel`), so Chinese is scored on words like the
  other languages. Setting `ner_zh_words`.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from trainables.segmentation import segment
from trainables.settings import Settings

# The HF WikiANN Chinese data writes a space token as the string "None"; the reference mapper
# turns it back into a space before joining the characters.
NONE_TOKEN = "None"


# --------------------------------------------------------------------------------------------
# Post-processing of predicted tags


def _retag(tag: str, entity_type: str) -> str:
    return f"{tag[0]}-{entity_type}"


def ner_post_processing(tags: Sequence[str]) -> list[str]:
    """The reference's repair of a predicted IOB2 sequence (`wikiann_ner.ner_post_processing`).

    1. An I-X that starts the sequence or follows O becomes B-X.
    2. Right to left, a run of B-/I- tags takes the type of the I- tag that ends it: a tag of
       another type is retyped (keeping its B-/I- prefix); O ends the run, and so does a B- tag
       that had to be retyped. A B- tag already of the run's type does NOT end it, so, as in the
       reference, "B-PER I-PER B-LOC I-LOC" becomes "B-LOC I-LOC B-LOC I-LOC" (kept as is to
       reproduce the published scores).
    """
    # Step 1 looks at the original predecessor; a retagged I->B never changes whether the next
    # tag follows O, so this equals the reference's loop.
    out = [
        f"B-{tag[2:]}" if tag.startswith("I-") and (i == 0 or tags[i - 1] == "O") else tag
        for i, tag in enumerate(tags)
    ]
    run_type: str | None = None
    for i in range(len(out) - 1, -1, -1):
        tag = out[i]
        if tag == "O":
            run_type = None
        elif run_type is None:
            if tag.startswith("I-"):
                run_type = tag[2:]
        elif tag[2:] != run_type:
            out[i] = _retag(tag, run_type)
            if tag.startswith("B-"):
                run_type = None
    return out


def postprocess_predictions(predicted: list[list[str]], settings: Settings) -> list[list[str]]:
    """WikiANN's `postprocess` hook: `ner_post_processing` on every predicted sequence."""
    if not settings.ner_post_processing:
        return predicted
    return [ner_post_processing(tags) for tags in predicted]


# --------------------------------------------------------------------------------------------
# Chinese: characters -> words


def _split_by_labels(chars: str, labels: Sequence[str]) -> tuple[list[str], list[str]]:
    """One segmenter word cut where its characters' labels disagree (the reference's `relabel`).

    A piece takes its first character's label. A character joins the current piece when it has
    the piece's label, or is I-X after a piece opened by B-X; a B- character, or any other label,
    opens a new piece. So no word ever spans an entity boundary, and the pieces' labels spell the
    same entities as the characters' (seqeval's default mode).
    """
    pieces: list[str] = []
    piece_labels: list[str] = []
    for char, label in zip(chars, labels):
        if pieces:
            first = piece_labels[-1]
            joins = not label.startswith("B-") and (
                label == first or (first.startswith("B-") and label == f"I-{first[2:]}")
            )
            if joins:
                pieces[-1] += char
                continue
        pieces.append(char)
        piece_labels.append(label)
    return pieces, piece_labels


def words_from_characters(examples: Sequence[Mapping[str, Any]]) -> list[dict[str, list[str]]]:
    """Character-tokenised NER examples re-segmented into Chinese words (jieba), labels realigned.

    Each sentence's characters are joined and segmented; a word is cut further wherever its
    characters' labels disagree (`_split_by_labels`). Whitespace characters (the "None" tokens of
    the HF data) separate words and are dropped with their labels. The reference instead advanced
    through the labels by word lengths over the joined text, so after a space (which the Stanford
    segmenter drops) every later word took its left neighbour's labels; here each word keeps its
    own characters' labels.
    """
    out: list[dict[str, list[str]]] = []
    for i, example in enumerate(examples):
        tokens = [" " if token == NONE_TOKEN else token for token in example["words"]]
        labels = list(example["labels"])
        if len(tokens) != len(labels):
            raise ValueError(f"wikiann zh example {i}: {len(tokens)} tokens but {len(labels)} labels")
        bad = next((token for token in tokens if len(token) != 1), None)
        if bad is not None:
            raise ValueError(
                f"wikiann zh example {i}: token {bad!r} is not one character "
                "(setting ner_zh_words expects character-tokenised text)"
            )
        kept = [(c, label) for c, label in zip(tokens, labels) if not c.isspace()]
        chars = "".join(c for c, _ in kept)
        words = segment("".join(tokens), "zh")
        if "".join(words) != chars:
            raise ValueError(f"wikiann zh example {i}: the segmented words do not spell the sentence {chars!r}")
        new_words: list[str] = []
        new_labels: list[str] = []
        offset = 0
        for word in words:
            pieces, piece_labels = _split_by_labels(word, [label for _, label in kept[offset : offset + len(word)]])
            new_words += pieces
            new_labels += piece_labels
            offset += len(word)
        out.append({**example, "words": new_words, "labels": new_labels})
    return out


def preprocess_wikiann(examples: list[dict], lang: str, settings: Settings) -> list[dict]:
    """WikiANN's `preprocess` hook: Chinese (every split read) re-segmented into words."""
    if lang == "zh" and settings.ner_zh_words:
        return words_from_characters(examples)
    return examples
