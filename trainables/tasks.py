"""Downstream tasks (paper §4, Table 1): each `TASKS` entry is the whole task, its plug-in.

An entry owns its data sources per split (names in `trainables.data.DATA_SOURCES`), its label
set (which the data readers validate against), its featurisation, its model head (model class
and head arguments), how model outputs decode into predicted labels, its metric, and optional
preprocess / postprocess hooks. Every other module asks the entry and never branches on what kind
of task it is. Two reusable building blocks implement the two kinds of the paper:

- `TokenTagging`: one label per word (POS, NER).
- `SentenceClassification`: one label per sentence or sentence pair (NLI).

A new task is one entry in `TASKS` built from a block (or from a new `Task` subclass).

The paper's tasks:

- `udpos`: UPOS tagging (17 tags, and "_" for multiword-token lines as the reference), accuracy over words.
- `wikiann`: NER with IOB2 tags (PER, ORG, LOC), entity-level F1 by seqeval in its default mode.
  The default mode is conlleval-compatible (an I- tag after O opens an entity); it is what the
  reference code got from HF `load_metric("seqeval")` with no `mode` argument, so it is kept here to
  match the published numbers (strict IOB2 mode would score ill-formed predictions lower).
- `xnli`: sentence-pair classification (premise, hypothesis), accuracy; trained and validated on
  MultiNLI (English), tested on XNLI (App. B).

Token tasks put a word's label on its first subword, the other subwords getting IGNORE_INDEX
(`encoding.first_subword_labels`, as the reference's token-classification mapper); XLM-R's lone
"▁" pieces are deleted from the input (`keep_lone_prefix`, see encoding.py). A sentence longer
than `task_max_length` (128, as the reference's `get_token_classification_getter`) becomes
several windows of at most that many subwords (`long_sentences="windows"`, the reference's
`return_overflowing_tokens`), cut at word boundaries so that each word is labelled in exactly one
window; the windows are the training examples (as in the reference) and decoding stitches them
back into whole sentences. `long_sentences="truncate"` drops the words beyond instead: they are
neither trained on nor scored. Sentences and sentence pairs (NLI) are truncated to
`nli_max_length` (256, the reference's `get_xnli`), with no deletion of lone pieces (the
reference's `XNLIMapper` tokenises the raw text as is).

Featurisation happens once per dataset (`featurize`), into flat token tensors plus offsets, one
row per window (`Features.example` says whose); `Features.collate` pads a batch dynamically to its
longest row.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Literal, Mapping, Sequence

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from trainables.encoding import IGNORE_INDEX, encode_words, first_subword_labels
from trainables.ner import postprocess_predictions, preprocess_wikiann
from trainables.settings import Settings
from trainables.registry import lookup

# The label sets, in the hub's ClassLabel order (WikiANN's ner_tags, MultiNLI's and XNLI's label),
# which is also the order of the classification heads' outputs.
UPOS_TAGS: tuple[str, ...] = (
    "ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM",
    "PART", "PRON", "PROPN", "PUNCT", "SCONJ", "SYM", "VERB", "X",
)
# The reference read UD through the hub's universal_dependencies loader, which yields multiword-token
# lines (UPOS "_") as words: its udpos head had 18 labels (datasets/dispatch_datasets.py).
MULTIWORD_LABEL = "_"
UD_LABELS: tuple[str, ...] = (*UPOS_TAGS, MULTIWORD_LABEL)
WIKIANN_TAGS: tuple[str, ...] = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")
NLI_LABELS: tuple[str, ...] = ("entailment", "neutral", "contradiction")
FEATURIZE_CHUNK = 1024  # examples tokenised per call (bounds the padded chunk's memory)
# Bumped whenever featurisation changes what it stores (2: lone "▁" deletion, windows, Features.example).
FEATURES_VERSION = 2
PAD_TOKEN_TYPE = 0
# Zero-shot transfer (paper §3.1): training and development data in the source language only,
# test sets in it and in every target language.
SOURCE_LANG = "en"
TEST_SPLIT = "test"

# How `Features` stores labels: "token", flat like the tokens (IGNORE_INDEX where unscored);
# "sequence", one label per row.
TaskKind = Literal["token", "sequence"]
Metric = Callable[[Sequence[Sequence[str]], Sequence[Sequence[str]]], float]
Predictions = tuple[list[list[str]], list[list[str]]]  # (gold, predicted) label strings per example


# --------------------------------------------------------------------------------------------
# Metrics: gold and predicted label strings, one list per example (one element for NLI)


def accuracy(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> float:
    """Fraction of correct labels over all words (token tasks) or examples (one label each)."""
    total = sum(len(g) for g in gold)
    if total == 0:
        raise ValueError("accuracy of an empty evaluation set")
    correct = sum(g == p for gs, ps in zip(gold, predicted) for g, p in zip(gs, ps))
    return correct / total


def entity_f1(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> float:
    """Entity-level micro F1, seqeval default (conlleval-compatible) mode; see module docstring."""
    # Imported here: seqeval pulls in scikit-learn and scipy.stats (~0.5 s), which only NER needs.
    from seqeval.metrics import f1_score as seqeval_f1_score

    return float(seqeval_f1_score([list(g) for g in gold], [list(p) for p in predicted], zero_division=0))


# --------------------------------------------------------------------------------------------
# Featurised data


@dataclass
class Features:
    """A featurised dataset: per-row token sequences stored flat, padded only when batched.

    A row is one window of an example (token tasks: a long sentence has several, in word order,
    consecutive), or one example. `tokens[name][offsets[i]:offsets[i+1]]` is column `name`
    (input_ids, token_type_ids, ...) of row i, `example[i]` the index of its example (ascending).
    `kind` is the label layout (`TaskKind`): "token", `labels` flat like the tokens; "sequence",
    one label per row. `len()` counts rows: training draws rows, as the reference trains on its
    overflow windows.
    """

    kind: TaskKind
    tokens: dict[str, torch.Tensor]
    offsets: torch.Tensor  # (n + 1,) long
    labels: torch.Tensor
    pad_token_id: int
    example: torch.Tensor | None = None  # (n,) long; None: row i is example i
    n_examples: int | None = None  # None: one past the last row's example
    lengths: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.lengths = (self.offsets[1:] - self.offsets[:-1]).numpy()
        if self.example is None:
            self.example = torch.arange(len(self.lengths))
        if self.n_examples is None:
            self.n_examples = int(self.example[-1]) + 1 if len(self.example) else 0

    def __len__(self) -> int:
        return len(self.lengths)

    def collate(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """Model inputs for these examples, padded to the longest of them, with `labels`."""
        starts = self.offsets[list(indices)].tolist()
        stops = self.offsets[[i + 1 for i in indices]].tolist()
        batch: dict[str, torch.Tensor] = {}
        for name, flat in self.tokens.items():
            pad = self.pad_token_id if name == "input_ids" else PAD_TOKEN_TYPE
            batch[name] = pad_sequence([flat[a:b] for a, b in zip(starts, stops)], batch_first=True, padding_value=pad)
        lengths = torch.tensor([b - a for a, b in zip(starts, stops)])
        batch["attention_mask"] = (torch.arange(int(lengths.max())) < lengths.unsqueeze(1)).long()
        if self.kind == "token":
            batch["labels"] = pad_sequence(
                [self.labels[a:b] for a, b in zip(starts, stops)], batch_first=True, padding_value=IGNORE_INDEX
            )
        else:
            batch["labels"] = self.labels[list(indices)]
        return batch


def _flatten_rows(padded: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return padded[mask.bool()]  # row-major: example 0's tokens, then example 1's, ...


def _features(
    kind: TaskKind,
    columns: Mapping[str, list[torch.Tensor]],
    labels: torch.Tensor,
    lengths: list[torch.Tensor],
    tokenizer: PreTrainedTokenizerBase,
    example: torch.Tensor | None = None,
    n_examples: int | None = None,
) -> Features:
    all_lengths = torch.cat(lengths) if lengths else torch.zeros(0, dtype=torch.long)
    offsets = torch.cat((torch.zeros(1, dtype=torch.long), torch.cumsum(all_lengths, 0)))
    tokens = {name: torch.cat(parts) for name, parts in columns.items()}
    return Features(kind, tokens, offsets, labels, int(tokenizer.pad_token_id), example, n_examples)


# --------------------------------------------------------------------------------------------
# Tasks


@dataclass(frozen=True, eq=False)
class Task:
    """One downstream task: everything the pipeline needs to know about it (module docstring).

    `sources` maps each split to the data source that holds it (`trainables.data.DATA_SOURCES`);
    "train" and "test" are required, "dev" is read for `ctl_reference_split="dev"`. The readers
    check every label against `labels`, whose order is that of the classification head's outputs.
    Hooks, None for tasks without them: `preprocess(examples, lang, settings)` rewrites the loaded
    examples before featurisation (WikiANN zh: characters -> words); `postprocess(predicted,
    settings)` rewrites predicted label sequences before the metric (WikiANN: the reference's IOB2
    repair). See trainables/ner.py.

    A subclass (a building block) implements `featurize` and `decode` and sets `kind` (its
    `Features` label layout) and the default `model_class`.
    """

    name: str
    labels: tuple[str, ...]
    metric: Metric
    metric_name: str
    sources: Mapping[str, str]
    preprocess: Callable[[list[dict], str, Settings], list[dict]] | None = None
    postprocess: Callable[[list[list[str]], Settings], list[list[str]]] | None = None
    model_class: Any = None  # a transformers Auto* class with `from_pretrained` / `from_config`

    kind: ClassVar[TaskKind]

    def __post_init__(self) -> None:
        if not self.labels or len(set(self.labels)) != len(self.labels):
            raise ValueError(f"task {self.name!r}: labels must be distinct and at least one, got {self.labels!r}")
        missing = [split for split in ("train", TEST_SPLIT) if split not in self.sources]
        if missing:
            raise ValueError(f"task {self.name!r}: no data source for split(s) {', '.join(missing)}")
        if self.model_class is None:
            raise ValueError(f"task {self.name!r}: no model_class")

    @property
    def label_to_id(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels)}

    def model_kwargs(self) -> dict[str, Any]:
        """`from_pretrained`/config arguments that size and name the classification head."""
        return {
            "num_labels": len(self.labels),
            "id2label": dict(enumerate(self.labels)),
            "label2id": self.label_to_id,
        }

    def load_model(self, path: str, **kwargs: Any) -> PreTrainedModel:
        return self.model_class.from_pretrained(path, **self.model_kwargs(), **kwargs)

    def feature_key(self) -> dict[str, Any]:
        """What of the entry its featurised data depends on, for the features cache key: another
        label set, block or preprocess hook under the same name must not reuse its features."""
        hook = self.preprocess
        return {"name": self.name, "block": type(self).__name__, "labels": list(self.labels),
                "preprocess": None if hook is None else f"{hook.__module__}.{hook.__qualname__}"}

    def data_needs(self, targets: Sequence[str]) -> list[tuple[str, str]]:
        """(split, language) of every file set a trial over `targets` reads: each split but the test
        split in the source language, the test split in it and every target language."""
        needs = [(split, SOURCE_LANG) for split in self.sources if split != TEST_SPLIT]
        return needs + [(TEST_SPLIT, lang) for lang in (SOURCE_LANG, *(t for t in targets if t != SOURCE_LANG))]

    def _label_ids(self, values: Sequence[str], where: str) -> list[int]:
        table = self.label_to_id
        try:
            return [table[v] for v in values]
        except KeyError:
            bad = next(v for v in values if v not in table)
            raise ValueError(f"{where}: label {bad!r} is not a {self.name} label ({', '.join(self.labels)})") from None

    def featurize(
        self, tokenizer: PreTrainedTokenizerBase, examples: Sequence[Mapping[str, Any]], settings: Settings
    ) -> Features:
        """Tokenise the examples once, labels as ids (see the building blocks)."""
        raise NotImplementedError(f"task {self.name!r}: {type(self).__name__} does not featurize")

    def batch_predictions(self, outputs: Any) -> torch.Tensor:
        """What is kept of a batch's model outputs (on the device): the best label of each position."""
        return outputs.logits.argmax(-1)

    def decode(
        self, features: Features, batches: Sequence[np.ndarray], predictions: Sequence[torch.Tensor]
    ) -> Predictions:
        """(gold, predicted) label strings per example, in example order, from `batch_predictions`
        of the row batches `batches` (any order of rows)."""
        raise NotImplementedError(f"task {self.name!r}: {type(self).__name__} does not decode")


@dataclass(frozen=True, eq=False)
class TokenTagging(Task):
    """One label per word: examples {"words": [...], "labels": [...]}; a word's label on its first
    subword, long sentences as windows (module docstring); predictions one label per word."""

    model_class: Any = AutoModelForTokenClassification
    kind: ClassVar[TaskKind] = "token"

    def featurize(
        self, tokenizer: PreTrainedTokenizerBase, examples: Sequence[Mapping[str, Any]], settings: Settings
    ) -> Features:
        columns: dict[str, list[torch.Tensor]] = {}
        labels, lengths, example_of_row = [], [], []
        for start in range(0, len(examples), FEATURIZE_CHUNK):
            chunk = examples[start : start + FEATURIZE_CHUNK]
            words, label_ids = [], []
            for i, example in enumerate(chunk, start):
                if len(example["words"]) != len(example["labels"]):
                    raise ValueError(
                        f"{self.name} example {i}: {len(example['words'])} words but {len(example['labels'])} labels"
                    )
                words.append(example["words"])
                label_ids.append(self._label_ids(example["labels"], f"{self.name} example {i}"))
            encoded = encode_words(
                tokenizer, words, settings.task_max_length,
                keep_lone_prefix=settings.keep_lone_prefix, lone_prefix_takes_room=settings.lone_prefix_takes_room,
                windows=settings.long_sentences == "windows",
            )
            mask = encoded.inputs["attention_mask"]
            for name, values in encoded.inputs.items():
                if name != "attention_mask":
                    columns.setdefault(name, []).append(_flatten_rows(values, mask))
            # A window row carries its sentence's labels; only its own words' land on a subword.
            row_labels = [label_ids[i] for i in encoded.sentence.tolist()]
            labels.append(_flatten_rows(first_subword_labels(encoded, row_labels), mask))
            lengths.append(mask.sum(1))
            example_of_row.append(encoded.sentence + start)
        return _features(
            self.kind, columns, torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long), lengths, tokenizer,
            example=torch.cat(example_of_row) if example_of_row else torch.zeros(0, dtype=torch.long),
            n_examples=len(examples),
        )

    def decode(
        self, features: Features, batches: Sequence[np.ndarray], predictions: Sequence[torch.Tensor]
    ) -> Predictions:
        """One label per word, in word order; a sentence featurised as several windows is stitched
        back, each word scored in the one window that labels it, so the metric (seqeval for NER)
        sees whole sentences. With `long_sentences="truncate"` the words cut off are missing from
        both lists."""
        # Scatter every row's predictions into the flat token layout of `features.labels`: rows are
        # stored by example then window, so the labelled tokens come out in example and word order.
        predicted_flat = torch.full_like(features.labels, IGNORE_INDEX)
        for indices, argmax in zip(batches, predictions):
            argmax = argmax.cpu()
            columns = torch.arange(argmax.shape[1])
            valid = columns < torch.from_numpy(features.lengths[indices]).unsqueeze(1)
            positions = features.offsets[torch.from_numpy(indices)].unsqueeze(1) + columns
            predicted_flat[positions[valid]] = argmax[valid]
        scored = features.labels != IGNORE_INDEX
        row_of_token = torch.repeat_interleave(torch.arange(len(features)), torch.from_numpy(features.lengths))
        per_example = torch.bincount(features.example[row_of_token[scored]], minlength=features.n_examples)
        bounds = [0, *torch.cumsum(per_example, 0).tolist()]
        names = self.labels
        gold_names = [names[j] for j in features.labels[scored].tolist()]
        predicted_names = [names[j] for j in predicted_flat[scored].tolist()]
        gold = [gold_names[a:b] for a, b in zip(bounds, bounds[1:])]
        return gold, [predicted_names[a:b] for a, b in zip(bounds, bounds[1:])]


@dataclass(frozen=True, eq=False)
class SentenceClassification(Task):
    """One label per example: examples {text_fields..., "label"}, one text field (a sentence) or
    two (a pair, tokenised as the tokenizer's pair template), truncated to `nli_max_length`;
    predictions one label per example."""

    model_class: Any = AutoModelForSequenceClassification
    text_fields: tuple[str, ...] = ("premise", "hypothesis")
    kind: ClassVar[TaskKind] = "sequence"

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.text_fields) not in (1, 2):
            raise ValueError(f"task {self.name!r}: text_fields must name one or two fields, got {self.text_fields!r}")

    def feature_key(self) -> dict[str, Any]:
        return {**super().feature_key(), "text_fields": list(self.text_fields)}

    def featurize(
        self, tokenizer: PreTrainedTokenizerBase, examples: Sequence[Mapping[str, Any]], settings: Settings
    ) -> Features:
        columns: dict[str, list[torch.Tensor]] = {}
        lengths = []
        for start in range(0, len(examples), FEATURIZE_CHUNK):
            chunk = examples[start : start + FEATURIZE_CHUNK]
            encoded = tokenizer(
                *([e[name] for e in chunk] for name in self.text_fields),
                truncation=True,
                max_length=settings.nli_max_length,
            )
            for name, rows in encoded.items():
                if name != "attention_mask":
                    columns.setdefault(name, []).append(torch.tensor([t for row in rows for t in row], dtype=torch.long))
            lengths.append(torch.tensor([len(row) for row in encoded["input_ids"]], dtype=torch.long))
        label_ids = self._label_ids([e["label"] for e in examples], f"{self.name} examples")
        return _features(self.kind, columns, torch.tensor(label_ids, dtype=torch.long), lengths, tokenizer)

    def decode(
        self, features: Features, batches: Sequence[np.ndarray], predictions: Sequence[torch.Tensor]
    ) -> Predictions:
        predicted_rows = torch.empty(len(features), dtype=torch.long)
        for indices, argmax in zip(batches, predictions):
            predicted_rows[torch.from_numpy(indices)] = argmax.cpu()
        names = self.labels
        gold = [[names[j]] for j in features.labels.tolist()]
        return gold, [[names[j]] for j in predicted_rows.tolist()]


_SAME_SPLITS = ("train", "dev", TEST_SPLIT)


def preprocess_ud(examples: list[dict], lang: str, settings: Settings) -> list[dict]:
    """UD's `preprocess` hook: which CoNLL-U lines are words (setting `ud_multiword_tokens`).

    "score" (default, the reference): every line, multiword-token ranges labelled "_" and empty
    nodes included, as the hub's loader gave them (docs/protocol.md, UD multiword tokens);
    "skip": the syntactic words only. The reader marks them ("syntactic", trainables.data.read_conllu).
    """
    keep_all = settings.ud_multiword_tokens == "score"
    rewritten = []
    for example in examples:
        syntactic = example.get("syntactic")
        if keep_all or syntactic is None:
            rewritten.append({"words": example["words"], "labels": example["labels"]})
            continue
        rewritten.append({"words": [w for w, keep in zip(example["words"], syntactic) if keep],
                          "labels": [t for t, keep in zip(example["labels"], syntactic) if keep]})
    return rewritten


TASKS: dict[str, Task] = {
    "udpos": TokenTagging("udpos", UD_LABELS, accuracy, "accuracy", {split: "udpos" for split in _SAME_SPLITS},
                          preprocess=preprocess_ud),
    "wikiann": TokenTagging("wikiann", WIKIANN_TAGS, entity_f1, "f1", {split: "wikiann" for split in _SAME_SPLITS},
                            preprocess=preprocess_wikiann, postprocess=postprocess_predictions),
    # XNLI has no English training set: the paper trains and validates on MultiNLI (App. B).
    "xnli": SentenceClassification("xnli", NLI_LABELS, accuracy, "accuracy",
                                   {"train": "mnli", "dev": "mnli", TEST_SPLIT: "xnli"}),
}


def get_task(task: str | Task) -> Task:
    if isinstance(task, Task):
        return task
    return lookup(TASKS, task, "task")
