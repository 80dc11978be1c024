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
from trainables.models import HUB_MODEL_REVISIONS
from trainables.registry import did_you_mean

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
# A hub model the code has no pinned commit for follows the hub's default branch, named explicitly.
DEFAULT_HUB_REVISION = "main"
# The organisations that the legacy un-namespaced ids of the paper's models now live under on the
# hub (the old id redirects there): the same repository, so the same pinned commit.
CANONICAL_HUB_ORGS = ("distilbert", "google-bert", "FacebookAI")
# Files a tokenizer may be made from (any one suffices for AutoTokenizer).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "sentencepiece.bpe.model",
                   "spiece.model", "vocab.json")


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


# --- hub models: pinned revisions and checks before a sweep -------------------------------------


def is_local_model(source: str | os.PathLike) -> bool:
    """Whether a model source names a local folder (a path, or an existing folder) rather than a
    hub id."""
    text = str(source)
    return text.startswith(("/", "~", "./", "../")) or os.path.exists(text)


def hub_revision(source: str | os.PathLike) -> str | None:
    """The revision a hub model is read at: the pinned commit of a model the code knows (the
    paper's four, AWESOME's aligner; `trainables.models.HUB_MODEL_REVISIONS`), else
    `DEFAULT_HUB_REVISION`; None for a local folder, which has no revision."""
    if is_local_model(source):
        return None
    name = str(source)
    if name in HUB_MODEL_REVISIONS:
        return HUB_MODEL_REVISIONS[name]
    org, _, base = name.partition("/")
    if org in CANONICAL_HUB_ORGS and base in HUB_MODEL_REVISIONS:
        return HUB_MODEL_REVISIONS[base]
    return DEFAULT_HUB_REVISION


def pretrained_kwargs(source: str | os.PathLike) -> dict[str, str]:
    """Keyword arguments for `from_pretrained(source, ...)` / `snapshot_download`: the pinned
    `revision` of a hub id (with the hub's offline flags, transformers then reads that commit
    from its cache), nothing for a local folder."""
    revision = hub_revision(source)
    return {} if revision is None else {"revision": revision}


def _close_hub_name(model_id: str) -> str:
    """' (did you mean ...)' for a hub id close to a model the code knows, by full id or by name."""
    known = list(HUB_MODEL_REVISIONS)
    return did_you_mean(model_id, known) or did_you_mean(model_id.rpartition("/")[2], known)


def hub_model_problems(models: dict[str, str], api: object | None = None) -> list[str]:
    """One line per hub model id (-> what names it) that the hub does not serve at its pinned
    revision with a config, a tokenizer and PyTorch weights: a typo ("did you mean" a known model),
    a revision the repository lacks, a gated repository, or missing files. `api`: a
    `huggingface_hub.HfApi` (tests pass a stand-in). Needs the network: call only when online."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    api = api if api is not None else HfApi()
    problems = []
    for model_id, what in models.items():
        revision = hub_revision(model_id) or DEFAULT_HUB_REVISION
        where = f"{what}: hub model {model_id!r}"
        try:
            info = api.model_info(model_id, revision=revision)
        except GatedRepoError:
            problems.append(f"{where} is gated: accept its terms on the hub and log in (hf auth login)")
            continue
        except RepositoryNotFoundError:
            problems.append(f"{where} not found on the hub{_close_hub_name(model_id)}")
            continue
        except RevisionNotFoundError:
            problems.append(f"{where} has no revision {revision!r}")
            continue
        except Exception as error:  # network or server errors: the sweep would fail the same way
            problems.append(f"{where} could not be checked ({_one_line(error)})")
            continue
        files = {sibling.rfilename for sibling in (getattr(info, "siblings", None) or ())}
        for needed, names in (("a config", (CONFIG_FILE,)), ("a tokenizer", TOKENIZER_FILES),
                              ("PyTorch weights", WEIGHT_FILES)):
            if not files & set(names):
                problems.append(f"{where} at revision {revision}: no {needed} file (expected one of {', '.join(names)})")
    return problems
