"""Load a sweep's results into one tidy table (one row per trial).

Tidy table contract
===================
``python -m analysis RESULTS`` accepts either a Ray Tune experiment folder or a table file
(``.parquet`` or ``.csv``) laid out as follows; ``DIR/trials.parquet`` and ``DIR/trials.csv``
are written in the same layout.

One row per trial. Columns:

Config axes (every row; the grid the sweep ran):
    ``model``    the model string the sweep used (hub id such as ``xlm-roberta-base``, or a
                 local alias such as ``e5-small``); the paper's four get display names
                 (distilmBERT, mBERT, XLM-R Base, XLM-R Large), others are shown as given.
    ``task``     ``udpos`` | ``wikiann`` | ``xnli``.
    ``realign``  ``none`` | ``before`` | ``joint``.
    ``pairs``    ``dico`` | ``fastalign`` | ``awesome`` (source of word pairs for realignment
                 and for the alignment evaluation).
    ``corpus``   translation corpus name, e.g. ``opus100`` | ``multiun`` | ``ntrex``.
    ``seed``     integer fine-tuning seed.
Names other than the paper's (a new model, task, realignment method, pair source or corpus)
are kept as they are; the paper's order is used for display only.
Optional: ``trial_id``, ``git_commit``, ``status`` (Ray's trial status, e.g. TERMINATED/ERROR),
and ``settings/{name}`` columns (Ray: ``config/settings/{name}`` or ``config/trial/settings/{name}``)
for trial settings whose value differs between trials. Trials with the same axes but different
settings are different conditions: e.g. NLI baselines fine-tuned 5 epochs (experiment 1) and 2
epochs (the controlled experiment, paper App. B.3). Settings that only say where the run
happened (``cache_dir``, ``num_threads``) are dropped.

Failed and unfinished trials: a trial with status ERROR (or an ``error`` value) is failed; a
trial without any ``score/...`` or ``ctl/...`` value (its final report never came) is
unfinished. :func:`load_experiment` sets both aside; only finished trials are results.

Metric columns (the names the trial reports, flattened with "/"):
    ``score/{lang}``  task metric on that language's test set, ``en`` included, in [0, 1]
                      (accuracy for udpos/xnli, entity F1 for wikiann).
    ``ctl/{lang}``    cross-lingual transfer (score_lang - score_en) / score_en, target
                      languages only (paper Eq. 1); filled from the scores when absent.
    ``align/{stage}/{kind}/{direction}/{lang}/{layer}``  nearest-neighbour top-1 accuracy:
                      stage ``pretrained`` | ``realigned`` | ``finetuned`` (``realigned`` only
                      for realign=before), kind ``strong`` | ``weak``, direction ``en-x`` |
                      ``x-en``, layer an integer 0..L (0 = embeddings).
    ``num_layers``    L, the number of Transformer layers (inferred from the largest
                      alignment layer when absent).
Other reported values (``loss``, ``step``, ``epoch``...) are kept as they are.

Conventions used by the tables: alignment "before fine-tuning" is stage ``pretrained`` (for
realign=before trials stage ``realigned`` also exists), "after" is ``finetuned``. The last
layer is ``num_layers``, the penultimate ``num_layers - 1``; depth counts from the last
layer (0 = last, 1 = penultimate, ...).

Ray Tune's result tables prefix config entries (``config/model``, nested
``config/axes/model``) and may nest metrics under a prefix; :func:`tidy` removes those
prefixes.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis import files
from trainables.models import PAPER_MODEL_NAMES, paper_model
from trainables.models import PAPER_MODELS as PAPER_MODEL_LIST

# ---------------------------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------------------------
CONFIG_AXES: tuple[str, ...] = ("model", "task", "realign", "pairs", "corpus", "seed")
# Axes without which no table can be built; pairs/corpus may be absent in a baseline-only sweep.
REQUIRED_AXES: tuple[str, ...] = ("model", "task", "realign", "seed")
OPTIONAL_COLUMNS: tuple[str, ...] = ("trial_id", "git_commit", "status")
# Trial settings (Ray: config/settings/{name}) kept as settings/{name} when they differ between
# trials: trials with equal axes but different settings are different conditions.
SETTINGS_PREFIX = "settings"
METRIC_ROOTS: tuple[str, ...] = ("score", "ctl", "align", "num_layers")

REALIGN_METHODS: tuple[str, ...] = ("none", "before", "joint")  # the paper's, in its order
PAIR_SOURCES: tuple[str, ...] = ("fastalign", "awesome", "dico")  # the paper's table order
PAPER_TASKS: tuple[str, ...] = ("udpos", "wikiann", "xnli")
PAPER_MODELS: tuple[str, ...] = PAPER_MODEL_NAMES  # the paper's order
PAPER_TARGET_LANGUAGES: tuple[str, ...] = ("ar", "es", "fr", "ru", "zh")
PAPER_CORPORA: tuple[str, ...] = ("opus100", "multiun")
PAPER_SEEDS_PER_CELL = 5  # Section 4: five seeds per model x task (x method)
SOURCE_LANGUAGE = "en"
# Chance level of the English score per task, in [0, 1]: uniform guessing among the 17 UPOS
# tags, entity F1 0 (no entity found), uniform guessing among the 3 NLI labels. A trial at or
# below it did not learn the task: its CTL (Eq. 1, relative to the English score) is meaningless.
CHANCE_SCORES: dict[str, float] = {"udpos": 1 / 17, "wikiann": 0.0, "xnli": 1 / 3}
CHANCE_TOLERANCE = 1e-9
# Settings that say where or how fast a trial ran, not what it computed: never a condition.
RUN_ENVIRONMENT_SETTINGS: tuple[str, ...] = ("cache_dir", "num_threads")
FAILED_STATUSES: frozenset[str] = frozenset({"ERROR"})
FINISHED = "finished"
FAILED = "failed"
UNFINISHED = "unfinished"

STAGE_BEFORE = "pretrained"
STAGE_REALIGNED = "realigned"
STAGE_AFTER = "finetuned"

MODEL_DISPLAY_NAMES: dict[str, str] = {model.name: model.display_name for model in PAPER_MODEL_LIST}
TASK_DISPLAY_NAMES: dict[str, str] = {"udpos": "POS", "wikiann": "NER", "xnli": "NLI"}

# Values Ray Tune adds to every result; they are bookkeeping, not trial metrics.
RAY_BOOKKEEPING_COLUMNS: frozenset[str] = frozenset(
    {
        "timestamp", "checkpoint_dir_name", "done", "training_iteration", "date",
        "time_this_iter_s", "time_total_s", "pid", "hostname", "node_ip",
        "time_since_restore", "iterations_since_restore", "experiment_tag", "logdir",
        "should_checkpoint", "experiment_id", "episodes_total", "timesteps_total",
        "timesteps_since_restore", "warmup_time",
    }
)

ALIGN_PATTERN = re.compile(
    r"^align/(?P<stage>[^/]+)/(?P<kind>strong|weak)/(?P<direction>en-x|x-en)/(?P<lang>[^/]+)/(?P<layer>\d+)$"
)
SCORE_PATTERN = re.compile(r"^score/(?P<lang>[^/_]+)$")  # not score/en_dev (the CTL reference, when dev)
CTL_PATTERN = re.compile(r"^ctl/(?P<lang>[^/]+)$")
# A score of 1 is perfect; allow float noise above it.
SCORE_TOLERANCE = 1e-9
TABLE_SUFFIXES: tuple[str, ...] = (".parquet", ".csv")
RAY_STATE_GLOB = "experiment_state*.json"


class ResultsError(ValueError):
    """A bad RESULTS input; the message is one line naming the path and what was expected."""


# ---------------------------------------------------------------------------------------------
# Display helpers
# ---------------------------------------------------------------------------------------------
def canonical_model(name: str) -> str:
    """The paper's hub id when ``name`` denotes one of its four models (``FacebookAI/xlm-roberta-base``
    or ``/models/xlm-roberta-base`` -> ``xlm-roberta-base``), else ``name`` unchanged."""
    model = paper_model(name)
    return model.name if model is not None else str(name)


def display_model(name: str) -> str:
    """Display name of a model: the paper's names for its four models, else the name itself."""
    return MODEL_DISPLAY_NAMES.get(canonical_model(name), str(name))


def display_task(task: str) -> str:
    """POS / NER / NLI for the paper's tasks, else the task name itself."""
    return TASK_DISPLAY_NAMES.get(task, str(task))


def normalised_name(name: Any) -> str:
    """Lower-case alphanumerics only, so ``multiUN``, ``multi_un`` and ``multiun`` compare equal."""
    return re.sub(r"[^0-9a-z]", "", str(name).lower())


def ordered(values: Any, preferred: tuple[str, ...], key: Any = None) -> list:
    """``values`` in ``preferred`` order first, then the others sorted (``key`` maps a value to
    the name compared with ``preferred``)."""
    key = key or (lambda v: v)
    rank = {name: i for i, name in enumerate(preferred)}
    unique = list(dict.fromkeys(v for v in values if not is_missing(v)))
    return sorted(unique, key=lambda v: (rank.get(key(v), len(rank)), str(v)))


def model_order(models: Any) -> list[str]:
    """Models in the paper's order (distilmBERT, mBERT, XLM-R Base, XLM-R Large), then others."""
    return ordered(models, PAPER_MODELS, key=canonical_model)


def language_order(langs: Any) -> list[str]:
    """Target languages in the paper's order (ar, es, fr, ru, zh), then others sorted."""
    return ordered([l for l in langs if l != SOURCE_LANGUAGE], PAPER_TARGET_LANGUAGES)


def task_order(tasks: Any) -> list[str]:
    """Tasks in the paper's order (POS, NER, NLI), then others."""
    return ordered(tasks, PAPER_TASKS)


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


# ---------------------------------------------------------------------------------------------
# Column normalisation
# ---------------------------------------------------------------------------------------------
def _config_axis_name(column: str) -> str | None:
    """``config/model`` -> ``model``; ``config/axes/model`` -> ``model``; other config -> None."""
    parts = column.split("/")
    if parts[0] != "config" or len(parts) < 2:
        return None
    wanted = CONFIG_AXES + OPTIONAL_COLUMNS
    if "/".join(parts[1:]) in wanted:
        return "/".join(parts[1:])
    return parts[-1] if parts[-1] in wanted else None


def _config_setting_name(column: str) -> str | None:
    """``config/settings/epochs`` or ``config/trial/settings/epochs`` (the sweep nests its
    trial config under ``trial``) -> ``settings/epochs``; anything else -> None."""
    parts = column.split("/")
    if parts[0] != "config":
        return None
    for i in range(1, len(parts) - 1):
        if parts[i] == SETTINGS_PREFIX:
            return "/".join(parts[i:])
    return None


def _metric_name(column: str) -> str:
    """Drop any prefix before the first metric root: ``metrics/score/en`` -> ``score/en``."""
    parts = column.split("/")
    for i, part in enumerate(parts):
        if part in METRIC_ROOTS and (part != "num_layers" or i == len(parts) - 1):
            return "/".join(parts[i:])
    return column


def normalise_columns(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """Rename Ray-style columns to the contract's names, drop Ray bookkeeping and non-axis
    config entries. Plain columns win over prefixed duplicates (missing values filled from them)."""
    renamed: dict[str, pd.Series] = {}
    origins: dict[str, str] = {}
    # Plain names first so they take precedence over config/... duplicates.
    for column in sorted(frame.columns, key=lambda c: str(c).startswith("config/")):
        name = str(column)
        if name in RAY_BOOKKEEPING_COLUMNS:
            continue
        if (setting := _config_setting_name(name)) is not None:
            target = setting
        elif name.startswith("config/"):
            axis = _config_axis_name(name)
            if axis is None:
                continue
            target = axis
        else:
            target = _metric_name(name)
        series = frame[column]
        if target in renamed:
            if target in CONFIG_AXES and name.startswith("config/") and origins[target].startswith("config/"):
                raise ResultsError(
                    f"{source}: config axis '{target}' is ambiguous (both {origins[target]} and {name})"
                )
            renamed[target] = renamed[target].combine_first(series)
        else:
            renamed[target] = series
            origins[target] = name
    return pd.DataFrame(renamed, index=frame.index)


def _natural_metric_key(column: str) -> tuple:
    """Sort key: config, optional columns, num_layers, score, ctl, align (layers numerically)."""
    if column in CONFIG_AXES:
        return (0, CONFIG_AXES.index(column))
    if column in OPTIONAL_COLUMNS:
        return (1, OPTIONAL_COLUMNS.index(column))
    if column.startswith(f"{SETTINGS_PREFIX}/"):
        return (1.5, column)
    if column == "num_layers":
        return (2,)
    if (m := SCORE_PATTERN.match(column)) is not None:
        return (3, m["lang"] != SOURCE_LANGUAGE, m["lang"])
    if (m := CTL_PATTERN.match(column)) is not None:
        return (4, m["lang"])
    if (m := ALIGN_PATTERN.match(column)) is not None:
        return (5, m["stage"], m["kind"], m["direction"], m["lang"], int(m["layer"]))
    return (6, column)


# ---------------------------------------------------------------------------------------------
# Validation and derived columns
# ---------------------------------------------------------------------------------------------
def _paper_spelling(value: Any, names: tuple[str, ...]) -> Any:
    """A paper name written in another case (``Before``) -> the paper's spelling; any other
    name is kept as it is."""
    if not isinstance(value, str):
        return value
    lowered = {n.lower(): n for n in names}
    return lowered.get(value.lower(), value)


def tidy(frame: pd.DataFrame, source: str, drop_constant_settings: bool = True) -> pd.DataFrame:
    """Normalise column names, check the contract, derive ``ctl``/``num_layers`` where absent,
    and order columns (axes, optional columns, metrics). ``source`` names the input in errors.
    ``drop_constant_settings=False`` keeps every ``settings/...`` column (to compare trials
    of several results before deciding which settings vary)."""
    frame = normalise_columns(frame, source)
    missing_axes = [axis for axis in REQUIRED_AXES if axis not in frame.columns]
    if missing_axes:
        raise ResultsError(
            f"{source}: missing config column(s) {', '.join(missing_axes)}; expected columns "
            f"{', '.join(CONFIG_AXES)} plus score/..., ctl/..., align/... metrics"
        )
    frame = frame.reset_index(drop=True).copy()
    for axis in ("pairs", "corpus"):
        if axis not in frame.columns:
            frame[axis] = np.nan
    for axis in ("model", "task", "realign", "pairs", "corpus"):
        frame[axis] = frame[axis].map(lambda v: np.nan if is_missing(v) or str(v).strip() == "" else str(v).strip())
    frame["realign"] = frame["realign"].map(lambda v: _paper_spelling(v, REALIGN_METHODS))
    for axis in ("model", "task", "realign"):
        empty = frame.index[frame[axis].isna()]
        if len(empty):
            raise ResultsError(f"{source}: row {empty[0]}: config column '{axis}' is empty")
    seeds = pd.to_numeric(frame["seed"], errors="coerce")
    if seeds.isna().any():
        row = seeds.index[seeds.isna()][0]
        raise ResultsError(f"{source}: row {row}: seed={frame['seed'][row]!r} is not an integer")
    frame["seed"] = seeds.astype("int64")

    frame = _settings_as_scalars(frame)
    if drop_constant_settings:
        frame = drop_constant_settings_columns(frame)
    score_columns = [c for c in frame.columns if SCORE_PATTERN.match(c)]
    for column in score_columns + [c for c in frame.columns if ALIGN_PATTERN.match(c)]:
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    for column in score_columns:
        values = frame[column]
        bad = values[(values > 1 + SCORE_TOLERANCE) | (values < 0)]
        if len(bad):
            raise ResultsError(
                f"{source}: row {bad.index[0]}: {column}={bad.iloc[0]} is outside [0, 1] "
                "(scores are fractions, not percentages)"
            )
    frame = _fill_ctl(frame)
    frame = _fill_num_layers(frame)
    return order_columns(frame)


def order_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns in the contract's order: axes, optional columns, settings, metrics."""
    # copy(): one contiguous block instead of columns added one by one.
    return frame[sorted(frame.columns, key=_natural_metric_key)].copy()


def _settings_as_scalars(frame: pd.DataFrame) -> pd.DataFrame:
    """``settings/...`` values as scalars (lists and dicts become JSON text, so they compare
    and group); the run-environment settings dropped."""
    for column in [c for c in frame.columns if c.startswith(f"{SETTINGS_PREFIX}/")]:
        if column.split("/", 1)[1] in RUN_ENVIRONMENT_SETTINGS:
            frame = frame.drop(columns=column)
            continue
        frame[column] = frame[column].map(
            lambda v: json.dumps(v, sort_keys=True) if isinstance(v, (list, tuple, dict)) else v
        )
    return frame


def drop_constant_settings_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Keep the ``settings/...`` columns whose value differs between trials; drop the others."""
    constant = [
        c for c in frame.columns
        if c.startswith(f"{SETTINGS_PREFIX}/") and frame[c].astype(str).nunique(dropna=False) <= 1
    ]
    return frame.drop(columns=constant)


def setting_columns(trials: pd.DataFrame) -> list[str]:
    """The ``settings/...`` columns of a tidy table (settings that differ between trials)."""
    return [c for c in trials.columns if c.startswith(f"{SETTINGS_PREFIX}/")]


def condition_labels(trials: pd.DataFrame) -> pd.Series:
    """Per trial, its settings that differ between trials as text (``epochs=2``), '' if none."""
    columns = setting_columns(trials)
    if not columns:
        return pd.Series("", index=trials.index)
    parts = [
        trials[c].map(lambda v, name=c.split("/", 1)[1]: "" if is_missing(v) else f"{name}={v}")
        for c in columns
    ]
    return pd.concat(parts, axis=1).apply(lambda row: ", ".join(p for p in row if p), axis=1)


def _fill_ctl(frame: pd.DataFrame) -> pd.DataFrame:
    """CTL = (score_x - score_en) / score_en (paper Eq. 1) wherever the trial did not report it."""
    source_column = f"score/{SOURCE_LANGUAGE}"
    if source_column not in frame.columns:
        return frame
    english = frame[source_column].where(frame[source_column] > 0)
    derived = {}
    for column in frame.columns:
        match = SCORE_PATTERN.match(column)
        if match is None or match["lang"] == SOURCE_LANGUAGE:
            continue
        ctl_column = f"ctl/{match['lang']}"
        computed = (frame[column] - english) / english
        if ctl_column in frame.columns:
            frame[ctl_column] = pd.to_numeric(frame[ctl_column], errors="coerce").fillna(computed)
        else:
            derived[ctl_column] = computed
    if derived:
        frame = pd.concat([frame, pd.DataFrame(derived, index=frame.index)], axis=1)
    return frame


def _fill_num_layers(frame: pd.DataFrame) -> pd.DataFrame:
    """num_layers = largest alignment layer reported by the trial, where absent."""
    align_columns = [c for c in frame.columns if ALIGN_PATTERN.match(c)]
    if align_columns:
        layers = np.array([int(ALIGN_PATTERN.match(c)["layer"]) for c in align_columns], dtype=float)
        present = frame[align_columns].notna().to_numpy()
        inferred = pd.Series(np.where(present, layers, -np.inf).max(axis=1), index=frame.index)
        inferred = inferred.where(np.isfinite(inferred))
    else:
        inferred = pd.Series(np.nan, index=frame.index)
    if "num_layers" in frame.columns:
        frame["num_layers"] = pd.to_numeric(frame["num_layers"], errors="coerce").fillna(inferred)
    else:
        frame["num_layers"] = inferred
    return frame


# ---------------------------------------------------------------------------------------------
# Readers
# ---------------------------------------------------------------------------------------------
def _flatten(mapping: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}/"))
        else:
            flat[name] = value
    return flat


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


def _error_last_line(trial: Any) -> str | None:
    """The last line of a failed trial's error (``error.txt``: Ray's traceback, whose last line
    is the exception), or None when Ray kept no error."""
    text = None
    try:
        text = trial.get_error()
        if not text and (error := trial.get_pickled_error()) is not None:
            text = f"{type(error).__name__}: {error}"
    except Exception:  # an unreadable error file must not stop the analysis of the others
        return None
    lines = [line.strip() for line in str(text or "").splitlines() if line.strip()]
    return lines[-1][:MAX_ERROR_CHARS] if lines else None


MAX_ERROR_CHARS = 300  # an error line longer than this is cut in the report


def _experiment_folders_inside(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.is_dir() and any(p.glob(RAY_STATE_GLOB)))


def read_ray_experiment(path: Path) -> pd.DataFrame:
    """Read a Ray Tune experiment folder through Ray's own result API (no trainable needed).

    Each trial's row holds its config (as ``config/...``), its status, the last line of its
    error (``error``, failed trials), the time of its last report (``timestamp``) and every
    metric it reported, taking for each metric the last value it reported: a trial may report
    its pretrained alignment, its training losses and its final scores in different reports.
    """
    path = Path(path)
    if not any(path.glob(RAY_STATE_GLOB)):
        inside = _experiment_folders_inside(path) if path.is_dir() else []
        hint = f"; it holds experiment folders ({', '.join(inside)}): pass those" if inside else ""
        raise ResultsError(
            f"{path}: not a Ray Tune experiment folder (no {RAY_STATE_GLOB}); expected an experiment "
            f"folder or a .parquet/.csv tidy table{hint}"
        )
    # Ray is imported here only: the rest of the package must work without it.
    from ray.tune import ExperimentAnalysis

    try:
        analysis = ExperimentAnalysis(str(path))
    except Exception as error:  # Ray raises various types for unreadable state
        raise ResultsError(
            f"{path}: Ray could not read the experiment state ({type(error).__name__}: {_one_line(error)})"
        ) from error
    histories = analysis.trial_dataframes
    rows = []
    for trial in analysis.trials:
        row: dict[str, Any] = {}
        history = histories.get(trial.trial_id)
        if history is not None and len(history):
            # Last reported value of each metric (NaN where a report did not include it).
            row.update(history.ffill().iloc[-1].to_dict())
        elif trial.last_result:
            row.update(_flatten({k: v for k, v in trial.last_result.items() if k != "config"}))
        # The trial's own config wins over the copy Ray writes into each result.
        row.update({f"config/{k}": v for k, v in _flatten(dict(trial.config or {})).items()})
        row["trial_id"] = trial.trial_id
        row["status"] = trial.status
        row["error"] = _error_last_line(trial) if trial.status in FAILED_STATUSES else None
        rows.append(row)
    if not rows:
        raise ResultsError(f"{path}: the Ray Tune experiment has no trials")
    return pd.DataFrame(rows)


SWEEP_MARKER = "sweep-run.json"  # an experiment folder of the sweep engine (sweep.ledger)
SWEEP_KEY_COLUMN = "config/trial/key"  # a trial's content key in its config


def read_sweep_folder(path: Path) -> pd.DataFrame:
    """Read an experiment folder of the sweep engine: one Tune run per batch of trials, and a
    marker whose ``current`` map says in which batch each trial of the experiment lives. Only
    those rows are kept: trials of an earlier version of the experiment (a setting since changed)
    stay in their batch, read only when that batch's folder is given itself."""
    path = Path(path)
    try:
        current = json.loads((path / SWEEP_MARKER).read_text())["current"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ResultsError(f"{path / SWEEP_MARKER}: not a sweep marker with a 'current' map ({error})") from error
    frames = []
    for batch in sorted(set(current.values()) - {None}):
        if not any((path / batch).glob(RAY_STATE_GLOB)):
            continue  # a batch Tune has not saved yet: none of its trials has finished
        frame = read_ray_experiment(path / batch)
        keys = frame[SWEEP_KEY_COLUMN] if SWEEP_KEY_COLUMN in frame.columns else pd.Series(None, index=frame.index)
        frames.append(frame[keys.map(lambda key: current.get(key) == batch)])
    frames = [frame for frame in frames if len(frame)]
    if not frames:
        raise ResultsError(f"{path}: no trial of the experiment has reported yet")
    return pd.concat(frames, ignore_index=True)


def read_table_file(path: Path) -> pd.DataFrame:
    """Read a tidy table from ``.parquet`` or ``.csv``."""
    path = Path(path)
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except Exception as error:
        raise ResultsError(
            f"{path}: could not be read as {path.suffix[1:]} ({type(error).__name__}: {_one_line(error)})"
        ) from error


def read_raw(path: str | Path) -> pd.DataFrame:
    """The untidied rows of RESULTS (a Ray Tune experiment folder or a .parquet/.csv table)."""
    path = Path(path)
    if not path.exists():
        raise ResultsError(
            f"{path}: does not exist; expected a Ray Tune experiment folder or a .parquet/.csv tidy table"
        )
    if path.is_dir():
        raw = read_sweep_folder(path) if (path / SWEEP_MARKER).is_file() and not any(path.glob(RAY_STATE_GLOB)) \
            else read_ray_experiment(path)
    elif path.suffix in TABLE_SUFFIXES:
        raw = read_table_file(path)
    else:
        raise ResultsError(
            f"{path}: unsupported file type '{path.suffix}'; expected a Ray Tune experiment folder "
            "or a .parquet/.csv tidy table"
        )
    if raw.empty:
        raise ResultsError(f"{path}: contains no trials")
    return raw


@dataclass
class Results:
    """One experiment read from one or more results: the finished trials (the tidy table every
    table uses) and the trials set aside, with the axes, status and error of each."""

    trials: pd.DataFrame
    failed: pd.DataFrame  # axes, status, error, source
    unfinished: pd.DataFrame  # axes, status, source
    sources: list[str]
    duplicates: int = 0  # rows of a trial also found, newer or finished, in another source


def trial_outcomes(frame: pd.DataFrame) -> pd.Series:
    """Per trial: ``failed`` (status ERROR or an error recorded), ``unfinished`` (no final
    score or CTL reported yet: still pending or running, or stopped before its last report), or
    ``finished``."""
    status = frame["status"] if "status" in frame.columns else pd.Series(np.nan, index=frame.index)
    failed = status.map(lambda v: isinstance(v, str) and v.strip().upper() in FAILED_STATUSES)
    if "error" in frame.columns:
        failed |= frame["error"].map(lambda v: not is_missing(v) and str(v).strip() != "")
    final_columns = [c for c in frame.columns if SCORE_PATTERN.match(c) or CTL_PATTERN.match(c)]
    has_final = frame[final_columns].notna().any(axis=1) if final_columns else pd.Series(False, index=frame.index)
    return pd.Series(np.where(failed, FAILED, np.where(has_final, FINISHED, UNFINISHED)), index=frame.index)


def did_not_learn(trials: pd.DataFrame) -> pd.Series:
    """Per trial: True when its English score is at or below its task's chance level
    (:data:`CHANCE_SCORES`); False when the task has no known chance level or no English score."""
    english = f"score/{SOURCE_LANGUAGE}"
    if english not in trials.columns or trials.empty:
        return pd.Series(False, index=trials.index)
    chance = trials["task"].map(CHANCE_SCORES)
    score = pd.to_numeric(trials[english], errors="coerce")
    return (score <= chance + CHANCE_TOLERANCE).fillna(False).astype(bool)


def trial_identity(frame: pd.DataFrame) -> pd.Series:
    """A trial's identity as text: its axes and every setting of its config (what decides what
    it computes), so that the same trial found in two results compares equal."""
    columns = [*CONFIG_AXES, *sorted(setting_columns(frame))]
    parts = frame[columns].astype(object).where(frame[columns].notna(), "")
    return parts.astype(str).agg("\x1f".join, axis=1)


def _drop_duplicates_across_sources(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Keep one row per trial found in several sources: a finished one before a failed or
    unfinished one, then the newest (time of its last report), then the source given last."""
    identity = trial_identity(frame)
    spread = frame.groupby(identity)["_source"].transform("nunique")
    shared = frame[spread > 1]
    if shared.empty:
        return frame, 0
    rank = shared.assign(
        _identity=identity[shared.index],
        _finished=(trial_outcomes(shared) == FINISHED).astype(int),
        _time=shared["_time"].fillna(-np.inf),
    ).sort_values(["_identity", "_finished", "_time", "_source"], kind="stable")
    keep = rank.groupby("_identity").tail(1).index
    dropped = shared.index.difference(keep)
    return frame.drop(index=dropped), len(dropped)


def _set_aside(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    present = [c for c in columns if c in frame.columns]
    out = frame[present].copy()
    for column in columns:
        if column not in out.columns:
            out[column] = np.nan
    return out[columns].reset_index(drop=True)


def load_experiment(paths: Sequence[str | Path]) -> Results:
    """Read one or more RESULTS (Ray Tune experiment folders or .parquet/.csv tables) as one
    experiment: their trials concatenated, a trial found in several counted once (the newest
    kept, a finished one before a failed one), failed and unfinished trials set aside."""
    if not paths:
        raise ResultsError("no RESULTS given; expected Ray Tune experiment folders or .parquet/.csv tidy tables")
    frames = []
    for index, path in enumerate(paths):
        raw = read_raw(path)
        # Time of the trial's last report (Ray's result timestamp), else the file's own time.
        stamps = pd.to_numeric(raw["timestamp"], errors="coerce") if "timestamp" in raw.columns else None
        if stamps is None or stamps.isna().all():
            stamps = pd.Series(Path(path).stat().st_mtime, index=raw.index)
        frame = tidy(raw, str(path), drop_constant_settings=False)
        frames.append(frame.assign(_source=index, _time=stamps.to_numpy(), _source_name=str(path)))
    combined = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    duplicates = 0
    if len(frames) > 1:
        combined, duplicates = _drop_duplicates_across_sources(combined)
    outcome = trial_outcomes(combined)
    aside = [*CONFIG_AXES, "trial_id", "status"]
    named = combined.drop(columns=["source"], errors="ignore").rename(columns={"_source_name": "source"})
    failed = _set_aside(named[outcome == FAILED], [*aside, "error", "source"])
    unfinished = _set_aside(named[outcome == UNFINISHED], [*aside, "source"])
    finished = combined[outcome == FINISHED].drop(columns=["_source", "_time", "_source_name"])
    finished = finished.drop(columns=[c for c in ("error",) if c in finished.columns])
    # Columns only the set-aside trials had (their partial progress) are not results.
    finished = finished.dropna(axis=1, how="all").reset_index(drop=True)
    for axis in CONFIG_AXES:
        if axis not in finished.columns:
            finished[axis] = np.nan
    finished = order_columns(drop_constant_settings_columns(finished))
    return Results(finished, failed, unfinished, [str(p) for p in paths], duplicates)


def load_results(path: str | Path) -> pd.DataFrame:
    """The tidy table of the finished trials of RESULTS: a Ray Tune experiment folder or a
    .parquet/.csv table (see :func:`load_experiment` for the trials set aside)."""
    return load_experiment([path]).trials


def write_trials(trials: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Write ``trials.parquet`` and ``trials.csv`` into ``out_dir`` atomically."""
    out_dir = Path(out_dir)
    return [
        files.write_parquet(out_dir / "trials.parquet", trials),
        files.write_csv(out_dir / "trials.csv", trials),
    ]


# ---------------------------------------------------------------------------------------------
# Long views of the metrics
# ---------------------------------------------------------------------------------------------
TRIAL_KEYS: tuple[str, ...] = ("model", "task", "realign", "pairs", "corpus", "seed")


def target_languages(trials: pd.DataFrame) -> list[str]:
    """Target languages with a score, ctl or alignment column, in the paper's order."""
    langs = set()
    for column in trials.columns:
        for pattern in (SCORE_PATTERN, CTL_PATTERN, ALIGN_PATTERN):
            if (match := pattern.match(column)) is not None:
                langs.add(match["lang"])
    return language_order(langs)


def _long(trials: pd.DataFrame, pattern: re.Pattern, value_name: str) -> pd.DataFrame:
    """Melt the columns matching ``pattern`` into rows: trial (row index), the pattern's named
    groups, the config axes, and ``value_name``; rows without a value are dropped."""
    columns = [c for c in trials.columns if pattern.match(c)]
    group_names = list(pattern.groupindex)
    out_columns = ["trial", *TRIAL_KEYS, "condition", "num_layers", *group_names, value_name]
    if not columns:
        return pd.DataFrame(columns=out_columns)
    parsed = pd.DataFrame([pattern.match(c).groupdict() for c in columns], index=pd.Index(columns, name="column"))
    stacked = trials[columns].apply(pd.to_numeric, errors="coerce").stack().dropna()
    stacked.index = stacked.index.set_names(["trial", "column"])
    long = stacked.rename(value_name).reset_index().join(parsed, on="column").drop(columns="column")
    context = trials[list(TRIAL_KEYS) + ["num_layers"]].assign(condition=condition_labels(trials))
    long = long.join(context, on="trial")
    return long[out_columns]


def alignment_long(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per (trial, stage, kind, direction, lang, layer) with the alignment ``value``
    and ``depth`` = num_layers - layer (0 = last layer)."""
    long = _long(trials, ALIGN_PATTERN, "value")
    long["layer"] = long["layer"].astype("int64")
    long["depth"] = (long["num_layers"] - long["layer"]).astype("int64")
    return long


def ctl_long(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per (trial, target lang) with ``ctl``."""
    long = _long(trials, CTL_PATTERN, "ctl")
    return long[long["lang"] != SOURCE_LANGUAGE]


def score_long(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per (trial, lang) with ``score`` in [0, 1], English included."""
    return _long(trials, SCORE_PATTERN, "score")
