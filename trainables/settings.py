"""Every tunable number of a trial, with the paper's values as defaults.

Defaults follow the paper's text (Gaschi et al. 2023, §3.3 and Appendix B.3). Where the
reference code did something else, the `acl2023-code` preset reproduces the code (PAPER-NOTES:
realigned layer off by one, joint weight 0.1, projection head, XLM-R learning rate 7.5e-6), so
the published numbers can be matched too.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping

from trainables.registry import did_you_mean


@dataclass(frozen=True)
class Settings:
    # --- data -------------------------------------------------------------------------------
    data_dir: str | None = None  # local files; else $SWEEP_DATA_DIR; else the hub
    cache_dir: str | None = None  # shared work (pairs, tokenised data, alignment); else $SWEEP_CACHE_DIR
    langs: tuple[str, ...] = ("ar", "es", "fr", "ru", "zh")
    train_subset: int | None = None  # first/random N training examples (None: all)
    test_subset: int | None = None  # per language
    parallel_subset: int | None = None  # sentence pairs per language
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
    task_max_length: int = 128  # token tasks: subwords per window (long sentences: several windows)
    nli_max_length: int = 256  # sentence-pair tasks: premise + hypothesis, truncated (reference: 256)
    # Token tasks: "windows" splits a sentence longer than task_max_length into overflow windows so
    # that every word is trained on and scored (the reference); "truncate" drops the words beyond.
    long_sentences: str = "windows"
    # XLM-R tokenizers: the reference deletes the lone "▁" ids from the model's input; True keeps
    # them in the input (they are then only skipped when pooling).
    keep_lone_prefix: bool = False
    # NER: the reference post-processes predictions before seqeval (Wu & Dredze's rule).
    ner_post_processing: bool = True
    # WikiANN zh test is one character per token: re-segment into words (jieba), labels realigned.
    ner_zh_words: bool = True
    # CTL's English score: the reference used the test set (Eq. 1 says the development set).
    ctl_reference_split: str = "test"
    eval_batch_size: int = 64
    # Length grouping (speed only): each epoch's shuffled examples are cut into chunks of
    # length_group_factor * batch_size, sorted by length inside a chunk (less padding).
    length_group_factor: int = 50

    # --- alignment measurement (Gaschi et al. 2022; PAPER-NOTES) --------------------------------
    align_pairs: int = 1000
    align_seed: int = 42
    align_pooling: str = "first"  # "first" subword (paper) or "mean" of subwords
    align_batch_size: int = 64  # sentences per forward pass
    # None: the tokenizer's limit, so that no sampled pair is lost to a length limit.
    align_max_length: int | None = None
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
    realign_projection: bool = False  # Wu & Dredze's Linear-ReLU-Linear head
    realign_projection_dim: int = 128
    joint_weight: float = 1.0  # Eq. 3: L = L_task + w * L_realign (code: 0.1)
    realign_steps: int | None = None  # `before`: None = as many as fine-tuning optimizer steps
    # `before`: "linear" warm-up and decay like fine-tuning; "constant": plain Adam at
    # learning_rate with no schedule (the reference code).
    realign_schedule: str = "linear"

    # --- word aligners ----------------------------------------------------------------------
    # dico: False looks tokens up as written, case-sensitive, identical entries dropped before
    # matching (the reference); True lowercases and drops identical pairs after matching.
    dico_lowercase: bool = False
    awesome_model: str = "bert-base-multilingual-cased"
    awesome_layer: int = 8
    awesome_threshold: float = 1e-3

    # --- runtime ------------------------------------------------------------------------------
    device: str = "auto"  # "auto": cuda if available
    precision: str = "auto"  # "auto": bf16 autocast on GPU, fp32 on CPU; or "fp32" / "bf16"
    num_threads: int | None = None  # torch intra-op threads (None: torch's default)
    preset: str = "paper"

    def __post_init__(self) -> None:
        if self.micro_batch_size > self.batch_size or self.batch_size % self.micro_batch_size:
            raise ValueError(
                f"setting micro_batch_size={self.micro_batch_size} must divide batch_size={self.batch_size}"
            )
        if self.subset_mode not in ("first", "random"):
            raise ValueError(f"setting subset_mode={self.subset_mode!r}: valid are 'first', 'random'")
        if self.align_pooling not in ("first", "mean"):
            raise ValueError(f"setting align_pooling={self.align_pooling!r}: valid are 'first', 'mean'")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"setting precision={self.precision!r}: valid are 'auto', 'fp32', 'bf16'")
        if self.preset not in PRESETS:
            raise ValueError(f"setting preset={self.preset!r}: valid are {', '.join(PRESETS)}")

    @property
    def accumulation(self) -> int:
        return self.batch_size // self.micro_batch_size

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SETTING_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Settings))

XLMR_CODE_LEARNING_RATE = 7.5e-6  # what the reference code used for XLM-R models


def _acl2023_code(settings: Settings, model: str) -> Settings:
    """The reference code's choices (PAPER-NOTES, "What the ACL code does")."""
    changes: dict[str, Any] = dict(realign_layer=-2, joint_weight=0.1, realign_projection=True)
    if "xlm-roberta" in model.lower():
        changes["learning_rate"] = XLMR_CODE_LEARNING_RATE
    return replace(settings, **changes)


PRESETS = {
    "paper": lambda settings, model: settings,
    "acl2023-code": _acl2023_code,
}


def unknown_setting_error(name: str, where: str = "settings") -> ValueError:
    return ValueError(f"unknown key {name!r} in {where}{did_you_mean(name, SETTING_NAMES)}; "
                      f"valid keys: {', '.join(SETTING_NAMES)}")


def make_settings(values: Mapping[str, Any], model: str = "", where: str = "settings") -> Settings:
    """Settings from a plain mapping (experiment file, Ray config), preset applied for `model`."""
    for name in values:
        if name not in SETTING_NAMES:
            raise unknown_setting_error(name, where)
    clean = {k: (tuple(v) if k == "langs" else v) for k, v in values.items()}
    settings = Settings(**clean)
    return PRESETS[settings.preset](settings, model)
