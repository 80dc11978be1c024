"""The paper's tables, computed from the tidy trials table (see :mod:`analysis.results`).

Each ``tableN(trials, settings)`` returns a long numeric DataFrame (one row per cell, the cell's
keys as columns; ``status`` is ``missing`` for a cell the layout expects but the results lack),
with human-readable notes in ``frame.attrs["notes"]``. ``render(name, frame)`` lays it out like
the paper, and :func:`write_table` writes Markdown, LaTeX and CSV (the CSV is the long numeric
frame, full precision).

Which trials feed which table:
* Sections 4-5 (Tables 2, 3, 8-12): realign=none trials (the paper's first experiment), one
  alignment source (pairs, corpus) and, per task, one condition (see :func:`experiment1_trials`).
* Section 6 / App. F (Tables 4-6, 13-17): realigned trials, each compared with the realign=none
  baseline of the same model and task fine-tuned in the same condition (for NLI the paper's
  baselines were fine-tuned 2 epochs like the realigned runs, App. B.3).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import files, results
from analysis.render import MISSING, NOT_APPLICABLE, Grid, to_latex, to_markdown
from analysis.results import (
    PAIR_SOURCES,
    PAPER_TASKS,
    SOURCE_LANGUAGE,
    STAGE_AFTER,
    STAGE_BEFORE,
    canonical_model,
    display_model,
    display_task,
    model_order,
    normalised_name,
    task_order,
)
from analysis.stats import BootstrapSettings, seed_statistics, spearman, spearman_bca_interval


@dataclass(frozen=True)
class AnalysisSettings:
    """Every number the analysis uses, with the paper's choices."""

    bootstrap: BootstrapSettings = BootstrapSettings()  # App. C: BCa, 2000 resamples, 95%
    significance_level: float = 0.05  # Table 2: cells with p >= 0.05 are marked
    # The reference code's tables use np.std (population std, ddof=0) over the 5 seeds.
    std_ddof: int = 0
    score_scale: float = 100.0  # the paper prints scores in percent
    # The paper's main setting (Section 6): pairs from a bilingual dictionary, OPUS-100 corpus.
    preferred_pairs: str = "dico"
    preferred_corpus: str = "opus100"
    table3_languages: tuple[str, ...] = ("ar", "es", "ru")  # Table 3 shows three languages
    # Table 6 is about XLM-R Base only; other runs fall back to every model present.
    table6_models: tuple[str, ...] = ("xlm-roberta-base",)
    figure_language: str = "ar"  # Figures 1, 4, 5: English -> Arabic
    # A trial whose English score is at chance level did not learn the task and its CTL is
    # meaningless; the paper is silent (its runs all learned). False: leave such trials out of
    # the CTL correlations (Tables 2, 8, 9, 11, 12; Figures 2, 3), naming them in the report.
    keep_unlearned: bool = False


DEFAULT_SETTINGS = AnalysisSettings()

LAYER_LABELS = {0: "last", 1: "penult"}  # Tables 2, 8, 9: depth 0 and 1
STAGES = {STAGE_BEFORE: "before", STAGE_AFTER: "after"}  # alignment before/after fine-tuning
KINDS = ("weak", "strong")
DIRECTIONS = ("en-x", "x-en")
AVERAGE_LANGUAGE = "avg"  # pseudo-language: mean over target languages of one trial
BASELINE = "none"
REALIGNED_METHODS = ("before", "joint")
# The controlled experiment's methods in the paper's row order (Tables 6, 13-17).
METHOD_ORDER: tuple[tuple[str, str], ...] = (
    (BASELINE, ""),
    *((realign, pairs) for realign in REALIGNED_METHODS for pairs in PAIR_SOURCES),
)
# Appendix F: the detailed tables, one per task and corpus.
CONTROLLED_TABLES: dict[str, tuple[str, str]] = {
    "table13": ("udpos", "opus100"),
    "table14": ("udpos", "multiun"),
    "table15": ("wikiann", "opus100"),
    "table16": ("wikiann", "multiun"),
    "table17": ("xnli", "opus100"),
}


# ---------------------------------------------------------------------------------------------
# Shared preparation
# ---------------------------------------------------------------------------------------------
@dataclass
class Context:
    """The tidy trials with the selections and long views every table shares."""

    trials: pd.DataFrame
    settings: AnalysisSettings
    experiment1: pd.DataFrame  # realign=none trials used for Sections 4-5
    points: pd.DataFrame  # alignment x CTL points of experiment1 (before/after stages)
    controlled: pd.DataFrame  # mean/std over seeds of scores, realigned and baselines
    targets: list[str]  # target languages present
    notes: list[str] = field(default_factory=list)  # selections made, shown in the report
    unlearned: pd.DataFrame | None = None  # trials at or below chance in English (flagged)


def _with_notes(frame: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    frame.attrs["notes"] = list(dict.fromkeys(notes))
    return frame


def _most_common(values: pd.Series) -> str:
    counts = values.value_counts()
    return str(counts.index[0])


def experiment1_trials(trials: pd.DataFrame, settings: AnalysisSettings = DEFAULT_SETTINGS) -> tuple[pd.DataFrame, list[str]]:
    """The realign=none trials behind Tables 2, 3 and 8-12, and notes on the choices made.

    Alignment is measured on one (pairs, corpus) source per trial; when the baselines used
    several, the paper's (dictionary pairs on OPUS-100) is kept if present, else the most common.
    Per task, when baselines ran in several conditions (settings that differ), the condition not
    used by the task's realigned trials is kept (experiment 1 fine-tunes 5 epochs; NLI baselines
    of the controlled experiment use 2), then the most common.
    """
    notes: list[str] = []
    none = trials[trials["realign"] == BASELINE]
    if none.empty:
        return none, ["no realign=none trials: Tables 2, 3 and 8-12 are empty"]
    source = none["pairs"].fillna("").astype(str) + " / " + none["corpus"].fillna("").astype(str)
    if source.nunique() > 1:
        preferred = f"{settings.preferred_pairs} / {settings.preferred_corpus}"
        chosen = preferred if (source == preferred).any() else _most_common(source)
        notes.append(
            f"baselines measured alignment on {source.nunique()} pair sources / corpora; "
            f"Sections 4-5 use {chosen}"
        )
        none = none[source == chosen]
    conditions = results.condition_labels(trials)
    kept = []
    for task, group in none.groupby("task", sort=False):
        group_conditions = conditions[group.index]
        if group_conditions.nunique() > 1:
            realigned = trials[(trials["task"] == task) & (trials["realign"] != BASELINE)]
            used = set(conditions[realigned.index])
            candidates = group_conditions[~group_conditions.isin(used)]
            chosen = _most_common(candidates if len(candidates) else group_conditions)
            notes.append(
                f"{display_task(task)} baselines ran in {group_conditions.nunique()} conditions; "
                f"Sections 4-5 use '{chosen}'"
            )
            group = group[group_conditions == chosen]
        kept.append(group)
    return pd.concat(kept), notes


def baseline_condition(trials: pd.DataFrame, task: str, experiment1: pd.DataFrame) -> str | None:
    """The condition of ``task``'s controlled-experiment baselines: that of its realigned
    trials (most common), else that of experiment 1; None when the task has no baseline."""
    conditions = results.condition_labels(trials)
    realigned = trials[(trials["task"] == task) & (trials["realign"] != BASELINE)]
    none = trials[(trials["task"] == task) & (trials["realign"] == BASELINE)]
    if none.empty:
        return None
    if len(realigned):
        wanted = _most_common(conditions[realigned.index])
        if (conditions[none.index] == wanted).any():
            return wanted
    first = experiment1[experiment1["task"] == task]
    return _most_common(conditions[first.index]) if len(first) else _most_common(conditions[none.index])


def correlation_points(experiment1: pd.DataFrame) -> pd.DataFrame:
    """(alignment, CTL) points: one per trial x target language x stage x kind x direction x
    layer, stage before (pretrained) or after (finetuned) fine-tuning."""
    align = results.alignment_long(experiment1)
    align = align[align["stage"].isin(list(STAGES))].copy()
    align["stage"] = align["stage"].map(STAGES)
    ctl = results.ctl_long(experiment1)[["trial", "lang", "ctl"]]
    points = align.merge(ctl, on=["trial", "lang"], how="inner")
    # A fixed order (model, language, seed) so that the bootstrap's resamples, hence the
    # intervals, do not depend on the order in which the results listed the trials.
    points = points.sort_values(["model", "lang", "seed", "trial"], kind="stable", ignore_index=True)
    return points.rename(columns={"value": "alignment"})


def controlled_statistics(trials: pd.DataFrame, experiment1: pd.DataFrame, settings: AnalysisSettings) -> tuple[pd.DataFrame, list[str]]:
    """Mean and std over seeds of each score (in percent) per model x task x realign x pairs x
    corpus x language (``avg`` = mean over the target languages of a trial), with the
    baseline's mean/std, the difference and the paper's mark for realigned rows."""
    notes: list[str] = []
    scores = results.score_long(trials)
    scores["score"] = scores["score"] * settings.score_scale
    targets = results.target_languages(trials)
    per_trial = scores[scores["lang"].isin(targets)].pivot_table(index="trial", columns="lang", values="score")
    per_trial = per_trial.reindex(columns=targets)
    complete = per_trial.notna().all(axis=1)
    if (~complete).any():
        notes.append(
            f"{int((~complete).sum())} trial(s) lack a target-language score: no average over languages for them"
        )
    average = per_trial.mean(axis=1).where(complete).dropna()
    context = scores.drop_duplicates("trial").set_index("trial")[["model", "task", "realign", "pairs", "corpus", "seed", "condition"]]
    average_rows = context.loc[average.index].assign(lang=AVERAGE_LANGUAGE, score=average.to_numpy()).reset_index()
    scores = pd.concat([scores, average_rows], ignore_index=True)

    realigned = scores[scores["realign"] != BASELINE]
    keys = ["model", "task", "realign", "pairs", "corpus", "lang"]
    realigned_stats = seed_statistics(realigned, keys, "score", settings.std_ddof)

    baselines = []
    for task in scores["task"].unique():
        condition = baseline_condition(trials, task, experiment1)
        if condition is None:
            continue
        chosen = scores[(scores["task"] == task) & (scores["realign"] == BASELINE) & (scores["condition"] == condition)]
        baselines.append(chosen)
        if scores[(scores["task"] == task) & (scores["realign"] == BASELINE)]["condition"].nunique() > 1:
            notes.append(f"{display_task(task)}: the controlled experiment's baselines are those with '{condition}'")
    baseline = pd.concat(baselines) if baselines else scores.iloc[0:0]
    # A baseline does not depend on the realignment pairs or corpus: one row per seed.
    baseline_stats = seed_statistics(baseline, ["model", "task", "lang"], "score", settings.std_ddof)
    baseline_stats = baseline_stats.assign(realign=BASELINE, pairs="", corpus="")

    reference = baseline_stats.rename(columns={"mean": "baseline_mean", "std": "baseline_std"})
    realigned_stats = realigned_stats.merge(
        reference[["model", "task", "lang", "baseline_mean", "baseline_std"]], on=["model", "task", "lang"], how="left"
    )
    stats = pd.concat([baseline_stats, realigned_stats], ignore_index=True)
    stats["pairs"] = stats["pairs"].fillna("")
    stats["corpus"] = stats["corpus"].fillna("")
    stats["diff"] = stats["mean"] - stats["baseline_mean"]
    stats["mark"] = [paper_mark(d, s) for d, s in zip(stats["diff"], stats["baseline_std"])]
    return stats[[*keys, "mean", "std", "n_seeds", "baseline_mean", "baseline_std", "diff", "mark"]], notes


def paper_mark(difference: float, baseline_std: float) -> str:
    """The paper's shading of a realigned cell (App. F): ``light`` when the difference to the
    baseline is within the baseline's std, ``dark`` when below the baseline minus its std, ''
    otherwise (a gain larger than the std) or when unknown (no baseline, single-seed baseline).
    Ties follow the reference code: |difference| == std counts as light."""
    if np.isnan(difference) or np.isnan(baseline_std):
        return ""
    if -difference > baseline_std:
        return "dark"
    if difference <= baseline_std:
        return "light"
    return ""


def prepare(trials: pd.DataFrame, settings: AnalysisSettings = DEFAULT_SETTINGS) -> Context:
    """Select and reshape once what every table and figure needs."""
    experiment1, notes = experiment1_trials(trials, settings)
    flags = results.did_not_learn(trials)
    correlated = experiment1
    if flags.any():
        if settings.keep_unlearned:
            notes.append(f"{int(flags.sum())} trial(s) did not learn (English score at or below chance): "
                         "kept in the CTL correlations (--keep-unlearned)")
        else:
            correlated = experiment1[~flags.reindex(experiment1.index, fill_value=False)]
            notes.append(f"{int(flags.sum())} trial(s) did not learn (English score at or below chance): "
                         "left out of the CTL correlations (Tables 2, 8, 9, 11, 12; Figures 2, 3); "
                         "--keep-unlearned keeps them")
    points = correlation_points(correlated)
    controlled, controlled_notes = controlled_statistics(trials, experiment1, settings)
    return Context(
        trials=trials,
        settings=settings,
        experiment1=experiment1,
        points=points,
        controlled=controlled,
        targets=results.target_languages(trials),
        notes=notes + controlled_notes,
        unlearned=trials[flags],
    )


def _context(trials: pd.DataFrame | Context, settings: AnalysisSettings) -> Context:
    return trials if isinstance(trials, Context) else prepare(trials, settings)


# ---------------------------------------------------------------------------------------------
# Correlation tables (2, 8, 9, 11, 12)
# ---------------------------------------------------------------------------------------------
def _correlations(points: pd.DataFrame, keys: list[str], expected: pd.DataFrame, with_ci: bool, settings: AnalysisSettings) -> pd.DataFrame:
    """Spearman's rho, p-value and number of points (and BCa interval) per ``keys`` group, one
    row per row of ``expected`` (cells without points get n = 0 and status 'missing')."""
    rows = []
    groups = {k if isinstance(k, tuple) else (k,): g for k, g in points.groupby(keys, sort=False)} if len(points) else {}
    for cell in expected.itertuples(index=False):
        group = groups.get(tuple(cell))
        row = dict(zip(keys, cell))
        x = group["alignment"].to_numpy() if group is not None else np.array([])
        y = group["ctl"].to_numpy() if group is not None else np.array([])
        row["rho"], row["p"] = spearman(x, y)
        row["n"] = len(x)
        if with_ci:
            row["ci_low"], row["ci_high"] = spearman_bca_interval(x, y, settings.bootstrap)
        row["status"] = "" if np.isfinite(row["rho"]) else MISSING
        rows.append(row)
    columns = [*keys, "rho", "p", "n", *(["ci_low", "ci_high"] if with_ci else []), "status"]
    return pd.DataFrame(rows, columns=columns)


def _correlation_notes(frame: pd.DataFrame, what: str) -> list[str]:
    notes = []
    missing = frame[frame["status"] == MISSING]
    if len(missing):
        few = missing[(missing["n"] > 0)]
        notes.append(f"{len(missing)} {what} cell(s) missing (no data, fewer than 3 points or constant values)")
        if len(few):
            notes.append(f"{len(few)} of them have data but too few points or a constant variable")
    return notes


def _expected(**axes: list) -> pd.DataFrame:
    return pd.DataFrame(list(itertools.product(*axes.values())), columns=list(axes))


def _tasks(ctx: Context, frame: pd.DataFrame) -> list[str]:
    return task_order(list(PAPER_TASKS) + list(frame["task"].unique()))


def _layer_correlations(ctx: Context, kinds: tuple[str, ...], directions: tuple[str, ...], with_ci: bool) -> pd.DataFrame:
    points = ctx.points[ctx.points["depth"].isin(list(LAYER_LABELS))]
    expected = _expected(
        task=_tasks(ctx, ctx.trials), depth=list(LAYER_LABELS), kind=list(kinds), direction=list(directions),
        stage=list(STAGES.values()),
    )
    keys = ["task", "depth", "kind", "direction", "stage"]
    frame = _correlations(points, keys, expected, with_ci, ctx.settings)
    frame.insert(1, "layer", frame["depth"].map(LAYER_LABELS))
    frame["significant"] = frame["p"] < ctx.settings.significance_level
    return frame


def table2(trials: pd.DataFrame | Context, settings: AnalysisSettings = DEFAULT_SETTINGS) -> pd.DataFrame:
    """Table 2: Spearman's rho between CTL and en->X alignment, weak/strong, before/after
    fine-tuning, last/penultimate layer, per task, pooled over models x languages x seeds."""
    ctx = _context(trials, settings)
    frame = _layer_correlations(ctx, KINDS, ("en-x",), with_ci=False)
    notes = _correlation_notes(frame, "correlation")
    ns = frame[(frame["status"] != MISSING) & ~frame["significant"]]
    if len(ns):
        notes.append(f"{len(ns)} cell(s) with p >= {ctx.settings.significance_level}")
    return _with_notes(frame, notes + _point_count_note(frame))


def _point_count_note(frame: pd.DataFrame) -> list[str]:
    counts = sorted(set(int(n) for n in frame.loc[frame["n"] > 0, "n"]))
    return [f"points per correlation (N): {', '.join(map(str, counts))} (paper: 100)"] if counts else []


def _table_ci(trials: pd.DataFrame | Context, settings: AnalysisSettings, kind: str) -> pd.DataFrame:
    ctx = _context(trials, settings)
    frame = _layer_correlations(ctx, (kind,), DIRECTIONS, with_ci=True)
    b = ctx.settings.bootstrap
    notes = [f"{b.confidence_level:.0%} BCa bootstrap intervals, {b.n_resamples} paired resamples, seed {b.seed}"]
    return _with_notes(frame, notes + _correlation_notes(frame, "correlation") + _point_count_note(frame))


def table8(trials: pd.DataFrame | Context, settings: AnalysisSettings = DEFAULT_SETTINGS) -> pd.DataFrame:
    """Table 8: 95% BCa intervals of the correlation between weak alignment (en-x and x-en)
    and CTL, per task, layer and stage."""
    return _table_ci(trials, settings, "weak")


def table9(trials: pd.DataFrame | Context, settings: AnalysisSettings = DEFAULT_SETTINGS) -> pd.DataFrame:
    """Table 9: as Table 8 for strong alignment."""
    return _table_ci(trials, settings, "strong")


def _per_model_layer(ctx: Context, with_ci: bool) -> pd.DataFrame:
    points = ctx.points[(ctx.points["kind"] == "strong") & (ctx.points["direction"] == "en-x")]
    cells = []
    for (task, model), group in points.groupby(["task", "model"], sort=False):
        depth_max = int(group["num_layers"].max())
        cells.extend((task, model, d, s) for d in range(depth_max + 1) for s in STAGES.values())
    order = {t: i for i, t in enumerate(task_order(points["task"].unique()))}
    morder = {m: i for i, m in enumerate(model_order(points["model"].unique()))}
    cells.sort(key=lambda c: (order[c[0]], morder[c[1]], c[2], list(STAGES.values()).index(c[3])))
    expected = pd.DataFrame(cells, columns=["task", "model", "depth", "stage"])
    frame = _correlations(points, ["task", "model", "depth", "stage"], expected, with_ci, ctx.settings)
    frame.insert(3, "layer", frame["depth"].map(depth_label))
    return frame


def depth_label(depth: int) -> str:
    """Table 11/12 row label: ``last`` for the last layer, ``-d`` for d layers below it."""
    return "last" if depth == 0 else f"-{depth}"


def table11(trials: pd.DataFrame | Context, settings: AnalysisSettings = DEFAULT_SETTINGS) -> pd.DataFrame:
    """Table 11: per task and model, correlation between strong en->X alignment at each depth
    (0 = last layer) and CTL, before/after fine-tuning, with 95% BCa intervals (the paper shows
    distilmBERT on POS; every task and model present is computed here)."""
    ctx = _context(trials, settings)
    frame = _per_model_layer(ctx, with_ci=True)
    notes = _correlation_notes(frame, "correlation")
    if frame.empty:
        notes.append("no alignment x CTL points")
    return _with_notes(frame, notes + _point_count_note(frame))


def table12(trials: pd.DataFrame | Context, settings: AnalysisSettings = DEFAULT_SETTINGS) -> pd.DataFrame:
    """Table 12: the correlation of Table 11 without intervals, models side by side (the paper
    shows POS; every task present is computed here). '-' marks depths a model does not have."""
    ctx = _context(trials, settings)
    frame = _per_model_layer(ctx, with_ci=False)
    notes = _correlation_notes(frame, "correlation")
    if frame.empty:
        notes.append("no alignment x CTL points")
    return _with_notes(frame, notes + _point_count_note(frame))


# ---------------------------------------------------------------------------------------------
# Alignment change with fine-tuning (Tables 3, 10)
# ---------------------------------------------------------------------------------------------
def relative_alignment_change(experiment1: pd.DataFrame) -> pd.DataFrame:
    """Per trial and target language: strong en->X alignment of the last layer before
    (pretrained) and after (finetuned) fine-tuning and (after - before) / before (NaN when the
    alignment before is 0)."""
    align = results.alignment_long(experiment1)
    align = align[
        (align["kind"] == "strong") & (align["direction"] == "en-x") & (align["depth"] == 0)
        & align["stage"].isin([STAGE_BEFORE, STAGE_AFTER])
    ]
    wide = align.pivot_table(index=["trial", "lang"], columns="stage", values="value").reindex(columns=[STAGE_BEFORE, STAGE_AFTER])
    wide.columns = ["before", "after"]
    wide = wide.reset_index()
    context = experiment1[["model", "task", "seed"]]
    wide = wide.join(context, on="trial")
    before = wide["before"].where(wide["before"] != 0)
    wide["relative_change"] = (wide["after"] - before) / before
    return wide


def table10(trials: pd.DataFrame | Context, settings: AnalysisSettings = DEFAULT_SETTINGS) -> pd.DataFrame:
    """Table 10: relative variation of strong en->X alignment at the last layer from before to
    after fine-tuning, mean and std over seeds, per task x model x language."""
    ctx = _context(trials, settings)
    change = relative_alignment_change(ctx.experiment1)
    stats = seed_statistics(change, ["task", "model", "lang"], "relative_change", ctx.settings.std_ddof)
    zero = change[change["before"] == 0].groupby(["task", "model", "lang"]).size().rename("n_zero_before")
    models = model_order(ctx.experiment1["model"].unique())
    expected = _expected(task=_tasks(ctx, ctx.experiment1), model=models, lang=ctx.targets)
    frame = expected.merge(stats, on=["task", "model", "lang"], how="left").join(zero, on=["task", "model", "lang"])
    frame["n_seeds"] = frame["n_seeds"].fillna(0).astype("int64")
    frame["n_zero_before"] = frame["n_zero_before"].fillna(0).astype("int64")
    frame["status"] = np.where(frame["mean"].isna(), MISSING, "")
    notes = _stat_notes(frame, "relative-change")
    if frame["n_zero_before"].sum():
        notes.append(
            f"{int(frame['n_zero_before'].sum())} run(s) with alignment 0 before fine-tuning: relative change undefined, left out"
        )
    return _with_notes(frame, notes)


def table3(trials: pd.DataFrame | Context, settings: AnalysisSettings = DEFAULT_SETTINGS) -> pd.DataFrame:
    """Table 3: Table 10's means for three languages (en-ar, en-es, en-ru; all target languages
    present when none of those was run)."""
    ctx = _context(trials, settings)
    full = table10(ctx)
    chosen = [l for l in ctx.settings.table3_languages if l in ctx.targets] or list(ctx.targets)
    frame = full[full["lang"].isin(chosen)].reset_index(drop=True)
    return _with_notes(frame, full.attrs.get("notes", []))


def _stat_notes(frame: pd.DataFrame, what: str) -> list[str]:
    notes = []
    missing = int((frame["status"] == MISSING).sum())
    if missing:
        notes.append(f"{missing} {what} cell(s) missing")
    single = int(((frame["n_seeds"] == 1)).sum())
    if single:
        notes.append(f"{single} cell(s) from a single seed: std is NaN (shown as n/a)")
    return notes


# ---------------------------------------------------------------------------------------------
# Controlled experiment (Tables 4, 5, 6, 13-17)
# ---------------------------------------------------------------------------------------------
def chosen_corpus(ctx: Context, pairs: str | None) -> str | None:
    """The realignment corpus of the condensed tables (4-6) and Figure 1: the paper's (OPUS-100)
    if realigned trials (with ``pairs``, if given) used it, else the most common; None if none."""
    realigned = ctx.controlled[ctx.controlled["realign"] != BASELINE]
    if pairs is not None:
        realigned = realigned[realigned["pairs"] == pairs]
    if realigned.empty:
        return None
    corpora = realigned["corpus"]
    preferred = [c for c in corpora.unique() if normalised_name(c) == normalised_name(ctx.settings.preferred_corpus)]
    return preferred[0] if preferred else _most_common(corpora)


def _controlled_cells(
    ctx: Context, tasks: list[str], corpus: str | None, methods: list[tuple[str, str]] | None,
    langs: list[str], models: list[str] | None = None,
) -> pd.DataFrame:
    """The cells of a controlled-experiment table: for each task, model (baseline row first)
    and method, one row per language. Methods default to those run for this task and corpus; a
    model gets method rows only if it has realigned runs here (the paper realigned neither
    XLM-R Large nor, for some methods, every model)."""
    stats = ctx.controlled
    in_corpus = stats[(stats["realign"] != BASELINE) & (stats["corpus"].map(normalised_name) == normalised_name(corpus))] if corpus else stats.iloc[0:0]
    rows = []
    for task in tasks:
        task_stats = stats[stats["task"] == task]
        task_realigned = in_corpus[in_corpus["task"] == task]
        if methods is None:
            present = set(zip(task_realigned["realign"], task_realigned["pairs"]))
            task_methods = [m for m in METHOD_ORDER[1:] if m in present] + sorted(present - set(METHOD_ORDER))
        else:
            task_methods = [m for m in methods if m[0] != BASELINE]
        task_models = models if models is not None else model_order(task_stats["model"].unique())
        for model in task_models:
            model_realigned = task_realigned[task_realigned["model"] == model]
            model_methods = task_methods if len(model_realigned) else []
            for realign, pairs in [(BASELINE, ""), *model_methods]:
                for lang in langs:
                    rows.append((task, model, realign, pairs, "" if realign == BASELINE else corpus, lang))
    expected = pd.DataFrame(rows, columns=["task", "model", "realign", "pairs", "corpus", "lang"])
    lookup = stats.copy()
    lookup["corpus_key"] = lookup["corpus"].map(normalised_name)
    expected["corpus_key"] = expected["corpus"].map(normalised_name)
    frame = expected.merge(
        lookup.drop(columns="corpus"), on=["task", "model", "realign", "pairs", "corpus_key", "lang"], how="left"
    ).drop(columns="corpus_key")
    frame["n_seeds"] = frame["n_seeds"].fillna(0).astype("int64")
    frame["mark"] = frame["mark"].fillna("")
    frame["status"] = np.where(frame["mean"].isna(), MISSING, "")
    return frame


def _controlled_notes(frame: pd.DataFrame, ctx: Context) -> list[str]:
    notes = _stat_notes(frame, "score")
    unknown = frame[(frame["realign"] != BASELINE) & frame["mean"].notna() & frame["baseline_std"].isna()]
    if len(unknown):
        notes.append(f"{len(unknown)} realigned cell(s) without a baseline std (no baseline or one seed): no mark")
    if frame.empty:
        notes.append("no trials for this table")
    return notes


def _controlled_table(ctx: Context, tasks: list[str], corpus: str | None, methods, langs: list[str], models=None, extra_notes=()) -> pd.DataFrame:
    frame = _controlled_cells(ctx, tasks, corpus, methods, langs, models)
    notes = list(extra_notes)
    if corpus is None:
        notes.append("no realigned trials: baselines only")
    return _with_notes(frame, notes + _controlled_notes(frame, ctx))


def table4(trials: pd.DataFrame | Context, settings: AnalysisSettings = DEFAULT_SETTINGS) -> pd.DataFrame:
    """Table 4: score averaged over target languages, per model x task, baseline and
    realignment before/joint with dictionary pairs (the paper's corpus OPUS-100 if run)."""
    ctx = _context(trials, settings)
    pairs = ctx.settings.preferred_pairs
    corpus = chosen_corpus(ctx, pairs)
    methods = dictionary_methods(ctx, pairs)
    tasks = _tasks(ctx, ctx.controlled)
    models = model_order(ctx.controlled["model"].unique())
    return _controlled_table(ctx, tasks, corpus, methods, [AVERAGE_LANGUAGE], models, extra_notes=_corpus_note(corpus))


def dictionary_methods(ctx: Context, pairs: str) -> list[tuple[str, str]]:
    """The realignment methods of Tables 4, 5 and Figure 1 with ``pairs``: the paper's (before,
    joint), then any other method run with those pairs, as it is named."""
    realigned = ctx.controlled[(ctx.controlled["realign"] != BASELINE) & (ctx.controlled["pairs"] == pairs)]
    others = sorted(set(realigned["realign"]) - set(REALIGNED_METHODS))
    return [(m, pairs) for m in [*REALIGNED_METHODS, *others]]


def _corpus_note(corpus: str | None) -> list[str]:
    return [f"realignment corpus: {corpus}"] if corpus else []


def table5(trials: pd.DataFrame | Context, settings: AnalysisSettings = DEFAULT_SETTINGS) -> pd.DataFrame:
    """Table 5: POS scores per target language, baseline and realignment before/joint with
    dictionary pairs (the paper shows distilmBERT and XLM-R; every model run is shown here)."""
    ctx = _context(trials, settings)
    pairs = ctx.settings.preferred_pairs
    corpus = chosen_corpus(ctx, pairs)
    methods = dictionary_methods(ctx, pairs)
    return _controlled_table(ctx, ["udpos"], corpus, methods, ctx.targets, extra_notes=_corpus_note(corpus))


def table6(trials: pd.DataFrame | Context, settings: AnalysisSettings = DEFAULT_SETTINGS) -> pd.DataFrame:
    """Table 6: XLM-R Base's score averaged over target languages for every realignment method
    and pair source, POS and NER (every model present when XLM-R Base was not run)."""
    ctx = _context(trials, settings)
    corpus = chosen_corpus(ctx, None)
    present = model_order(ctx.controlled["model"].unique())
    models = [m for m in present if canonical_model(m) in ctx.settings.table6_models] or present
    tasks = task_order(["udpos", "wikiann"])
    return _controlled_table(ctx, tasks, corpus, None, [AVERAGE_LANGUAGE], models, extra_notes=_corpus_note(corpus))


def controlled_table(trials: pd.DataFrame | Context, task: str, corpus: str, settings: AnalysisSettings = DEFAULT_SETTINGS) -> pd.DataFrame:
    """Tables 13-17 (and any other task x corpus run): score per language (English and the
    targets), mean ± std over seeds, per model and method, marked against the baseline."""
    ctx = _context(trials, settings)
    ran = ctx.controlled[(ctx.controlled["realign"] != BASELINE) & (ctx.controlled["task"] == task)]
    actual = [c for c in ran["corpus"].unique() if normalised_name(c) == normalised_name(corpus)]
    notes = [] if actual else [f"no realigned {display_task(task)} trials on {corpus}"]
    langs = [SOURCE_LANGUAGE, *ctx.targets]
    return _controlled_table(ctx, [task], actual[0] if actual else corpus, None, langs, extra_notes=notes)


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------
def _number(value: float, digits: int) -> str:
    text = f"{value:.{digits}f}"
    return text.lstrip("-") if float(text) == 0 else text  # no "-0.00"


def _fmt(value: float, digits: int) -> str:
    return MISSING if value is None or not np.isfinite(value) else _number(value, digits)


def _fmt_mean_std(mean: float, std: float, digits: int) -> str:
    if mean is None or not np.isfinite(mean):
        return MISSING
    spread = "n/a" if std is None or not np.isfinite(std) else _number(std, digits)
    return f"{_number(mean, digits)} ± {spread}"


def _fmt_ci(rho: float, low: float, high: float) -> str:
    if not np.isfinite(rho):
        return MISSING
    interval = "n/a - n/a" if not (np.isfinite(low) and np.isfinite(high)) else f"{_number(low, 2)} - {_number(high, 2)}"
    return f"{_number(rho, 2)} ({interval})"


def _grid(frame: pd.DataFrame, rows: list[str], columns: list[str], cell: Callable[[pd.Series], str],
          mark: Callable[[pd.Series], str] | None = None, absent: str = MISSING,
          row_label: Callable[[tuple], tuple] | None = None, column_label: Callable[[tuple], tuple] | None = None,
          row_names: list[str] | None = None) -> Grid:
    """Lay a long frame out as a grid: ``rows`` and ``columns`` name the key columns, in the
    order they first appear in ``frame``; ``row_names`` head the row-label columns."""
    notes = list(frame.attrs.get("notes", []))
    row_keys = list(dict.fromkeys(tuple(r) for r in frame[rows].itertuples(index=False)))
    column_keys = list(dict.fromkeys(tuple(c) for c in frame[columns].itertuples(index=False)))
    cells = pd.DataFrame(absent, index=range(len(row_keys)), columns=range(len(column_keys)), dtype=object)
    marks = pd.DataFrame("", index=cells.index, columns=cells.columns, dtype=object)
    row_pos = {k: i for i, k in enumerate(row_keys)}
    col_pos = {k: j for j, k in enumerate(column_keys)}
    for _, record in frame.iterrows():
        i = row_pos[tuple(record[rows])]
        j = col_pos[tuple(record[columns])]
        cells.iat[i, j] = cell(record)
        marks.iat[i, j] = mark(record) if mark else ""
    row_label = row_label or (lambda k: k)
    column_label = column_label or (lambda k: k)
    shown_rows = [row_label(k) for k in row_keys]
    shown_columns = [column_label(k) for k in column_keys]
    cells.index = _labels_index(shown_rows, len(row_names) if row_names is not None else len(rows))
    cells.columns = _labels_index(shown_columns, len(columns))
    if row_names is not None and cells.index.nlevels == len(row_names):
        cells.index = cells.index.set_names(row_names)
    marks.index, marks.columns = cells.index, cells.columns
    return Grid(cells=cells, marks=marks, notes=notes)


def _labels_index(labels: list[tuple], levels_if_empty: int) -> pd.Index:
    """Row or column labels as an Index (one level) or MultiIndex; a grid without rows or
    columns still gets the level count its names expect."""
    levels = len(labels[0]) if labels else levels_if_empty
    if levels > 1:
        return pd.MultiIndex.from_tuples(labels) if labels else pd.MultiIndex.from_tuples([], names=[None] * levels)
    return pd.Index([label[0] for label in labels], dtype=object)


def _ns_mark(alpha: float) -> Callable[[pd.Series], str]:
    return lambda r: "ns" if np.isfinite(r["p"]) and r["p"] >= alpha else ""


def _method_label(record: tuple) -> tuple:
    """Row label of a controlled table: the model's name on its baseline row, '+ method' after."""
    task, model, realign, pairs = record
    if realign == BASELINE:
        return (display_task(task), display_model(model)) if task else (display_model(model),)
    return (display_task(task), f"+ {realign} {pairs}".rstrip()) if task else (f"+ {realign} {pairs}".rstrip(),)


def render(name: str, frame: pd.DataFrame, settings: AnalysisSettings = DEFAULT_SETTINGS) -> Grid:
    """The paper's layout of table ``name`` (``table2`` ... ``table17`` or ``controlled_*``)."""
    task_label = lambda k: (display_task(k[0]), *k[1:])  # noqa: E731
    if name == "table2":
        return _grid(frame, ["task", "layer"], ["kind", "stage"], lambda r: _fmt(r["rho"], 2),
                     _ns_mark(settings.significance_level), row_label=task_label, row_names=["task", "layer"])
    if name in ("table8", "table9"):
        return _grid(frame, ["task", "layer"], ["direction", "stage"],
                     lambda r: _fmt_ci(r["rho"], r["ci_low"], r["ci_high"]), row_label=task_label,
                     column_label=lambda k: ("en-X" if k[0] == "en-x" else "X-en", k[1]), row_names=["task", "layer"])
    if name == "table11":
        return _grid(frame, ["task", "model", "layer"], ["stage"], lambda r: _fmt_ci(r["rho"], r["ci_low"], r["ci_high"]),
                     row_label=lambda k: (display_task(k[0]), display_model(k[1]), k[2]),
                     row_names=["task", "model", "layer"])
    if name == "table12":
        rank = {t: i for i, t in enumerate(task_order(frame["task"].unique()))}
        ordered = frame.assign(_rank=frame["task"].map(rank)).sort_values(["_rank", "depth"], kind="stable")
        return _grid(ordered, ["task", "layer"], ["model", "stage"], lambda r: _fmt(r["rho"], 2),
                     absent=NOT_APPLICABLE, row_label=task_label,
                     column_label=lambda k: (display_model(k[0]), k[1]), row_names=["task", "layer"])
    if name in ("table3", "table10"):
        cell = (lambda r: _fmt(r["mean"], 2)) if name == "table3" else (lambda r: _fmt_mean_std(r["mean"], r["std"], 2))
        return _grid(frame, ["task", "model"], ["lang"], cell,
                     row_label=lambda k: (display_task(k[0]), display_model(k[1])),
                     column_label=lambda k: (f"en-{k[0]}",), row_names=["task", "model"])
    if name == "table4":
        return _grid(frame, ["model", "realign", "pairs"], ["task"], lambda r: _fmt(r["mean"], 1), lambda r: r["mark"],
                     row_label=lambda k: _method_label(("", k[0], k[1], "")),
                     column_label=lambda k: (display_task(k[0]),))
    if name == "table5":
        return _grid(frame, ["model", "realign", "pairs"], ["lang"], lambda r: _fmt(r["mean"], 1), lambda r: r["mark"],
                     row_label=lambda k: _method_label(("", k[0], k[1], "")), row_names=["POS"])
    if name == "table6":
        return _grid(frame, ["model", "realign", "pairs"], ["task"], lambda r: _fmt(r["mean"], 1), lambda r: r["mark"],
                     row_label=lambda k: _method_label(("", *k)),
                     column_label=lambda k: (display_task(k[0]),))
    if name in CONTROLLED_TABLES or name.startswith("controlled_"):
        return _grid(frame, ["model", "realign", "pairs"], ["lang"], lambda r: _fmt_mean_std(r["mean"], r["std"], 1),
                     lambda r: r["mark"], row_label=lambda k: _method_label(("", *k)))
    raise KeyError(f"no layout for table {name!r}")


# ---------------------------------------------------------------------------------------------
# Registry and writing
# ---------------------------------------------------------------------------------------------
CORRELATION, CHANGE, CONTROLLED = "correlation", "change", "controlled"
NEEDS: dict[str, str] = {
    CORRELATION: "realign=none trials with target-language scores and alignment before and after fine-tuning "
                 "(at least 3 points per correlation, not all equal)",
    CHANGE: "realign=none trials with strong en-X alignment at the last layer before and after fine-tuning",
}
@dataclass(frozen=True)
class TableSpec:
    """A table of the paper: its caption, how to compute it from a Context, and what it needs
    (``kind``: ``correlation``, ``change`` or ``controlled``; the tasks it is about, None for
    all; for controlled tables, its corpus and whether it is about dictionary pairs only)."""

    caption: str
    build: Callable[[Context], pd.DataFrame]
    kind: str = CORRELATION
    tasks: tuple[str, ...] | None = None
    corpus: str | None = None
    dictionary_only: bool = False

    @property
    def title(self) -> str:
        """``Table 4`` (the caption up to its colon)."""
        return self.caption.split(":", 1)[0]


def _controlled_spec(task: str, corpus: str, number: str) -> TableSpec:
    return TableSpec(
        f"Table {number}: controlled experiment with realignment for {display_task(task)} with the {corpus} "
        "translation dataset (score in %, mean ± std over seeds).",
        lambda ctx: controlled_table(ctx, task, corpus),
        CONTROLLED, (task,), corpus,
    )


TABLES: dict[str, TableSpec] = {
    "table2": TableSpec(
        "Table 2: Spearman's rank correlation of CTL with English-target alignment at the last and penultimate "
        "layer, before and after fine-tuning, pooled over models, languages and seeds.",
        table2,
    ),
    "table3": TableSpec(
        "Table 3: relative variation of strong alignment at the last layer from before to after fine-tuning "
        "(mean over seeds).",
        table3, CHANGE,
    ),
    "table4": TableSpec(
        "Table 4: controlled experiment, score in % averaged over target languages, realignment with a "
        "bilingual dictionary.",
        table4, CONTROLLED, dictionary_only=True,
    ),
    "table5": TableSpec("Table 5: breakdown of POS realignment results by target language (score in %).", table5,
                        CONTROLLED, ("udpos",), dictionary_only=True),
    "table6": TableSpec(
        "Table 6: average score in % over target languages by type of realignment.", table6,
        CONTROLLED, ("udpos", "wikiann"),
    ),
    "table8": TableSpec(
        "Table 8: 95% confidence interval of Spearman's rank correlation between weak alignment and CTL (BCa "
        "bootstrap).",
        table8,
    ),
    "table9": TableSpec(
        "Table 9: 95% confidence interval of Spearman's rank correlation between strong alignment and CTL (BCa "
        "bootstrap).",
        table9,
    ),
    "table10": TableSpec(
        "Table 10: relative variation of strong alignment at the last layer from before to after fine-tuning "
        "(mean ± std over seeds).",
        table10, CHANGE,
    ),
    "table11": TableSpec(
        "Table 11: correlation between strong English-target alignment and CTL per model and layer, with 95% "
        "BCa confidence intervals.",
        table11,
    ),
    "table12": TableSpec(
        "Table 12: correlation between strong English-target alignment and CTL per model and layer (-i: i "
        "layers below the last).",
        table12,
    ),
    **{name: _controlled_spec(task, corpus, name[len("table"):]) for name, (task, corpus) in CONTROLLED_TABLES.items()},
}


def extra_controlled_specs(ctx: Context) -> dict[str, TableSpec]:
    """Task x corpus combinations run in the controlled experiment that the paper has no table
    for (e.g. a corpus such as ntrex): ``controlled_{task}_{corpus}``."""
    paper = {(t, normalised_name(c)) for t, c in CONTROLLED_TABLES.values()}
    realigned = ctx.controlled[ctx.controlled["realign"] != BASELINE]
    specs = {}
    # sorted: the trials' row order follows the order they finished in, which a report must not show
    combinations = realigned[["task", "corpus"]].drop_duplicates().itertuples(index=False)
    for task, corpus in sorted(combinations, key=lambda pair: (str(pair[0]), str(pair[1]))):
        if (task, normalised_name(corpus)) in paper:
            continue
        name = f"controlled_{task}_{normalised_name(corpus)}"
        specs[name] = TableSpec(
            f"Controlled experiment with realignment for {display_task(task)} with the {corpus} translation "
            "dataset (not in the paper; score in %, mean ± std over seeds).",
            lambda c, task=task, corpus=corpus: controlled_table(c, task, corpus),
            CONTROLLED, (task,), corpus,
        )
    return specs


def table_specs(ctx: Context) -> dict[str, TableSpec]:
    """Every table: the paper's and the extra controlled ones of this run."""
    return {**TABLES, **extra_controlled_specs(ctx)}


def build_tables(trials: pd.DataFrame | Context, settings: AnalysisSettings = DEFAULT_SETTINGS) -> dict[str, pd.DataFrame]:
    """Every table (the paper's and extra controlled ones), keyed by name."""
    ctx = _context(trials, settings)
    return {name: spec.build(ctx) for name, spec in table_specs(ctx).items()}


def table_is_made(spec: TableSpec, frame: pd.DataFrame) -> bool:
    """Whether ``frame`` has anything to show: a cell with a value; for a controlled-experiment
    table, a baseline cell with a value (every realigned cell is read against its baseline;
    baselines alone still show the scores, and the table's notes say realigned runs are absent)."""
    if frame.empty or "status" not in frame.columns:
        return False
    has_value = frame["status"] != MISSING
    if spec.kind == CONTROLLED:
        has_value &= frame["realign"] == BASELINE
    return bool(has_value.any())


def _joined(values: list[str]) -> str:
    values = [str(v) for v in values]
    return values[0] if len(values) == 1 else f"{', '.join(values[:-1])} and {values[-1]}"


def table_needs(spec: TableSpec, ctx: Context) -> str:
    """What table ``spec`` is computed from, in words."""
    if spec.kind != CONTROLLED:
        return NEEDS[spec.kind]
    pairs = ctx.settings.preferred_pairs
    methods = " or ".join(m for m, _ in dictionary_methods(ctx, pairs)) if spec.dictionary_only else "realigned"
    tasks = f"{' or '.join(display_task(t) for t in spec.tasks)} " if spec.tasks else ""
    return (f"{tasks}realign=none trials, the baselines of the {methods} trials"
            + (f" ({pairs} pairs)" if spec.dictionary_only else "") + (f" on {spec.corpus}" if spec.corpus else ""))


def _have(spec: TableSpec, frame: pd.DataFrame, ctx: Context) -> str:
    """What the run has of what table ``spec`` needs, in words."""
    trials = ctx.trials
    if spec.tasks is not None:
        trials = trials[trials["task"].isin(spec.tasks)]
    if trials.empty:
        return "have no finished trials" if ctx.trials.empty else \
            f"have no {' or '.join(display_task(t) for t in spec.tasks or ())} trials"
    methods = results.ordered(trials["realign"].unique(), results.REALIGN_METHODS)
    text = f"have {_joined(methods)}" + (" only" if len(methods) == 1 else "")
    if spec.kind == CONTROLLED:
        realigned = trials[trials["realign"] != BASELINE]
        pairs = ctx.settings.preferred_pairs
        if spec.dictionary_only and len(realigned):
            realigned = realigned[realigned["pairs"] == pairs]
            if realigned.empty:
                return text + f", none realigned with {pairs} pairs"
        corpora = sorted(str(c) for c in realigned["corpus"].dropna().unique())
        if spec.corpus and corpora and normalised_name(spec.corpus) not in {normalised_name(c) for c in corpora}:
            text += f", realigned on {_joined(corpora)} only"
        return text
    baseline = trials[trials["realign"] == BASELINE]
    if baseline.empty:
        return text
    align = results.alignment_long(baseline)
    lacks = []
    stages = set(align["stage"])
    if align.empty:
        lacks.append("alignment metrics")
    elif not {STAGE_BEFORE, STAGE_AFTER} <= stages:
        lacks.append(f"alignment {'after' if STAGE_AFTER not in stages else 'before'} fine-tuning")
    if spec.kind == CORRELATION and results.ctl_long(baseline).empty:
        lacks.append("target-language scores")
    if lacks:
        return f"{text}, without {' or '.join(lacks)}"
    if spec.kind == CORRELATION:
        flagged = results.did_not_learn(baseline)
        if flagged.all() and not ctx.settings.keep_unlearned:
            return f"{text}, all {len(baseline)} of them did not learn (--keep-unlearned keeps them)"
        most = int(frame["n"].max()) if len(frame) else 0
        return f"{text}, with at most {most} point(s) per correlation or constant values"
    return f"{text}, without strong en-X alignment at the last layer"


def unmade_reason(spec: TableSpec, frame: pd.DataFrame, ctx: Context) -> str | None:
    """Why table ``spec`` cannot be made from this run (``Table 4: needs ...; have ...``), or
    None when it can."""
    if table_is_made(spec, frame):
        return None
    return f"{spec.title}: needs {table_needs(spec, ctx)}; {_have(spec, frame, ctx)}"


def table_file_names(name: str) -> list[str]:
    """The files :func:`write_table` and the comparison with the paper write for table ``name``."""
    return [f"{name}.md", f"{name}.tex", f"{name}.csv", f"{name}_vs_paper.md", f"{name}_vs_paper.csv"]


def caption(name: str, ctx: Context | None = None) -> str:
    """The caption of table ``name``."""
    if name in TABLES:
        return TABLES[name].caption
    if ctx is not None and name in (extra := extra_controlled_specs(ctx)):
        return extra[name].caption
    return name


def write_table(name: str, frame: pd.DataFrame, out_dir: Path, title: str, settings: AnalysisSettings = DEFAULT_SETTINGS) -> list[Path]:
    """Write ``name``.md, ``name``.tex (the paper's layout) and ``name``.csv (the long numeric
    frame) into ``out_dir`` atomically."""
    grid = render(name, frame, settings)
    out_dir = Path(out_dir)
    return [
        files.write_text(out_dir / f"{name}.md", to_markdown(grid, title)),
        files.write_text(out_dir / f"{name}.tex", to_latex(grid, title, name)),
        files.write_csv(out_dir / f"{name}.csv", frame),
    ]
