"""A tiny synthetic multilingual world and a tiny BERT, written offline for the demo and the tests.

The paper's pipeline (Gaschi et al. 2023, §3) needs word pairs from a dictionary or an aligner
(§3.2), a parallel corpus to realign on (§3.3), three downstream tasks (POS tagging, NER, NLI;
§4.1) and a pre-trained multilingual encoder. None of that can be downloaded here, and the
real models are too slow for a demo on two CPUs. This package builds a stand-in for each:

* `world`: shared concepts, each with a surface form in every language; the languages differ
  in script and in how many cognates they share with English, so they are aligned to
  different degrees, as the real ones are;
* `grammar` and `render`: sentence structures and their rendering per language (word order,
  morphology), so translations are renderings of one structure;
* `files`: a data folder in the layout and formats of ``../shared/data``, written with
  `trainables.data`'s writers;
* `model`: a WordPiece tokenizer and a tiny BERT pre-trained with masked language modelling
  (mixed-language sentences and translation pairs).

Everything is deterministic for a seed. CLI: ``python -m toyworld OUT_DIR`` writes
``OUT_DIR/data`` and ``OUT_DIR/model``.
"""
from __future__ import annotations

import hashlib
import inspect
from importlib import metadata
from pathlib import Path

from toyworld.files import (
    GENERATOR_VERSION, DATA_MANIFEST, DEFAULT_PARALLEL_SIZE, DEFAULT_TEST_SIZE, DEFAULT_TRAIN_SIZE, TOY_CORPUS, write_toy_data,
)
from toyworld.grammar import NLI_LABELS
from toyworld.model import (
    DEFAULT_CODE_SWITCH_RATE, DEFAULT_PRETRAIN_STEPS, DEFAULT_TLM_SHARE, DEFAULT_VOCAB_SIZE, MODEL_MANIFEST, MODEL_VERSION, SPECIAL_TOKENS, learn_wordpiece_vocab, train_tokenizer,
    write_toy_model,
)
from toyworld.world import DEFAULT_LANGS, LANGUAGES, SOURCE_LANG, make_world

__all__ = [
    "DATA_MANIFEST", "DEFAULT_CODE_SWITCH_RATE", "DEFAULT_LANGS", "DEFAULT_PARALLEL_SIZE", "DEFAULT_PRETRAIN_STEPS", "DEFAULT_TEST_SIZE",
    "DEFAULT_TLM_SHARE", "DEFAULT_TRAIN_SIZE", "DEFAULT_VOCAB_SIZE", "LANGUAGES", "MODEL_MANIFEST", "NLI_LABELS", "SOURCE_LANG",
    "SPECIAL_TOKENS", "TOY_CORPUS", "learn_wordpiece_vocab", "make_world", "toy_cache_folder", "toy_key", "train_tokenizer",
    "write_toy",
    "write_toy_data", "write_toy_model",
]


def write_toy(out_dir: Path, seed: int = 0, pretrain_steps: int = DEFAULT_PRETRAIN_STEPS,
              tlm_share: float = DEFAULT_TLM_SHARE, vocab_size: int = DEFAULT_VOCAB_SIZE,
              code_switch_rate: float = DEFAULT_CODE_SWITCH_RATE, **data_sizes: int) -> tuple[Path, Path]:
    """Data in out_dir/data and a model pre-trained on it in out_dir/model; both are reused when
    they exist with the same parameters.

    `data_sizes`: n_train, n_test, n_parallel of `write_toy_data`.
    """
    out_dir = Path(out_dir).expanduser()
    data_dir = write_toy_data(out_dir / "data", seed=seed, **data_sizes)
    model_dir = write_toy_model(out_dir / "model", data_dir, seed=seed, pretrain_steps=pretrain_steps,
                                tlm_share=tlm_share, vocab_size=vocab_size, code_switch_rate=code_switch_rate)
    return data_dir, model_dir


# What the written bytes depend on besides the parameters: this package's code, the project's
# writers and segmenter it calls, and the libraries that tokenise and train.
CODE_FILES = ("toyworld/*.py", "trainables/formats.py", "trainables/segmentation.py")
LIBRARIES = ("torch", "transformers", "tokenizers")


def code_fingerprint() -> str:
    """sha256 of the source files the toy folder is made by (CODE_FILES, in path order)."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted({p for pattern in CODE_FILES for p in root.glob(pattern)}):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def toy_key(**parameters: object) -> str:
    """A content key of what `write_toy(out_dir, **parameters)` writes: every parameter (defaults
    filled in), the generator and model versions, the code fingerprint and library versions.
    A cache folder named by it is never reused once any of them changes."""
    from trainables.cache import cache_key

    signature = inspect.signature(write_toy)
    data_defaults = dict(n_train=DEFAULT_TRAIN_SIZE, n_test=DEFAULT_TEST_SIZE, n_parallel=DEFAULT_PARALLEL_SIZE)
    unknown = sorted(set(parameters) - set(signature.parameters) - set(data_defaults) - {"out_dir"})
    if unknown:
        raise ValueError(f"toy_key: unknown parameter(s) {unknown}; expected those of write_toy and {sorted(data_defaults)}")
    resolved = {name: p.default for name, p in signature.parameters.items() if p.default is not inspect.Parameter.empty}
    resolved.update(data_defaults)
    resolved.update({k: v for k, v in parameters.items() if k != "out_dir"})
    versions = {name: metadata.version(name) for name in LIBRARIES}
    return cache_key(parameters=resolved, generator=GENERATOR_VERSION, model=MODEL_VERSION,
                     code=code_fingerprint(), libraries=versions)


def toy_cache_folder(root: str | Path, **parameters: object) -> str:
    """``root/toyworld-{toy_key(...)}`` as a string with ``~`` kept (experiment files expand it)."""
    return f"{str(root).rstrip('/')}/toyworld-{toy_key(**parameters)}"
