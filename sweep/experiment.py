"""Experiment files: plain data describing grids of trials, validated before Ray starts.

An experiment file is a Python module that defines a module-level dict `EXPERIMENT` and does
nothing else on import:

    EXPERIMENT = dict(
        name="my_sweep",
        settings=dict(epochs=5, langs=["ar", "es"]),          # trainables.settings.Settings
        models={"e5-small": dict(source="~/models/e5", env="E5_SMALL_PATH", gpu=0.25)},
        grids=[
            dict(model=["e5-small"], task=["udpos"], realign=["none", "before"],
                 pairs=["dico"], corpus=["ntrex"], seed=[0, 1], settings=dict(epochs=2)),
        ],
    )

A grid is the product of its six axes; the experiment is the union of its grids; trials that
are the same run once (`none` ignores the pair source and corpus: its alignment is measured on
the settings `eval_pairs` / `eval_corpus`, by default the first pair source and corpus of its grid).
"""
from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

from sweep.models import DEFAULT_LOCAL_GPU_SHARE, PAPER_MODELS, ModelSpec
from trainables.registry import unknown_name
from trainables.settings import SETTING_NAMES, Settings, make_settings

AXES: tuple[str, ...] = ("model", "task", "realign", "pairs", "corpus", "seed")
EXPERIMENT_KEYS: tuple[str, ...] = ("name", "description", "settings", "models", "grids", "prepare")
GRID_KEYS: tuple[str, ...] = AXES + ("settings",)
MODEL_KEYS: tuple[str, ...] = ("source", "env", "gpu", "cpu")
NO_REALIGNMENT = "none"
# Bump when the code changes what a trial computes for the same axes, settings and model: its
# content key changes, so the sweep runs it again instead of keeping the old numbers.
# 2 (2026-12-06): the reference's projection head, realignment stream (buffer shuffle, restarted
# each epoch of joint training) and length rules (128 before fine-tuning, lone pieces' room).
# 3 (2026-12-06): FastAlign pairs from fast_align's programs' links (trainables.fastalign_numpy)
# rather than systran-align's; AdamW on the embeddings' touched rows (the same update, other
# rounding: trainables.optimizer).
PROTOCOL_VERSION = 3
# Settings that change where a trial's work is stored or how fast it runs, never its numbers.
SETTINGS_OUTSIDE_IDENTITY: tuple[str, ...] = ("cache_dir",)
TRIAL_KEY_LENGTH = 12


class ExperimentError(ValueError):
    """An experiment file, a setting or a trial axis is invalid: one line says which and why."""


def check_keys(mapping: Mapping[str, Any], valid: Iterable[str], where: str) -> None:
    valid = tuple(valid)
    for key in mapping:
        if key not in valid:
            raise ExperimentError(f"{where}: {unknown_name('key', key, valid)}")


@dataclass(frozen=True)
class Trial:
    """One point of the sweep; `config()` is what the trainable receives."""

    model: str
    task: str
    realign: str
    pairs: str
    corpus: str
    seed: int
    settings: tuple[tuple[str, Any], ...]  # sorted (name, value) items overriding the defaults
    # A run option (`--keep-models`: save the fine-tuned model), not a point of the sweep: it
    # changes no number, so it is outside equality and the content key (trial_identity).
    keep_models: bool = field(default=False, compare=False)

    @property
    def name(self) -> str:
        return f"{self.model}_{self.task}_{self.realign}_{self.pairs}_{self.corpus}_s{self.seed}"

    def config(self, model: ModelSpec, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return {
            "model": self.model,
            "model_source": model.source,
            "task": self.task,
            "realign": self.realign,
            "pairs": self.pairs,
            "corpus": self.corpus,
            "seed": self.seed,
            "settings": dict(self.settings),
            **({"keep_models": True} if self.keep_models else {}),
            **(extra or {}),
        }


def protocol_version() -> str:
    """The engine's protocol version with the science's own output versions (alignment
    measurement, task features, word pairs): each one bumped changes every trial's key."""
    from trainables.alignment import MEASUREMENT_VERSION
    from trainables.pairs import PAIRS_FORMAT_VERSION
    from trainables.tasks import FEATURES_VERSION

    return f"{PROTOCOL_VERSION}/align{MEASUREMENT_VERSION}/features{FEATURES_VERSION}/pairs{PAIRS_FORMAT_VERSION}"


def trial_identity(trial: Trial, model: ModelSpec, protocol: str) -> dict[str, Any]:
    """What decides a trial's numbers: its axes, its settings, its model's source and the
    protocol version. Not its resources, its place in a Tune run or the code's commit."""
    settings = {k: v for k, v in trial.settings if k not in SETTINGS_OUTSIDE_IDENTITY}
    return {"model": trial.model, "model_source": model.source, "task": trial.task, "realign": trial.realign,
            "pairs": trial.pairs, "corpus": trial.corpus, "seed": trial.seed, "settings": settings,
            "protocol": protocol}


def trial_key(trial: Trial, model: ModelSpec, protocol: str | None = None) -> str:
    """A trial's content key: a short hash of `trial_identity`."""
    identity = trial_identity(trial, model, protocol if protocol is not None else protocol_version())
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:TRIAL_KEY_LENGTH]


@dataclass(frozen=True)
class Experiment:
    name: str
    description: str
    models: dict[str, ModelSpec]
    trials: tuple[Trial, ...]  # deduplicated, in grid order
    n_grid_points: int  # before deduplication
    source: str = ""

    def filtered(self, only: Mapping[str, str | Iterable[str]]) -> "Experiment":
        """Trials whose axes match `only`: an axis given several values keeps any of them (union),
        different axes must all match (intersection). Values are compared as strings."""
        for key in only:
            if key not in AXES:
                raise ExperimentError(f"--only {key}=...: {unknown_name('axis', key, AXES)}")
        wanted = {k: {v} if isinstance(v, str) else {str(x) for x in v} for k, v in only.items()}
        kept = tuple(t for t in self.trials if all(str(getattr(t, k)) in v for k, v in wanted.items()))
        return Experiment(self.name, self.description, self.models, kept, self.n_grid_points, self.source)

    def keeping_models(self) -> "Experiment":
        """The same trials, each saving its fine-tuned model in its folder (`--keep-models`)."""
        return replace(self, trials=tuple(replace(trial, keep_models=True) for trial in self.trials))

    def keys(self) -> dict[Trial, str]:
        """Each trial's content key (`trial_key`), in trial order."""
        protocol = protocol_version()
        return {trial: trial_key(trial, self.models[trial.model], protocol) for trial in self.trials}


def load_experiment_file(path: str | os.PathLike) -> Mapping[str, Any]:
    """Import an experiment file and return its EXPERIMENT dict."""
    path = Path(path)
    if not path.is_file():
        raise ExperimentError(f"{path}: no such experiment file")
    spec = importlib.util.spec_from_file_location(f"experiment_{path.stem}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # the user's file: report where, in one line
        raise ExperimentError(f"{path}: cannot be imported: {type(error).__name__}: {error}") from error
    experiment = getattr(module, "EXPERIMENT", None)
    if not isinstance(experiment, Mapping):
        raise ExperimentError(f"{path}: must define a module-level dict EXPERIMENT")
    return experiment


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _resource(entry: Mapping[str, Any], key: str, default: float, where: str) -> float:
    """A trial's CPU or GPU share: a number >= 0 (CPU > 0); a GPU share above 1 must be whole
    (Ray gives fractions of one GPU only)."""
    value = entry.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise ExperimentError(f"{where}['{key}'] = {value!r}: expected a number")
    if value < 0 or (key == "cpu" and value == 0):
        raise ExperimentError(f"{where}['{key}'] = {value!r}: expected a number {'>' if key == 'cpu' else '>='} 0")
    if key == "gpu" and value > 1 and not float(value).is_integer():
        raise ExperimentError(f"{where}['gpu'] = {value!r}: a share above 1 GPU must be a whole number")
    return float(value)


def _model_specs(models: Any, where: str) -> dict[str, ModelSpec]:
    specs = dict(PAPER_MODELS)
    if not isinstance(models, Mapping):
        raise ExperimentError(f"{where}: models must be a dict of name -> dict(source=..., gpu=..., cpu=...)")
    for name, entry in models.items():
        if isinstance(entry, str):
            entry = {"source": entry}
        if not isinstance(entry, Mapping):
            raise ExperimentError(f"{where}: models[{name!r}] must be a path string or a dict")
        check_keys(entry, MODEL_KEYS, f"{where}: models[{name!r}]")
        base = specs.get(name)
        source = entry.get("source", base.source if base else None)
        if entry.get("env") and os.environ.get(entry["env"]):
            source = os.environ[entry["env"]]
        if not source:
            raise ExperimentError(f"{where}: models[{name!r}] needs a 'source' (hub id or local folder)")
        source = os.path.expanduser(str(source))
        if source.startswith("."):
            source = str(Path(source).resolve())
        specs[name] = ModelSpec(
            name=name,
            source=source,
            gpu=_resource(entry, "gpu", base.gpu if base else DEFAULT_LOCAL_GPU_SHARE, f"{where}: models[{name!r}]"),
            cpu=_resource(entry, "cpu", base.cpu if base else 1.0, f"{where}: models[{name!r}]"),
        )
    return specs


def build_experiment(
    raw: Mapping[str, Any], where: str = "experiment", overrides: Mapping[str, Any] | None = None
) -> Experiment:
    """Validate an EXPERIMENT dict and expand it into deduplicated trials.

    `overrides` (from `--set KEY=VALUE`) replace settings everywhere, after the grids' own.
    """
    check_keys(raw, EXPERIMENT_KEYS, where)
    if "grids" not in raw or not _as_list(raw["grids"]):
        raise ExperimentError(f"{where}: needs a non-empty 'grids' list")
    models = _model_specs(raw.get("models", {}), where)
    base_settings = _settings_dict(raw.get("settings", {}), f"{where}: settings")
    overrides = dict(overrides or {})
    for key in list(base_settings) + list(overrides):
        if key not in SETTING_NAMES:
            raise ExperimentError(f"{where}: settings: {unknown_name('key', key, SETTING_NAMES)}")
    registries = axis_registries()
    seen: dict[Trial, None] = {}
    n_points = 0
    for index, grid in enumerate(_as_list(raw["grids"])):
        grid_where = f"{where}: grids[{index}]"
        if not isinstance(grid, Mapping):
            raise ExperimentError(f"{grid_where} must be a dict")
        check_keys(grid, GRID_KEYS, grid_where)
        for axis in AXES:
            if axis not in grid:
                raise ExperimentError(f"{grid_where}: missing axis {axis!r} (axes: {', '.join(AXES)})")
        settings = {**base_settings, **_settings_dict(grid.get("settings", {}), f"{grid_where}: settings"), **overrides}
        for key in settings:
            if key not in SETTING_NAMES:
                raise ExperimentError(f"{grid_where}: settings: {unknown_name('key', key, SETTING_NAMES)}")
        values = {axis: _as_list(grid[axis]) for axis in AXES}
        for axis, valid in (("model", models), *registries.items()):
            for value in values[axis]:
                if axis == "corpus":
                    continue  # corpora are open-ended (any local folder): checked with the data
                if value not in valid:
                    raise ExperimentError(f"{grid_where}: {unknown_name(axis, value, valid)}")
        for seed in values["seed"]:
            if not isinstance(seed, int):
                raise ExperimentError(f"{grid_where}: seed {seed!r} is not an integer")
        try:
            checked = make_settings(settings)
        except (TypeError, ValueError) as error:
            raise ExperimentError(f"{grid_where}: settings: {error}") from error
        _check_langs(checked, grid_where)
        for model, task, realign, pairs, corpus, seed in itertools.product(*(values[a] for a in AXES)):
            n_points += 1
            if realign == NO_REALIGNMENT:  # no realignment: the pairs only measure alignment
                pairs = checked.eval_pairs or values["pairs"][0]
                corpus = checked.eval_corpus or values["corpus"][0]
            trial = Trial(model, task, realign, pairs, corpus, seed, tuple(sorted(_freeze(settings).items())))
            seen.setdefault(trial, None)
    name = str(raw.get("name", "experiment"))
    return Experiment(name, str(raw.get("description", "")), models, tuple(seen), n_points, where)


def _settings_dict(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ExperimentError(f"{where} = {value!r}: expected a dict of setting -> value")
    return dict(value)


PATH_SETTINGS = ("data_dir", "cache_dir", "awesome_model")  # made absolute: trials run in their own folders


def _freeze(settings: Mapping[str, Any]) -> dict[str, Any]:
    frozen = {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}
    for key in PATH_SETTINGS:
        value = frozen.get(key)
        if isinstance(value, str) and value.startswith(("~", ".", "/")):
            frozen[key] = str(Path(value).expanduser().resolve())
    return frozen


def _check_langs(settings: Settings, where: str) -> None:
    from trainables.data import LANGUAGES

    for lang in settings.langs:
        if lang not in LANGUAGES or lang == "en":
            valid = [code for code in LANGUAGES if code != "en"]
            raise ExperimentError(f"{where}: settings: {unknown_name('target language', lang, valid)}")


def axis_registries() -> dict[str, Iterable[str]]:
    """The valid names of each axis, from the science's own registries."""
    from trainables.pairs import PAIR_SOURCES
    from trainables.realignment import REALIGN_METHODS
    from trainables.tasks import TASKS

    return {"task": TASKS, "realign": REALIGN_METHODS, "pairs": PAIR_SOURCES, "corpus": ()}


def load_experiment(
    path: str | os.PathLike, overrides: Mapping[str, Any] | None = None, only: Mapping[str, str] | None = None
) -> Experiment:
    experiment = build_experiment(load_experiment_file(path), where=str(path), overrides=overrides)
    experiment = Experiment(experiment.name, experiment.description, experiment.models, experiment.trials,
                            experiment.n_grid_points, str(path))
    return experiment.filtered(only) if only else experiment


def check_run_name(name: str) -> str:
    """A run name is one folder inside the storage folder: `--fresh` deletes it, so `.`, `..`, a
    path or an empty name (the storage folder itself or a folder above it) are refused."""
    separators = {os.sep, os.altsep, "/"} - {None}
    if not name or name.strip() in (".", "..") or any(sep in name for sep in separators):
        raise ExperimentError(f"run name {name!r}: expected one folder name (not empty, '.', '..' or a path)")
    return name


def trial_settings(experiment: Experiment) -> dict[Trial, Settings]:
    """Every trial's settings exactly as its trainable will build them (preset applied for its
    model), so that an invalid value fails here, before Ray starts, naming the trial."""
    built: dict[tuple, Settings] = {}
    result: dict[Trial, Settings] = {}
    for trial in experiment.trials:
        key = (trial.settings, trial.model)
        if key not in built:
            try:
                built[key] = make_settings(dict(trial.settings), model=trial.model)
            except (TypeError, ValueError) as error:
                raise ExperimentError(f"trial {trial.name}: settings: {error}") from error
        result[trial] = built[key]
    return result


def model_num_layers(source: str) -> int | None:
    """The layer count of a model, as its family reads it from its config.json (a local folder,
    or the hub when online); None when it cannot be read here (a missing folder is reported by
    the preflight checks)."""
    from trainables.data import is_offline
    from trainables.model_files import pretrained_kwargs
    from trainables.models import model_family

    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(source, local_files_only=is_offline() or os.path.isdir(source),
                                            **pretrained_kwargs(source))
        return model_family(config).num_layers(config)
    except Exception:  # unreadable, unreachable or no family: nothing to check against
        return None


def realign_layer_problems(experiment: Experiment, settings: Mapping[Trial, Settings]) -> list[str]:
    """`realign_layer` indexes the encoder's hidden states (0 = embeddings .. L = last layer, or
    negative from the end): an index the model lacks would fail every realigning trial."""
    layers_by_source: dict[str, int | None] = {}
    wanted: dict[tuple[str, int], int] = {}
    for trial in experiment.trials:
        if trial.realign != NO_REALIGNMENT:
            key = (trial.model, settings[trial].realign_layer)
            wanted[key] = wanted.get(key, 0) + 1
    problems = []
    for (model, layer), count in sorted(wanted.items()):
        source = experiment.models[model].source
        if source not in layers_by_source:
            layers_by_source[source] = model_num_layers(source)
        n_layers = layers_by_source[source]
        if n_layers is not None and not -(n_layers + 1) <= layer <= n_layers:
            problems.append(f"setting realign_layer={layer} ({count} trial(s) of model {model!r}): outside "
                            f"{-(n_layers + 1)}..{n_layers} for its {n_layers} layers (0 = embeddings, -1 = last layer)")
    return problems


def device_problems(experiment: Experiment, settings: Mapping[Trial, Settings], total_gpus: float,
                    where: str) -> list[str]:
    """`device="cuda"` where no GPU is (or a trial asks for none) would fail every such trial; a
    trial sees only the GPUs it asks for (Ray sets CUDA_VISIBLE_DEVICES), so `cuda:N` needs N+1."""
    problems = []
    for trial in experiment.trials:
        device = settings[trial].device
        if not device.startswith("cuda"):
            continue
        spec = experiment.models[trial.model]
        index = int(device.partition(":")[2] or 0)
        if total_gpus <= 0:
            problems.append(f"setting device={device!r}: {where} has no GPU (use device='auto' or 'cpu')")
        elif spec.gpu <= 0:
            problems.append(f"setting device={device!r}: models[{trial.model!r}]['gpu'] is 0, so its trials see no GPU")
        elif index >= max(1, int(spec.gpu)):
            problems.append(f"setting device={device!r}: a trial of model {trial.model!r} asks for {spec.gpu:g} GPU "
                            f"and sees only that one (use 'cuda' or 'cuda:0')")
    return list(dict.fromkeys(problems))
