"""The paper's figures (matplotlib, Agg backend), as PNG and PDF.

Figure 1: English->Arabic score with and without realignment (dictionary pairs), per task and
model, as bars (mean ± std over seeds). Figures 2 and 3: CTL against English-target strong
alignment after fine-tuning (colour = target language, marker = model); Figure 2 is NLI at the
last (a) and penultimate (b) layer, Figure 3 NER at the last layer. Figures 4 and 5: English-
Arabic strong alignment per layer before and after fine-tuning (0 = embeddings); Figure 4 is
distilmBERT (a) and XLM-R Large (b) on POS, Figure 5 XLM-R Large on NLI.

When the results lack what a figure needs, it is not drawn: the report says why (and an older
file of that name is removed, so no figure of an earlier run is read as this one's).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from analysis import files, results  # noqa: E402
from analysis.results import (  # noqa: E402
    STAGE_AFTER,
    STAGE_BEFORE,
    canonical_model,
    display_model,
    display_task,
    model_order,
    task_order,
)
from analysis.stats import seed_statistics, spearman  # noqa: E402
from analysis.tables import BASELINE, Context, chosen_corpus, dictionary_methods  # noqa: E402

FIGURE_FORMATS: tuple[str, ...] = ("png", "pdf")
DPI = 150
PANEL_SIZE = (4.0, 3.2)  # inches per subplot
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
# Figures 4 and 5 show these models in the paper; other runs fall back to the models present.
FIGURE4_MODELS: tuple[str, ...] = ("distilbert-base-multilingual-cased", "xlm-roberta-large")
FIGURE5_MODELS: tuple[str, ...] = ("xlm-roberta-large",)
STAGE_STYLES = {STAGE_BEFORE: ("before fine-tuning", "tab:blue"), STAGE_AFTER: ("after fine-tuning", "tab:orange")}
METHOD_COLOURS = {BASELINE: "tab:gray", "before": "tab:blue", "joint": "tab:green"}
OTHER_METHOD_COLOURS = ("tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")  # methods not in the paper

# Panel size must stay readable; more panels than this wrap to a new row.
MAX_PANELS_PER_ROW = 4


@dataclass
class FigureResult:
    """A drawn figure and what it could not show; ``figure`` is None when nothing could be
    drawn, and ``reason`` then says why."""

    figure: plt.Figure | None
    notes: list[str]
    reason: str | None = None


def _not_made(title: str, message: str) -> FigureResult:
    return FigureResult(None, [], f"{title}: {message}")


def _panels(n: int) -> tuple[plt.Figure, list[plt.Axes]]:
    columns = min(n, MAX_PANELS_PER_ROW)
    rows = int(np.ceil(n / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(PANEL_SIZE[0] * columns, PANEL_SIZE[1] * rows), squeeze=False)
    flat = list(axes.ravel())
    for axis in flat[n:]:
        axis.axis("off")
    return figure, flat[:n]


def _language(ctx: Context) -> str | None:
    if ctx.settings.figure_language in ctx.targets:
        return ctx.settings.figure_language
    return ctx.targets[0] if ctx.targets else None


def _language_note(ctx: Context, lang: str) -> list[str]:
    wanted = ctx.settings.figure_language
    return [] if lang == wanted else [f"no {wanted} results: shows en->{lang} instead"]


def figure1(ctx: Context) -> FigureResult:
    """Figure 1: English->target score (percent) without and with realignment (before/joint,
    dictionary pairs) per task and model."""
    title = "Figure 1"
    lang = _language(ctx)
    if lang is None:
        return _not_made(title, "no target-language scores")
    pairs = ctx.settings.preferred_pairs
    corpus = chosen_corpus(ctx, pairs)
    realigned = [m for m, _ in dictionary_methods(ctx, pairs)]
    stats = ctx.controlled[ctx.controlled["lang"] == lang]
    wanted = (stats["realign"] == BASELINE) | (
        (stats["pairs"] == pairs) & (stats["corpus"] == (corpus or "")) & stats["realign"].isin(realigned)
    )
    stats = stats[wanted & stats["mean"].notna()]
    present = set(stats["realign"])
    if BASELINE not in present:
        have = " and ".join(results.ordered(present, (BASELINE, *realigned))) or "no"
        # Like Table 4, the figure reads realignment against its baseline: it needs the baseline.
        return _not_made(title, f"needs realign=none trials with en->{lang} scores, the baselines of the "
                                f"{' or '.join(realigned)} trials ({pairs} pairs); have {have}"
                                f"{' only' if len(present) == 1 else ''}")
    tasks = task_order(stats["task"].unique())
    figure, axes = _panels(len(tasks))
    methods = [BASELINE, *realigned]
    others = [m for m in methods if m not in METHOD_COLOURS]
    colours = {**{m: OTHER_METHOD_COLOURS[i % len(OTHER_METHOD_COLOURS)] for i, m in enumerate(others)}, **METHOD_COLOURS}
    width = 0.8 / len(methods)
    for axis, task in zip(axes, tasks):
        task_stats = stats[stats["task"] == task]
        models = model_order(task_stats["model"].unique())
        positions = np.arange(len(models))
        for k, method in enumerate(methods):
            rows = task_stats[task_stats["realign"] == method].set_index("model").reindex(models)
            label = "no realignment" if method == BASELINE else f"{method} ({pairs})"
            axis.bar(positions + (k - (len(methods) - 1) / 2) * width, rows["mean"].to_numpy(dtype=float), width,
                     yerr=rows["std"].to_numpy(dtype=float), label=label, color=colours[method], capsize=2)
        axis.set_xticks(positions, [display_model(m) for m in models], rotation=20, ha="right")
        axis.set_title(f"{display_task(task)}, en->{lang}")
        axis.set_ylabel("score (%)")
    axes[0].legend(fontsize="small")
    figure.suptitle("Cross-lingual transfer with and without realignment")
    figure.tight_layout()
    return FigureResult(figure, _language_note(ctx, lang))


def _scatter_panel(axis: plt.Axes, points: pd.DataFrame, languages: list[str], models: list[str], title: str) -> None:
    colours = {lang: plt.get_cmap("tab10")(i % 10) for i, lang in enumerate(languages)}
    markers = {model: MARKERS[i % len(MARKERS)] for i, model in enumerate(models)}
    for (lang, model), group in points.groupby(["lang", "model"], sort=False):
        axis.scatter(group["alignment"], group["ctl"], color=colours[lang], marker=markers[model], s=18, alpha=0.8)
    rho, _ = spearman(points["alignment"].to_numpy(), points["ctl"].to_numpy())
    axis.set_title(f"{title} (rho = {rho:.2f}, N = {len(points)})" if np.isfinite(rho) else title)
    axis.set_xlabel("strong alignment en-X (after fine-tuning)")
    axis.set_ylabel("CTL")
    for lang in languages:
        axis.scatter([], [], color=colours[lang], marker="o", label=f"en-{lang}")
    for model in models:
        axis.scatter([], [], color="black", marker=markers[model], label=display_model(model))
    axis.legend(fontsize="x-small")


def _ctl_vs_alignment(ctx: Context, task: str, depths: list[tuple[int, str]], title: str) -> FigureResult:
    points = ctx.points[
        (ctx.points["task"] == task) & (ctx.points["stage"] == "after") & (ctx.points["kind"] == "strong")
        & (ctx.points["direction"] == "en-x")
    ]
    if points.empty:
        return _not_made(title, f"no {display_task(task)} alignment-after-fine-tuning x CTL points")
    languages = results.language_order(points["lang"].unique())
    models = model_order(points["model"].unique())
    figure, axes = _panels(len(depths))
    notes = []
    for axis, (depth, label) in zip(axes, depths):
        panel = points[points["depth"] == depth]
        if panel.empty:
            axis.axis("off")
            notes.append(f"missing: {display_task(task)} {label} layer")
            continue
        _scatter_panel(axis, panel, languages, models, f"{display_task(task)}, {label} layer")
    figure.tight_layout()
    return FigureResult(figure, notes)


def figure2(ctx: Context) -> FigureResult:
    """Figure 2: CTL against strong alignment after fine-tuning on NLI, last and penultimate layer."""
    return _ctl_vs_alignment(ctx, "xnli", [(0, "last"), (1, "penultimate")], "Figure 2")


def figure3(ctx: Context) -> FigureResult:
    """Figure 3: CTL against strong alignment after fine-tuning on NER, last layer."""
    return _ctl_vs_alignment(ctx, "wikiann", [(0, "last")], "Figure 3")


def _alignment_by_layer(ctx: Context, task: str, preferred: tuple[str, ...], fallback: int, title: str) -> FigureResult:
    lang = _language(ctx)
    if lang is None:
        return _not_made(title, "no target languages")
    align = results.alignment_long(ctx.experiment1)
    align = align[
        (align["task"] == task) & (align["kind"] == "strong") & (align["direction"] == "en-x") & (align["lang"] == lang)
        & align["stage"].isin(list(STAGE_STYLES))
    ]
    if align.empty:
        return _not_made(title, f"no {display_task(task)} en-{lang} alignment per layer")
    present = model_order(align["model"].unique())
    models = [m for m in present if canonical_model(m) in preferred] or present[:fallback]
    notes = _language_note(ctx, lang)
    missing = [display_model(m) for m in preferred if m not in {canonical_model(p) for p in present}]
    if missing:
        notes.append(f"not run: {', '.join(missing)} on {display_task(task)}")
    stats = seed_statistics(align, ["model", "stage", "layer"], "value", ctx.settings.std_ddof)
    figure, axes = _panels(len(models))
    for axis, model in zip(axes, models):
        for stage, (label, colour) in STAGE_STYLES.items():
            curve = stats[(stats["model"] == model) & (stats["stage"] == stage)].sort_values("layer")
            if curve.empty:
                continue
            layers = curve["layer"].to_numpy()
            mean = curve["mean"].to_numpy(dtype=float)
            std = np.nan_to_num(curve["std"].to_numpy(dtype=float))
            axis.plot(layers, mean, marker="o", markersize=3, color=colour, label=label)
            axis.fill_between(layers, mean - std, mean + std, color=colour, alpha=0.25)
        axis.set_title(f"{display_model(model)}, {display_task(task)}, en-{lang}")
        axis.set_xlabel("layer (0 = embeddings)")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_ylabel("strong alignment")
        axis.legend(fontsize="small")
    figure.tight_layout()
    return FigureResult(figure, notes)


def figure4(ctx: Context) -> FigureResult:
    """Figure 4: English-Arabic alignment per layer before/after fine-tuning on POS,
    distilmBERT and XLM-R Large."""
    return _alignment_by_layer(ctx, "udpos", FIGURE4_MODELS, 2, "Figure 4")


def figure5(ctx: Context) -> FigureResult:
    """Figure 5: English-Arabic alignment per layer before/after fine-tuning of XLM-R Large on NLI."""
    return _alignment_by_layer(ctx, "xnli", FIGURE5_MODELS, 1, "Figure 5")


@dataclass(frozen=True)
class FigureSpec:
    caption: str
    draw: Callable[[Context], FigureResult]


FIGURES: dict[str, FigureSpec] = {
    "figure1": FigureSpec("Figure 1: cross-lingual transfer between English and Arabic with and without realignment "
                          "(bilingual dictionary).", figure1),
    "figure2": FigureSpec("Figure 2: CTL against English-target strong alignment at the last and penultimate layer "
                          "after fine-tuning on NLI.", figure2),
    "figure3": FigureSpec("Figure 3: CTL against English-target strong alignment at the last layer after "
                          "fine-tuning on NER.", figure3),
    "figure4": FigureSpec("Figure 4: English-Arabic alignment across layers before and after fine-tuning of "
                          "distilmBERT and XLM-R Large on POS (0 = embeddings).", figure4),
    "figure5": FigureSpec("Figure 5: English-Arabic alignment across layers before and after fine-tuning of "
                          "XLM-R Large on NLI.", figure5),
}


def write_figures(ctx: Context, out_dir: Path) -> dict[str, tuple[list[Path], list[str], str | None]]:
    """Draw every figure and write it as PNG and PDF into ``out_dir``; returns, per figure,
    the files written, its notes, and why it could not be drawn (None when it was)."""
    written = {}
    for name, spec in FIGURES.items():
        try:
            drawn = spec.draw(ctx)
        except Exception as error:  # one figure's failure must not cost the report the others
            plt.close("all")
            message = f"{type(error).__name__}: {' '.join(str(error).split())}"
            drawn = _not_made(spec.caption.split(":", 1)[0], f"could not be drawn ({message})")
        if drawn.figure is None:
            files.remove_stale([Path(out_dir) / f"{name}.{fmt}" for fmt in FIGURE_FORMATS])
            written[name] = ([], [], drawn.reason or f"{name}: nothing to draw")
            continue
        try:
            paths = [files.save_figure(drawn.figure, Path(out_dir) / f"{name}.{fmt}") for fmt in FIGURE_FORMATS]
        finally:
            plt.close(drawn.figure)
        written[name] = (paths, drawn.notes, None)
    return written
