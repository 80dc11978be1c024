"""``DIR/report.md``: one page with the run's size, the trials set aside (failed, unfinished, did
not learn), what is missing relative to the paper's grid, links to every table, figure and
comparison, and which tables and figures could not be made and why."""

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


@dataclass
class Output:
    """One table, figure or comparison: its caption, files and notes; ``reason`` says why it
    could not be made (then it has no files)."""

    caption: str
    paths: list[Path]
    notes: list[str] = field(default_factory=list)
    reason: str | None = None


def run_size(trials: pd.DataFrame) -> dict[str, object]:
    """Counts of trials, models, tasks, target languages and seeds, and the values of each axis
    (the paper's names in its order, then any other name as it is)."""
    return {
        "trials": len(trials),
        "models": model_order(trials["model"].unique()),
        "tasks": task_order(trials["task"].unique()),
        "languages": results.target_languages(trials),
        "seeds": sorted(int(s) for s in trials["seed"].dropna().unique()),
        "realign": results.ordered(trials["realign"].unique(), REALIGN_METHODS),
        "pairs": results.ordered(trials["pairs"].unique(), PAIR_SOURCES),
        "corpora": results.ordered(trials["corpus"].unique(), PAPER_CORPORA, key=normalised_name),
    }


def describe_trial(row: pd.Series) -> str:
    """A trial's axes in one line: ``mBERT POS before dico opus100 seed 0``."""
    parts = [display_model(row["model"]), display_task(row["task"]), row["realign"], row["pairs"], row["corpus"]]
    seed = row["seed"]
    text = " ".join(str(p) for p in parts if not results.is_missing(p) and str(p))
    return f"{text} seed {int(seed)}" if not results.is_missing(seed) else text


def set_aside_summary(loaded: results.Results, unlearned: pd.DataFrame | None, keep_unlearned: bool) -> list[str]:
    """The trials that are not (or not fully) results: failed ones with their error's last line,
    the number of unfinished ones, duplicates across results, and those that did not learn."""
    lines: list[str] = []
    if len(loaded.failed):
        lines.append(f"{len(loaded.failed)} failed trial(s), left out of every table:")
        listed = []
        for _, row in loaded.failed.iterrows():
            error = row.get("error")
            shown = f": {error}" if isinstance(error, str) and error.strip() else ": (no error message kept)"
            listed.append(f"  - {describe_trial(row)}{shown}")
        lines.extend(_listed(listed))
    if len(loaded.unfinished):
        status = loaded.unfinished["status"].fillna("no status").astype(str).value_counts()
        lines.append(
            f"{len(loaded.unfinished)} unfinished trial(s) (no final scores yet; "
            + ", ".join(f"{n} {s}" for s, n in status.items()) + "), left out of every table"
        )
    if loaded.duplicates:
        lines.append(f"{loaded.duplicates} trial(s) found in more than one results source: counted once "
                     "(a finished one first, then the newest)")
    if unlearned is not None and len(unlearned):
        where = "kept in the CTL correlations (--keep-unlearned)" if keep_unlearned else \
            "left out of the CTL correlations and Figures 2-3 (--keep-unlearned keeps them)"
        lines.append(f"{len(unlearned)} trial(s) did not learn (English score at or below chance: POS 1/17, "
                     f"NER F1 0, NLI 1/3), {where}:")
        english = f"score/{results.SOURCE_LANGUAGE}"
        lines.extend(_listed([f"  - {describe_trial(row)}: English score {row[english]:.3f}"
                              for _, row in unlearned.iterrows()]))
    return lines


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


def _output_lines(outputs: dict[str, Output], out_dir: Path) -> list[str]:
    lines = []
    for name, output in outputs.items():
        if output.reason is not None:
            continue
        links = " ".join(_link(p, out_dir) for p in output.paths)
        lines.append(f"- **{name}** {links} — {output.caption}")
        lines += [f"  - {n}" for n in output.notes]
    return lines or ["- none"]


def render_report(
    loaded: results.Results, out_dir: Path, trial_files: list[Path], tables: dict[str, Output],
    figures: dict[str, Output], comparisons: dict[str, Output], selection_notes: list[str],
    unlearned: pd.DataFrame | None = None, keep_unlearned: bool = False,
) -> str:
    """The report's Markdown text: the finished trials' size, the trials set aside, what is
    missing, the tables and figures made, and those that could not be made and why."""
    trials = loaded.trials
    size = run_size(trials)
    sources = ", ".join(f"`{s}`" for s in loaded.sources)
    lines = ["# Analysis report", "", f"Results: {sources}", "", "## Run size", ""]
    aside = len(loaded.failed) + len(loaded.unfinished)
    lines.append(
        f"{size['trials']} trials; {len(size['models'])} model(s); {len(size['tasks'])} task(s); "
        f"{len(size['languages'])} target language(s); {len(size['seeds'])} seed(s)."
        + (f" Finished trials only: {len(loaded.failed)} failed and {len(loaded.unfinished)} unfinished "
           "trial(s) set aside." if aside else "")
    )
    lines.append("")
    lines.append(f"- models: {', '.join(display_model(m) for m in size['models']) or 'none'}")
    lines.append(f"- tasks: {', '.join(display_task(t) for t in size['tasks']) or 'none'}")
    lines.append(f"- target languages: {', '.join(size['languages']) or 'none'}")
    lines.append(f"- seeds: {', '.join(map(str, size['seeds'])) or 'none'}")
    lines.append(f"- realignment: {', '.join(size['realign']) or 'none'}; pairs: {', '.join(size['pairs']) or 'none'}; "
                 f"corpora: {', '.join(size['corpora']) or 'none'}")
    lines.append(f"- trials table: {' '.join(_link(p, out_dir) for p in trial_files)}")
    set_aside = set_aside_summary(loaded, unlearned, keep_unlearned)
    if set_aside:
        lines += ["", "## Trials set aside", ""]
        lines += [f"- {m}" if not m.startswith("  ") else m for m in set_aside]
    lines += ["", "## Missing", ""]
    missing = missing_summary(trials)
    lines += [f"- {m}" if not m.startswith("  ") else m for m in missing] or ["- nothing: the paper's full grid is present"]
    if selection_notes:
        lines += ["", "## Selections", ""]
        lines += [f"- {n}" for n in selection_notes]
    lines += ["", "## Tables", ""] + _output_lines(tables, out_dir)
    lines += ["", "## Figures", ""] + _output_lines(figures, out_dir)
    unmade = [o.reason for o in [*tables.values(), *figures.values()] if o.reason is not None]
    if unmade:
        lines += ["", "## Not made", ""]
        lines += [f"- {reason}" for reason in unmade]
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
