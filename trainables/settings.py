"""Every tunable number of a trial, with the paper's values as defaults.

Defaults follow the paper's text where it is explicit (Gaschi et al. 2023, §3.3 and Appendix B.3)
and the reference code's behaviour where the text is silent (docs/protocol.md, one row a choice).
Where the code contradicts the text, the `acl2023-code` preset reproduces the code (realigned
layer off by one, joint weight 0.1, XLM-R learning rate 7.5e-6, ...), so the published numbers
can be matched too.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import os
import re
from dataclasses import dataclass, fields, replace
from typing import Any, Callable, Mapping

from trainables.errors import TrialInputError
from trainables.models import family_from_name, paper_model
from trainables.registry import did_you_mean, unknown_name


# --- what each setting accepts ---------------------------------------------------------------


class _Invalid(Exception):
    """A value a rule rejects; `reason` replaces the rule's "expected ..." when given."""

    def __init__(self, reason: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Rule:
    """The values one setting accepts: `valid` says it in words, `convert` returns the normalised
    value or raises `_Invalid`."""

    valid: str
    convert: Callable[[Any], Any]


def _whole_number(value: Any) -> int:
    # bool is an int subclass: True must not pass for epochs=1.
    if isinstance(value, bool):
        raise _Invalid()
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise _Invalid()


def _real_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise _Invalid()
    return float(value)


def _bounded(convert: Callable[[Any], Any], low: float | None, high: float | None,
             low_open: bool, high_open: bool) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        number = convert(value)
        if low is not None and (number <= low if low_open else number < low):
            raise _Invalid()
        if high is not None and (number >= high if high_open else number > high):
            raise _Invalid()
        return value if number == value and type(number) is type(value) else number

    return check


def _optional(rule: Rule) -> Rule:
    return Rule(f"None or {rule.valid}", lambda value: None if value is None else rule.convert(value))


def whole(low: int | None = None) -> Rule:
    return Rule("a whole number" + (f" >= {low}" if low is not None else ""),
                _bounded(_whole_number, low, None, False, False))


def number(low: float | None = None, high: float | None = None, low_open: bool = False,
           high_open: bool = False) -> Rule:
    if low is not None and high is not None:
        valid = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        valid = f"a number {'>' if low_open else '>='} {low:g}"
    else:
        valid = "a number"
    return Rule(valid, _bounded(_real_number, low, high, low_open, high_open))


def one_of(*choices: str) -> Rule:
    def convert(value: Any) -> str:
        if not isinstance(value, str) or value not in choices:
            raise _Invalid()
        return value

    return Rule("one of " + ", ".join(repr(c) for c in choices), convert)


def flag() -> Rule:
    def convert(value: Any) -> bool:
        if not isinstance(value, bool):  # "false" and 0 are not booleans: no guessing
            raise _Invalid()
        return value

    return Rule("True or False", convert)


def text(what: str = "a non-empty string") -> Rule:
    def convert(value: Any) -> str:
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if not isinstance(value, str) or not value.strip():
            raise _Invalid()
        return value

    return Rule(what, convert)


def _registered(what: str, names: Callable[[], Mapping[str, Any]]) -> Rule:
    """A name in a registry that is looked up only when checked (it may live in a module that
    imports this one)."""

    def convert(value: Any) -> str:
        valid = names()
        if not isinstance(value, str) or value not in valid:
            raise _Invalid(unknown_name(what, value, valid))
        return value

    return Rule(f"a registered {what}", convert)


def _target_languages(value: Any) -> tuple[str, ...]:
    # English is the source language of every trial (§4): the settings name the targets.
    from trainables.data import LANGUAGES

    targets = [lang for lang in LANGUAGES if lang != "en"]
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
        raise _Invalid()
    for lang in value:
        if lang not in targets:
            raise _Invalid(unknown_name("target language", lang, targets))
    if len(set(value)) != len(value):
        raise _Invalid("a language is listed twice")
    return tuple(value)


_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def _device(value: Any) -> str:
    # Only the spelling is checked here; whether that device exists is the engine's check.
    if not isinstance(value, str) or not _DEVICE.fullmatch(value):
        raise _Invalid()
    return value


def _pair_sources() -> Mapping[str, Any]:
    from trainables.pairs import PAIR_SOURCES

    return PAIR_SOURCES


# Subwords per sequence: at least the two special tokens and one subword.
MIN_MAX_LENGTH = 3
LENGTH = whole(MIN_MAX_LENGTH)
POSITIVE = whole(1)
SEED = whole(0)
PATH = _optional(text("a path"))

# How the `fastalign` pair source runs fast_align (trainables.pairs.fastalign_backend), the default first.
FASTALIGN_BACKENDS: tuple[str, ...] = ("numpy", "auto", "systran-align", "fast_align")

SETTING_RULES: dict[str, Rule] = {
    "data_dir": PATH,
    "cache_dir": PATH,
    "langs": Rule("a non-empty list of target languages", _target_languages),
    "train_subset": _optional(POSITIVE),
    "test_subset": _optional(POSITIVE),
    "parallel_subset": _optional(POSITIVE),
    "parallel_sample": _optional(POSITIVE),
    "subset_mode": one_of("first", "random"),
    "subset_seed": SEED,
    "epochs": POSITIVE,
    "batch_size": POSITIVE,
    "micro_batch_size": POSITIVE,
    "learning_rate": number(0, low_open=True),
    "warmup_ratio": number(0, 1, high_open=True),
    "weight_decay": number(0),
    "max_grad_norm": _optional(number(0, low_open=True)),
    "schedule_micro_batch_size": _optional(POSITIVE),
    "task_max_length": LENGTH,
    "nli_max_length": LENGTH,
    "long_sentences": one_of("windows", "truncate"),
    "keep_lone_prefix": flag(),
    "lone_prefix_takes_room": flag(),
    "ner_post_processing": flag(),
    "ner_zh_words": flag(),
    "ctl_reference_split": one_of("test", "dev"),
    "eval_batch_size": POSITIVE,
    "length_group_factor": POSITIVE,
    "align_pairs": whole(2),  # nearest-neighbour search needs at least two candidates
    "align_seed": SEED,
    "align_pooling": one_of("first", "mean"),
    "align_batch_size": POSITIVE,
    "align_max_length": _optional(LENGTH),
    "align_max_length_before": _optional(LENGTH),
    "align_sampling": one_of("sentences", "uniform"),
    "eval_pairs": _optional(_registered("pair source", _pair_sources)),
    "eval_corpus": _optional(text("a corpus name")),  # registered or a local folder: checked with the data
    "realign_batch_size": POSITIVE,
    "realign_max_length": LENGTH,
    "realign_temperature": number(0, low_open=True),
    "realign_layer": whole(),  # an index into hidden_states; its range is checked against the model
    "realign_projection": flag(),
    "realign_projection_dim": POSITIVE,
    "joint_weight": number(0),
    "joint_realign_stream": one_of("restart", "continue"),
    "realign_steps": _optional(POSITIVE),
    "realign_schedule": one_of("linear", "constant"),
    "dico_lowercase": flag(),
    "ud_multiword_tokens": one_of("score", "skip"),
    "muse_reverse_file": one_of("en-x-copy", "x-en"),
    "awesome_model": text("a model folder or hub id"),
    "awesome_layer": whole(0),
    "awesome_threshold": number(0, 1, high_open=True),
    "fastalign_backend": one_of(*FASTALIGN_BACKENDS),
    "device": Rule("one of 'auto', 'cpu', 'cuda', 'cuda:N', 'mps'", _device),
    "precision": one_of("tf32", "fp32", "bf16"),
    "num_threads": _optional(POSITIVE),
    "sparse_embedding_updates": flag(),
    "preset": _registered("preset", lambda: PRESETS),
}


def check_setting(name: str, value: Any) -> Any:
    """`value` normalised for setting `name`, or one `TrialInputError` line naming the setting
    and what is valid."""
    rule = SETTING_RULES.get(name)
    if rule is None:
        if name in SETTING_NAMES:  # a field added without its rule: a programming error
            raise TypeError(f"setting {name} has no rule in trainables.settings.SETTING_RULES")
        raise unknown_setting_error(name)
    try:
        return rule.convert(value)
    except _Invalid as invalid:
        shown = repr(value)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise TrialInputError(f"setting {name}={shown}: {invalid.reason or 'expected ' + rule.valid}") from None


@dataclass(frozen=True)
class Settings:
    # --- data -------------------------------------------------------------------------------
    data_dir: str | None = None  # local files; else $SWEEP_DATA_DIR; else the hub
    cache_dir: str | None = None  # shared work (pairs, tokenised data, alignment); else $SWEEP_CACHE_DIR
    langs: tuple[str, ...] = ("ar", "es", "fr", "ru", "zh")
    train_subset: int | None = None  # first/random N training examples (None: all)
    test_subset: int | None = None  # per language
    parallel_subset: int | None = None  # sentence pairs per language
    # Realignment corpora: a seeded reservoir sample of this many sentence pairs a language, taken
    # before parallel_subset (the reference's 1M for multiUN; None: the whole corpus).
    parallel_sample: int | None = 1_000_000
    subset_mode: str = "first"  # "first" or "random" (seeded by subset_seed)
    subset_seed: int = 0

    # --- fine-tuning (App. B.3: Adam 2e-5, linear decay, 10% warm-up, batch 32, 5 epochs) -----
    epochs: int = 5
    batch_size: int = 32  # examples per optimizer step
    micro_batch_size: int = 32  # examples per forward pass; < batch_size means accumulation
    learning_rate: float = 2e-5
    warmup_ratio: float = 0.1  # of optimizer steps (the code counted micro-batches: a bug)
    weight_decay: float = 0.0
    max_grad_norm: float | None = None  # neither the paper nor the reference code clips
    # None: warm-up and linear decay over this run's optimizer steps (App. B.3). A number k: the
    # reference's schedule (training_loops.realignment_training_loop), sized in micro-batches of k
    # examples with 5 epochs hard-coded: warm-up int(warmup_ratio * 5 * m) optimizer steps, zero
    # learning rate at 5 * m, m = ceil(n_train / k) (set by the acl2023-code preset).
    schedule_micro_batch_size: int | None = None
    task_max_length: int = 128  # token tasks: subwords per window (long sentences: several windows)
    nli_max_length: int = 256  # sentence-pair tasks: premise + hypothesis, truncated (reference: 256)
    # Token tasks: "windows" splits a sentence longer than task_max_length into overflow windows so
    # that every word is trained on and scored (the reference); "truncate" drops the words beyond.
    long_sentences: str = "windows"
    # XLM-R tokenizers: the reference deletes the lone "▁" ids from the model's input; True keeps
    # them in the input (they are then only skipped when pooling).
    keep_lone_prefix: bool = False
    # The reference truncates to a length limit first and deletes the lone pieces afterwards, so
    # they take room in the limit (alignment 128, realignment 96, task windows 128); False deletes
    # them first, so that room holds more words.
    lone_prefix_takes_room: bool = True
    # NER: the reference post-processes predictions before seqeval (Wu & Dredze's rule).
    ner_post_processing: bool = True
    # WikiANN zh test is one character per token: re-segment into words (jieba), labels realigned.
    ner_zh_words: bool = True
    # CTL's English score: the reference used the test set (Eq. 1 says the development set).
    ctl_reference_split: str = "test"
    # UD: "score" reads every CoNLL-U line as a word, multiword-token ranges labelled "_", as the
    # reference's hub loader did; "skip" reads the syntactic words only (tasks.preprocess_ud).
    ud_multiword_tokens: str = "score"
    eval_batch_size: int = 64
    # Batch composition. 1 (default): each epoch's examples shuffled, batches of randomly mixed
    # lengths, as the reference's shuffled DataLoader. N > 1: length grouping, a speed choice of
    # ours: the shuffled examples cut into chunks of N * batch_size, sorted by length inside a
    # chunk (less padding, but batches of similar lengths weight the loss differently).
    length_group_factor: int = 1

    # --- alignment measurement (Gaschi et al. 2022; docs/protocol.md) --------------------------------
    align_pairs: int = 1000
    align_seed: int = 42
    align_pooling: str = "first"  # "first" subword (paper) or "mean" of subwords
    align_batch_size: int = 64  # sentences per forward pass
    # Subwords per sentence when measuring, pairs beyond never sampled. After fine-tuning: None,
    # the tokenizer's limit; before it (the pre-trained and the realigned model): 128. Both the
    # reference's (scripts/2023_acl/finetuning_and_alignment.py).
    align_max_length: int | None = None
    align_max_length_before: int | None = 128
    # "sentences" (the reference): shuffled sentences taken whole, with all their pairs, until
    # align_pairs; "uniform": align_pairs pairs drawn uniformly from all pairs.
    align_sampling: str = "sentences"
    # `none` trials measure alignment on these (None: the first pair source / corpus of their grid),
    # so that `none` under several pair sources or corpora is one trial.
    eval_pairs: str | None = None
    eval_corpus: str | None = None

    # --- realignment (§3.3 Eq. 2, App. B.3) -----------------------------------------------------
    realign_batch_size: int = 16  # translated sentence pairs per realignment batch
    realign_max_length: int = 96
    realign_temperature: float = 0.1
    realign_layer: int = -1  # index into hidden_states (0 = embeddings); -1 = last layer output
    # Wu & Dredze's Linear-ReLU-Linear head on the realigned vectors (the "framework of Chen et al.
    # (2020)", §3.3): the reference's default (realignment_transformation=[hidden, 128]).
    realign_projection: bool = True
    realign_projection_dim: int = 128
    joint_weight: float = 1.0  # Eq. 3: L = L_task + w * L_realign (code: 0.1)
    # `joint`: "restart" reads the realignment stream from its start at every epoch, as the
    # reference's epoch loop did (so 5 epochs see one epoch's batches 5 times); "continue" reads on.
    joint_realign_stream: str = "restart"
    realign_steps: int | None = None  # `before`: None = as many as fine-tuning optimizer steps
    # `before`: "linear" warm-up and decay like fine-tuning; "constant": plain Adam at
    # learning_rate with no schedule (the reference code).
    realign_schedule: str = "linear"

    # --- word aligners ----------------------------------------------------------------------
    # dico: False looks tokens up as written, case-sensitive, identical entries dropped before
    # matching (the reference); True lowercases and drops identical pairs after matching.
    dico_lowercase: bool = False
    # dico: the file read as X-en. "en-x-copy": the en-X file, as the reference's download script
    # saved it (its maps hold en-X entries both ways round); "x-en": MUSE's real X-en file.
    # Equal to data.MUSE_REVERSE_FILE_DEFAULT, the default of direct calls (a test checks).
    muse_reverse_file: str = "en-x-copy"
    awesome_model: str = "aneuraz/awesome-align-with-co"  # AWESOME's fine-tuned aligner (pairs.py)
    awesome_layer: int = 8
    awesome_threshold: float = 1e-3
    # How fast_align runs (trainables.pairs.fastalign_backend): "numpy", our re-implementation, the
    # same links as clab/fast_align's programs (the reference's) in bounded memory; "systran-align"
    # (links differently); "fast_align" (the programs on PATH); "auto" (systran-align, else the programs).
    fastalign_backend: str = FASTALIGN_BACKENDS[0]

    # --- runtime ------------------------------------------------------------------------------
    device: str = "auto"  # "auto": cuda if available
    # "tf32": fp32 with TF32 matmuls on GPU, as the reference computed (runtime.autocast); "fp32":
    # full fp32 matmuls; "bf16": bf16 autocast on GPU and CPU, faster, not the reference's numbers.
    precision: str = "tf32"
    num_threads: int | None = None  # torch intra-op threads (None: torch's default)
    # Word embeddings: sparse gradients and AdamW on the rows that ever had a gradient, the others
    # being rows AdamW leaves unchanged (exact with weight decay 0: trainables/optimizer.py);
    # False: the dense gradient and update of the whole matrix (same numbers up to rounding).
    sparse_embedding_updates: bool = True
    preset: str = "paper"

    def __post_init__(self) -> None:
        # Values come from experiment files, `--set KEY=VALUE` (Python literals) and Ray configs:
        # each is checked against its rule, and normalised (a list of languages becomes a tuple,
        # 5.0 epochs becomes 5) so that equal settings compare and hash equal.
        for item in fields(self):
            value = getattr(self, item.name)
            normalised = check_setting(item.name, value)
            if normalised is not value:
                object.__setattr__(self, item.name, normalised)
        if self.batch_size % self.micro_batch_size:
            raise TrialInputError(
                f"setting micro_batch_size={self.micro_batch_size} must divide batch_size={self.batch_size}"
            )

    @property
    def accumulation(self) -> int:
        return self.batch_size // self.micro_batch_size

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SETTING_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Settings))


def _acl2023_code(settings: Settings, model: str) -> Settings:
    """The reference code's choices where they differ from the paper's text (docs/protocol.md).

    Realigned layer hidden_states[-2] (its off-by-one), joint weight 0.1, the projection head,
    the reference scripts' learning rate for the model's family (7.5e-6 for XLM-R, recognised by
    "roberta" in the model name as the scripts tested it: trainables/models.py),
    sequential realignment at a constant learning rate (plain Adam, no scheduler), the fine-tuning
    schedule sized in the reference's micro-batches over 5 epochs. (Its batches of randomly mixed
    lengths and its fp32 arithmetic with TF32 matmuls are the defaults already.)
    The micro-batch sizes are those of `--large_gpu` (the A40 of experiment 1 and of XLM-R large);
    experiment 2's smaller models ran on small GPUs (8, 4, 2 for distilmBERT, mBERT, XLM-R base):
    set schedule_micro_batch_size to those to reproduce that schedule.
    """
    # The reference's forward-pass batch for the paper's models (the full batch for any other).
    paper = paper_model(model)
    code_micro_batch = paper.code_micro_batch_size if paper is not None else settings.batch_size
    changes: dict[str, Any] = dict(
        realign_layer=-2, joint_weight=0.1, realign_projection=True, realign_schedule="constant",
        schedule_micro_batch_size=min(code_micro_batch, settings.batch_size),
    )
    family = family_from_name(model)
    if family is not None and family.code_learning_rate is not None:
        changes["learning_rate"] = family.code_learning_rate
    return replace(settings, **changes)


PRESETS = {
    "paper": lambda settings, model: settings,
    "acl2023-code": _acl2023_code,
}


def unknown_setting_error(name: str, where: str = "settings") -> ValueError:
    return TrialInputError(f"unknown key {name!r} in {where}{did_you_mean(name, SETTING_NAMES)}; "
                      f"valid keys: {', '.join(SETTING_NAMES)}")


def make_settings(values: Mapping[str, Any], model: str = "", where: str = "settings") -> Settings:
    """Settings from a plain mapping (experiment file, Ray config), preset applied for `model`."""
    for name in values:
        if name not in SETTING_NAMES:
            raise unknown_setting_error(name, where)
    settings = Settings(**values)  # __post_init__ checks and normalises every value
    return PRESETS[settings.preset](settings, model)
