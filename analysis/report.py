"""``DIR/report.md``: one page with the run's size, what is missing relative to the paper's grid,
and links to every table, figure and comparison."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis import files, results
from analysis.results import (
    PAPER_CORPORA,
    PAPER_MODELS,
    PAPER_SEEDS_PER_CELL,
    PAPER_TARGET_LANGUAGES,
    PAPER_TASKS,
    PAIR_SOURCES,
    REALIGN_METHODS,
    canonical_model,
    display_model,
    display_task,
    model_order,
    normalised_name,
    task_order,
)

MAX_LISTED = 20  # longest list of cells printed before summarising the rest
FINISHED_STATUS = "TERMINATED"


@dataclass
class Output:
    """One table, figure or comparison: its caption, files and notes."""

    caption: str
    paths: list[Path]
    notes: list[str] = field(default_factory=list)


def run_size(trials: pd.DataFrame) -> dict[str, object]:
    """Counts of trials, models, tasks, target languages and seeds, and the values of each axis."""
    return {
        "trials": len(trials),
        "models": model_order(trials["model"].unique()),
        "tasks": task_order(trials["task"].unique()),
        "languages": results.target_languages(trials),
        "seeds": sorted(int(s) for s in trials["seed"].unique()),
        "realign": [m for m in REALIGN_METHODS if m in set(trials["realign"])],
        "pairs": sorted(str(p) for p in trials["pairs"].dropna().unique()),
        "corpora": sorted(str(c) for c in trials["corpus"].dropna().unique()),
    }


def _listed(lines: list[str]) -> list[str]:
    if len(lines) <= MAX_LISTED:
        return lines
    return lines[:MAX_LISTED] + [f"... and {len(lines) - MAX_LISTED} more"]


def missing_summary(trials: pd.DataFrame) -> list[str]:
    """What the run lacks: the paper's axis values not run, unfinished trials, cells with fewer
    seeds than the paper's five, trials without scores or alignment."""
    lines: list[str] = []
    models = {canonical_model(m) for m in trials["model"].unique()}
    absent = {
        "models": [display_model(m) for m in PAPER_MODELS if m not in models],
        "tasks": [display_task(t) for t in PAPER_TASKS if t not in set(trials["task"])],
        "target languages": [l for l in PAPER_TARGET_LANGUAGES if l not in results.target_languages(trials)],
        "realignment methods": [m for m in REALIGN_METHODS if m not in set(trials["realign"])],
        "pair sources": [p for p in PAIR_SOURCES if p not in set(trials["pairs"].dropna())],
        "corpora": [c for c in PAPER_CORPORA if c not in {normalised_name(x) for x in trials["corpus"].dropna()}],
    }
    for what, values in absent.items():
        if values:
            lines.append(f"paper's {what} not run: {', '.join(values)}")
    if "status" in trials.columns:
        unfinished = trials[trials["status"].fillna("") != FINISHED_STATUS]
        if len(unfinished):
            counts = unfinished["status"].fillna("unknown").value_counts()
            lines.append("unfinished trials: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    keys = ["model", "task", "realign", "pairs", "corpus"]
    cells = trials.assign(condition=results.condition_labels(trials)).fillna({"pairs": "", "corpus": ""})
    seeds = cells.groupby([*keys, "condition"], sort=True)["seed"].nunique()
    few = seeds[seeds < PAPER_SEEDS_PER_CELL]
    if len(few):
        lines.append(f"{len(few)} configuration(s) with fewer than {PAPER_SEEDS_PER_CELL} seeds (the paper's count):")
        listed = [
            f"  - {display_model(m)} {display_task(t)} {r} {p} {c}{f' ({cond})' if cond else ''}: {n} seed(s)"
            + (" — std over seeds is NaN" if n == 1 else "")
            for (m, t, r, p, c, cond), n in few.items()
        ]
        lines.extend(_listed(listed))
    english = f"score/{results.SOURCE_LANGUAGE}"
    no_score = len(trials) if english not in trials.columns else int(trials[english].isna().sum())
    if no_score:
        lines.append(f"{no_score} trial(s) without an English score")
    align_columns = [c for c in trials.columns if results.ALIGN_PATTERN.match(c)]
    for stage in (results.STAGE_BEFORE, results.STAGE_AFTER):
        columns = [c for c in align_columns if c.split("/")[1] == stage]
        lacking = len(trials) if not columns else int(trials[columns].isna().all(axis=1).sum())
        if lacking:
            lines.append(f"{lacking} trial(s) without '{stage}' alignment")
    return lines


def _link(path: Path, out_dir: Path) -> str:
    relative = path.relative_to(out_dir).as_posix()
    return f"[{path.suffix.lstrip('.')}]({relative})"


def render_report(
    trials: pd.DataFrame, source: str, out_dir: Path, trial_files: list[Path], tables: dict[str, Output],
    figures: dict[str, Output], comparisons: dict[str, Output], selection_notes: list[str],
) -> str:
    """The report's Markdown text."""
    size = run_size(trials)
    lines = ["# Analysis report", "", f"Results: `{source}`", "", "## Run size", ""]
    lines.append(
        f"{size['trials']} trials; {len(size['models'])} model(s); {len(size['tasks'])} task(s); "
        f"{len(size['languages'])} target language(s); {len(size['seeds'])} seed(s)."
    )
    lines.append("")
    lines.append(f"- models: {', '.join(display_model(m) for m in size['models'])}")
    lines.append(f"- tasks: {', '.join(display_task(t) for t in size['tasks'])}")
    lines.append(f"- target languages: {', '.join(size['languages']) or 'none'}")
    lines.append(f"- seeds: {', '.join(map(str, size['seeds']))}")
    lines.append(f"- realignment: {', '.join(size['realign'])}; pairs: {', '.join(size['pairs']) or 'none'}; "
                 f"corpora: {', '.join(size['corpora']) or 'none'}")
    lines.append(f"- trials table: {' '.join(_link(p, out_dir) for p in trial_files)}")
    lines += ["", "## Missing", ""]
    missing = missing_summary(trials)
    lines += [f"- {m}" if not m.startswith("  ") else m for m in missing] or ["- nothing: the paper's full grid is present"]
    if selection_notes:
        lines += ["", "## Selections", ""]
        lines += [f"- {n}" for n in selection_notes]
    lines += ["", "## Tables", ""]
    for name, output in tables.items():
        links = " ".join(_link(p, out_dir) for p in output.paths)
        lines.append(f"- **{name}** {links} — {output.caption}")
        lines += [f"  - {n}" for n in output.notes]
    lines += ["", "## Figures", ""]
    for name, output in figures.items():
        links = " ".join(_link(p, out_dir) for p in output.paths)
        lines.append(f"- **{name}** {links} — {output.caption}")
        lines += [f"  - {n}" for n in output.notes]
    if comparisons:
        lines += ["", "## Comparison with the paper", ""]
        for name, output in comparisons.items():
            links = " ".join(_link(p, out_dir) for p in output.paths)
            lines.append(f"- **{name}** {links}")
            lines += [f"  - {n}" for n in output.notes]
    return "\n".join(lines) + "\n"


def write_report(out_dir: Path, text: str) -> Path:
    """Write ``report.md`` into ``out_dir`` atomically."""
    return files.write_text(Path(out_dir) / "report.md", text)
