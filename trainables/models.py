"""Model families: what the science needs to know about an encoder's architecture, in one entry.

Every module that reads a model's internals asks its family (`model_family(model)`, looked up
from the config's `model_type`) instead of assuming BERT:

* its hidden states: all layers as one (L+1, B, T, H) stack, index 0 = the embeddings, index L =
  the last layer's output (alignment at every layer, §3.2; the realigned layer, §3.3; AWESOME's
  layer 8), from the inputs the architecture accepts (DistilBERT has no token_type_ids);
* its layer count L, read from the config;
* the encoder that realignment trains (`model.base_model`: the encoder under a task head);
* its tokenizer's sub-word convention: whether lone "▁" pieces are deleted from the input, so
  that a word's first subword is a real piece (the reference deletes them for XLM-R's tokenizer:
  `LabelAlignmentMapper` in datasets/label_alignment.py, see trainables/encoding.py);
* what the reference scripts did differently for it (XLM-R: learning rate 7.5e-6, chosen by
  `"roberta" in model_name` in scripts/2023_acl/finetuning_and_alignment.py).

A model whose `model_type` no family claims gets a generic family built from its transformers
config (layer count `num_hidden_layers`, the inputs its `forward` names), unless that config
cannot give a (L+1)-stack of encoder states (encoder-decoder models, no layer count): then
`model_family` fails with one line. Adding a family = one `ModelFamily` entry (or a subclass
overriding `layer_outputs`) passed to `register_family`.

The paper's four models are listed once, in `PAPER_MODELS`; the sweep, the experiment files, the
presets and the analysis read that list.

torch is imported inside the methods only: the analysis imports `PAPER_MODELS` without it.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from trainables.registry import unknown_name

if TYPE_CHECKING:
    import torch
    from torch import nn
    from transformers import PretrainedConfig, PreTrainedTokenizerBase


# --------------------------------------------------------------------------------------------
# Families


def check_layer(layer: int, num_layers: int, setting: str = "layer") -> int:
    """`layer` as an index into the L+1 hidden states (0 = embeddings, -1 = the last layer's
    output), or one ValueError line naming the setting and the valid range."""
    if not -(num_layers + 1) <= layer <= num_layers:
        raise ValueError(
            f"setting {setting}={layer} outside {-(num_layers + 1)}..{num_layers}"
            f" ({num_layers + 1} hidden states: embeddings + {num_layers} layers)"
        )
    return layer


@dataclass(frozen=True)
class ModelFamily:
    """One architecture family. Subclass and override `layer_outputs` (or `encoder`,
    `num_layers`) for an architecture whose outputs differ from transformers' BERT-like ones."""

    name: str
    model_types: tuple[str, ...]  # config.model_type values this family claims
    # Encoder inputs the architecture takes; others a tokenizer may produce are dropped.
    # None: the names its `forward` declares (the generic fallback).
    input_names: tuple[str, ...] | None = None
    # Tokenizer classes (names, matched along the class hierarchy like the reference's
    # isinstance test) whose conventions are this family's.
    tokenizer_classes: tuple[str, ...] = ()
    deletes_lone_prefix: bool = False  # lone "▁" pieces deleted from the input (trainables/encoding.py)
    # Substrings of a model's name by which the reference scripts recognised the family (they
    # tested the name, not the config), and the learning rate they then used (None: unchanged).
    name_markers: tuple[str, ...] = ()
    code_learning_rate: float | None = None

    def num_layers(self, config: "PretrainedConfig") -> int:
        """L, the number of transformer layers (hidden states 0..L)."""
        layers = getattr(config, "num_hidden_layers", None)
        if isinstance(layers, bool) or not isinstance(layers, int) or layers < 0:
            raise ValueError(f"model family {self.name!r}: config has no layer count (num_hidden_layers={layers!r})")
        return layers

    def encoder(self, model: "nn.Module") -> "nn.Module":
        """The encoder under a task head, which realignment trains (the head takes no part)."""
        return model.base_model

    def model_inputs(self, module: "nn.Module", inputs: Mapping[str, "torch.Tensor"]) -> dict[str, "torch.Tensor"]:
        """The tokenizer outputs that `module` accepts."""
        names = self.input_names if self.input_names is not None else _forward_parameters(type(module))
        return {name: value for name, value in inputs.items() if name in names}

    def layer_outputs(self, module: "nn.Module", inputs: Mapping[str, "torch.Tensor"]) -> Sequence["torch.Tensor"]:
        """The L+1 hidden states, each (B, T, H), of `module` (an encoder or a task model) on
        `inputs` (already on its device and filtered by `model_inputs`)."""
        return module(**inputs, output_hidden_states=True).hidden_states

    def layer_states(self, module: "nn.Module", inputs: Mapping[str, "torch.Tensor"],
                     device: Any = None) -> Sequence["torch.Tensor"]:
        """The L+1 hidden states, each (B, T, H), 0 = embeddings, from the tokenizer outputs
        `inputs` (filtered by `model_inputs`, moved to `device` if given)."""
        kept = self.model_inputs(module, inputs)
        if device is not None:
            kept = {name: value.to(device) for name, value in kept.items()}
        states = self.layer_outputs(module, kept)
        expected = self.num_layers(module.config) + 1
        if len(states) != expected:  # a family whose reader and layer count disagree
            raise ValueError(f"model family {self.name!r}: {len(states)} hidden states, expected {expected} "
                             "(embeddings + num_layers)")
        return states

    def hidden_states(self, module: "nn.Module", inputs: Mapping[str, "torch.Tensor"],
                      device: Any = None) -> "torch.Tensor":
        """All hidden states as one (L+1, B, T, H) stack, 0 = embeddings; `inputs` moved to
        `device` if given."""
        import torch

        return torch.stack(tuple(self.layer_states(module, inputs, device)))

    def hidden_state(self, module: "nn.Module", inputs: Mapping[str, "torch.Tensor"], layer: int,
                     setting: str = "layer", device: Any = None) -> "torch.Tensor":
        """Hidden state `layer` (checked against the config first, `setting` names it in the
        error), (B, T, H)."""
        check_layer(layer, self.num_layers(module.config), setting)
        return self.layer_states(module, inputs, device)[layer]


def _forward_parameters(cls: type) -> frozenset[str]:
    return frozenset(inspect.signature(cls.forward).parameters)


BERT = ModelFamily(
    "bert", ("bert",), input_names=("input_ids", "attention_mask", "token_type_ids"),
    tokenizer_classes=("BertTokenizer", "BertTokenizerFast"),
)
DISTILBERT = ModelFamily(  # BERT-like, without segment embeddings
    "distilbert", ("distilbert",), input_names=("input_ids", "attention_mask"),
    tokenizer_classes=("DistilBertTokenizer", "DistilBertTokenizerFast"),
)
XLM_R = ModelFamily(
    "xlm-roberta", ("xlm-roberta", "roberta"), input_names=("input_ids", "attention_mask", "token_type_ids"),
    tokenizer_classes=("XLMRobertaTokenizer", "XLMRobertaTokenizerFast"), deletes_lone_prefix=True,
    name_markers=("roberta",), code_learning_rate=7.5e-6,
)

MODEL_FAMILIES: dict[str, ModelFamily] = {family.name: family for family in (BERT, DISTILBERT, XLM_R)}


def register_family(family: ModelFamily) -> ModelFamily:
    """Add `family` to the registry; a model_type already claimed by another family is refused."""
    for other in MODEL_FAMILIES.values():
        taken = set(other.model_types) & set(family.model_types)
        if other.name != family.name and taken:
            raise ValueError(f"model family {family.name!r}: model_type {sorted(taken)[0]!r} "
                             f"already belongs to family {other.name!r}")
    MODEL_FAMILIES[family.name] = family
    return family


def get_family(name: str) -> ModelFamily:
    """A registered family by its name."""
    if name not in MODEL_FAMILIES:
        raise ValueError(unknown_name("model family", name, MODEL_FAMILIES))
    return MODEL_FAMILIES[name]


def model_family(model_or_config: Any) -> ModelFamily:
    """The family of a model (or of its config), from `config.model_type`; an unknown type gets
    the generic family built from its config, or one ValueError line when it cannot."""
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    if not model_type:
        raise ValueError(f"{type(model_or_config).__name__}: no config.model_type to find its model family from")
    for family in MODEL_FAMILIES.values():
        if model_type in family.model_types:
            return family
    return _generic_family(config, model_type)


def _generic_family(config: Any, model_type: str) -> ModelFamily:
    known = sorted(t for family in MODEL_FAMILIES.values() for t in family.model_types)
    why = None
    if getattr(config, "is_encoder_decoder", False):
        why = "an encoder-decoder model has no single stack of encoder hidden states"
    elif not isinstance(getattr(config, "num_hidden_layers", None), int):
        why = "its config has no num_hidden_layers"
    if why is not None:
        raise ValueError(f"{unknown_name('model family for model_type', model_type, known)}; "
                         f"no generic fallback: {why} (register a ModelFamily in trainables/models.py)")
    return ModelFamily(f"generic:{model_type}", (model_type,))


def tokenizer_family(tokenizer: "PreTrainedTokenizerBase") -> ModelFamily | None:
    """The family whose tokenizer this is (by class, along its hierarchy), or None. Sub-word
    conventions follow the tokenizer, not the model, as in the reference: e5-small is a BERT
    model with XLM-R's tokenizer, and its lone "▁" pieces are deleted."""
    names = {cls.__name__ for cls in type(tokenizer).__mro__}
    for family in MODEL_FAMILIES.values():
        if names & set(family.tokenizer_classes):
            return family
    return None


def family_from_name(model_name: str) -> ModelFamily | None:
    """The family a model's name marks (the reference scripts' test, e.g. "roberta" in the
    name), or None; used where only the name is known (the presets)."""
    name = str(model_name).lower()
    for family in MODEL_FAMILIES.values():
        if any(marker in name for marker in family.name_markers):
            return family
    return None


# --------------------------------------------------------------------------------------------
# The paper's models


@dataclass(frozen=True)
class PaperModel:
    name: str  # hub id; also the model's name in results tables
    display_name: str  # the paper's name for it
    family: str  # a MODEL_FAMILIES name
    gpu: float  # share of one GPU per trial (where the cluster has GPUs)
    realigned: bool  # part of the controlled experiment (§6: all but XLM-R large, App. B.5)
    # The reference's forward-pass batch with --large_gpu (training/batch_sizes.py,
    # get_batch_size: model_to_batch_size_big), which its learning-rate schedule counted.
    code_micro_batch_size: int
    # The hub commit the weights and tokenizer are read at (`from_pretrained(revision=...)`),
    # so that every trial, and a rerun years later, reads the same files; part of cache keys.
    revision: str = "main"


PAPER_MODELS: tuple[PaperModel, ...] = (
    PaperModel("distilbert-base-multilingual-cased", "distilmBERT", "distilbert", gpu=0.25, realigned=True,
               code_micro_batch_size=32, revision="45c032ab32cc946ad88a166f7cb282f58c753c2e"),
    PaperModel("bert-base-multilingual-cased", "mBERT", "bert", gpu=0.5, realigned=True, code_micro_batch_size=32,
               revision="3f076fdb1ab68d5b2880cb87a0886f315b8146f8"),
    PaperModel("xlm-roberta-base", "XLM-R Base", "xlm-roberta", gpu=0.5, realigned=True, code_micro_batch_size=32,
               revision="e73636d4f797dec63c3081bb6ed5c7b0bb3f2089"),
    PaperModel("xlm-roberta-large", "XLM-R Large", "xlm-roberta", gpu=1.0, realigned=False,
               code_micro_batch_size=8, revision="c23d21b0620b635a76227c604d44e43a9f0ee389"),
)
PAPER_MODEL_NAMES: tuple[str, ...] = tuple(model.name for model in PAPER_MODELS)

# Other hub models the code loads, at a pinned commit: AWESOME-align's fine-tuned aligner
# (the setting awesome_model's default, trainables/pairs.py).
HUB_MODEL_REVISIONS: dict[str, str] = {
    "aneuraz/awesome-align-with-co": "777756717e1fa9556e304d4d5db173ee386b9c16",
    **{model.name: model.revision for model in PAPER_MODELS},
}


def paper_model(name: str) -> PaperModel | None:
    """The paper's model that `name` denotes (its hub id, with or without an organisation or
    folder: `FacebookAI/xlm-roberta-base`, `/models/xlm-roberta-base/`), or None."""
    base = str(name).rstrip("/").split("/")[-1].lower()
    return next((model for model in PAPER_MODELS if model.name == base), None)
