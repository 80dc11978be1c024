"""Checks of a local model folder before a sweep: config, tokenizer and weights, one line each.

A damaged folder does not always make transformers fail: a weights file whose tensor names are
garbled loads "successfully", every missing weight freshly initialised at random (a warning at
most), and every trial would then fine-tune and measure the alignment of a random encoder. So
the folder is checked once per model on the driver, before Ray starts:

* `config.json` parses (invalid JSON: the file and the line) and transformers knows its model;
* the tokenizer loads and is a fast tokenizer (the word-to-subword maps of `encoding.py` need
  `word_ids`, which only fast tokenizers give), with a vocabulary that fits the embeddings;
* a weights file exists, its header reads (safetensors) or it unpickles (PyTorch), and its tensor
  names cover every weight of the base encoder (`AutoModel`: embeddings and layers; the pooler,
  which the token tasks do not use and many checkpoints lack, may be absent).

The name check is cheap: the expected names come from the model built on the meta device (no
memory), the checkpoint's names from the safetensors header (no tensor read). Only when names
seem missing is the verdict confirmed by transformers itself, `from_pretrained(...,
output_loading_info=True)`, so that its own renamings (legacy `gamma`/`beta`, a task model's
`bert.` prefix...) never make a good checkpoint fail.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from trainables.errors import TrialInputError

if TYPE_CHECKING:  # transformers and torch are imported only when a folder is checked
    from transformers import PretrainedConfig

CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
# In transformers' order of preference: safetensors first, then PyTorch pickles; single or sharded.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
# Base-model weights a checkpoint may lack without harm to these experiments.
OPTIONAL_WEIGHTS = re.compile(r"pooler\.")
# Names of old checkpoints that transformers renames on load.
LEGACY_NAMES = ((re.compile(r"\.gamma$"), ".weight"), (re.compile(r"\.beta$"), ".bias"))
MAX_NAMES_SHOWN = 3


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise TrialInputError(f"{path}:{error.lineno}: invalid JSON ({error.msg})") from None
    except UnicodeDecodeError as error:
        raise TrialInputError(f"{path}: not UTF-8 (byte offset {error.start})") from None
    except OSError as error:
        raise TrialInputError(f"{path}: cannot be read ({error.strerror or type(error).__name__})") from None


def check_config(folder: Path) -> "PretrainedConfig":
    """The folder's config, or one line naming config.json and what is wrong with it."""
    from transformers import AutoConfig

    path = folder / CONFIG_FILE
    if not path.is_file():
        raise TrialInputError(f"{path} not found (a transformers model folder is expected)")
    if not isinstance(_read_json(path), dict):
        raise TrialInputError(f"{path}: expected a JSON object")
    try:
        return AutoConfig.from_pretrained(folder)
    except Exception as error:  # unknown model_type, bad values...: transformers' own reason
        raise TrialInputError(f"{path}: transformers cannot read it ({_one_line(error)})") from None


def check_tokenizer(folder: Path, config: "PretrainedConfig | None" = None) -> None:
    """One line when the folder's tokenizer does not load, is not a fast tokenizer, has no
    vocabulary beyond its special tokens (transformers builds such a tokenizer when the vocabulary
    file is absent), or has ids beyond the model's embedding matrix."""
    from transformers import AutoTokenizer

    path = folder / TOKENIZER_FILE
    if path.is_file():
        _read_json(path)  # a syntax error is reported with its line
    where = path if path.is_file() else folder
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except Exception as error:
        raise TrialInputError(f"{where}: the tokenizer does not load ({_one_line(error)})") from None
    if not getattr(tokenizer, "is_fast", False):
        raise TrialInputError(
            f"{where}: {type(tokenizer).__name__} is not a fast tokenizer (word-to-subword maps need one)"
        )
    size, n_special = len(tokenizer), len(set(tokenizer.all_special_ids))
    if size <= n_special:
        raise TrialInputError(
            f"{where}: the tokenizer has no vocabulary beyond its {n_special} special tokens "
            "(is its vocabulary file, e.g. tokenizer.json, missing?)"
        )
    vocab_size = getattr(config, "vocab_size", None)
    if isinstance(vocab_size, int) and size > vocab_size:
        raise TrialInputError(
            f"{where}: the tokenizer has {size} tokens but {folder / CONFIG_FILE} has vocab_size={vocab_size}"
        )


def _weights_path(folder: Path) -> Path:
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise TrialInputError(f"{folder}: no weights file (expected one of {', '.join(WEIGHT_FILES)})")


def _file_names(path: Path) -> set[str]:
    """Tensor names of one weights file, reading only the safetensors header (or, for a PyTorch
    pickle, memory-mapping it)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                return set(handle.keys())
        import torch

        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # an old, non-zip pickle cannot be memory-mapped
            state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise TypeError(f"expected a dict of tensors, got {type(state).__name__}")
        return set(state)
    except TrialInputError:
        raise
    except Exception as error:
        raise TrialInputError(f"{path}: the weights do not load ({_one_line(error)})") from None


def checkpoint_names(folder: Path) -> tuple[Path, set[str]]:
    """The weights file (or shard index) and every tensor name it holds."""
    path = _weights_path(folder)
    if not path.name.endswith(".index.json"):
        return path, _file_names(path)
    index = _read_json(path)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise TrialInputError(f"{path}: expected a 'weight_map' of tensor names to shard files")
    names: set[str] = set()
    for shard in sorted(set(map(str, weight_map.values()))):
        if not (folder / shard).is_file():
            raise TrialInputError(f"{path}: shard {shard} not found in {folder}")
        names |= _file_names(folder / shard)
    return path, names


def _normalise(name: str, prefix: str) -> str:
    if prefix and name.startswith(prefix + "."):
        name = name[len(prefix) + 1:]
    for pattern, replacement in LEGACY_NAMES:
        name = pattern.sub(replacement, name)
    return name


def missing_encoder_weights(config: "PretrainedConfig", names: Iterable[str]) -> list[str]:
    """Weights of the base encoder (`AutoModel` for `config`) that no checkpoint name provides,
    by name only; the pooler is optional."""
    import torch
    from transformers import AutoModel

    with torch.device("meta"):  # shapes and names only: no memory, no initialisation cost
        model = AutoModel.from_config(config)
    prefix = getattr(model, "base_model_prefix", "") or ""
    present = {_normalise(name, prefix) for name in names}
    ignored = [re.compile(p) for p in (getattr(model, "_keys_to_ignore_on_load_missing", None) or [])]
    return sorted(
        key for key in model.state_dict()
        if key not in present and not OPTIONAL_WEIGHTS.match(key) and not any(p.search(key) for p in ignored)
    )


def _confirmed_missing(folder: Path) -> list[str]:
    """What transformers itself leaves randomly initialised when loading the base encoder."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its load report would repeat what the error line says
    try:
        _, info = AutoModel.from_pretrained(folder, output_loading_info=True)
    finally:
        hf_logging.set_verbosity(verbosity)
    return sorted(k for k in info.get("missing_keys", ()) if not OPTIONAL_WEIGHTS.match(k))


def check_weights(folder: Path, config: "PretrainedConfig") -> None:
    """One line when the weights are absent, unreadable, or do not cover the encoder."""
    path, names = checkpoint_names(folder)
    try:
        suspect = missing_encoder_weights(config, names)
    except Exception as error:  # AutoModel has no class for this config: no trial could load it
        raise TrialInputError(f"{folder / CONFIG_FILE}: AutoModel cannot build it ({_one_line(error)})") from None
    if not suspect:
        return
    try:
        missing = _confirmed_missing(folder)
    except Exception as error:
        raise TrialInputError(f"{path}: the weights do not load ({_one_line(error)})") from None
    if missing:
        shown = ", ".join(missing[:MAX_NAMES_SHOWN]) + (", ..." if len(missing) > MAX_NAMES_SHOWN else "")
        raise TrialInputError(
            f"{path}: {len(missing)} encoder weights missing from the checkpoint ({shown}); "
            "transformers would initialise them at random"
        )


def check_model_folder(source: str | os.PathLike) -> "PretrainedConfig":
    """Check a local model folder (config, tokenizer, weights); its config, or one
    `TrialInputError` line naming the file and what is wrong."""
    folder = Path(source).expanduser()
    if not folder.is_dir():
        raise TrialInputError(f"{folder}: model folder not found (a transformers model folder is expected)")
    config = check_config(folder)
    check_tokenizer(folder, config)
    check_weights(folder, config)
    return config
