"""The paper's published numbers, side by side with ours.

``analysis/paper_numbers/tableN.csv`` are transcriptions of the paper's tables (Gaschi et al.,
Findings of ACL 2023; text of the paper in ``shared/paper``), one row per cell, keyed like our
tables' long frames: models by hub id, tasks as ``udpos``/``wikiann``/``xnli``, languages as
codes, scores in percent, baselines with realign ``none`` and empty pairs. Printed as in the
paper, including its inconsistencies: Table 5's distilmBERT "+ before" row has es/fr swapped
relative to Table 13 (86.5/85.8 vs 85.8/86.5); Table 9's strong en-X correlations differ from
Table 2's (e.g. POS last before 0.80 vs 0.82); Table 16 labels the English column "same"
(stored as ``en``) and has no mBERT "+ before awesome" row.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import files
from analysis.render import MISSING, escape_markdown
from analysis.results import canonical_model, display_model, display_task

PAPER_NUMBERS_FOLDER = "paper_numbers"  # inside the analysis package (package data)


@dataclass(frozen=True)
class PaperTable:
    """How a table's cells are keyed and which numbers are compared."""

    keys: tuple[str, ...]
    values: tuple[str, ...]


CONTROLLED_KEYS = ("model", "realign", "pairs", "lang")
PAPER_TABLES: dict[str, PaperTable] = {
    "table2": PaperTable(("task", "layer", "kind", "stage", "direction"), ("rho",)),
    "table3": PaperTable(("task", "model", "lang"), ("mean",)),
    "table4": PaperTable(("model", "realign", "pairs", "task"), ("mean",)),
    "table5": PaperTable(("task", "model", "realign", "pairs", "lang"), ("mean",)),
    "table6": PaperTable(("model", "realign", "pairs", "task"), ("mean",)),
    "table8": PaperTable(("task", "layer", "kind", "direction", "stage"), ("rho", "ci_low", "ci_high")),
    "table9": PaperTable(("task", "layer", "kind", "direction", "stage"), ("rho", "ci_low", "ci_high")),
    "table10": PaperTable(("task", "model", "lang"), ("mean", "std")),
    "table11": PaperTable(("task", "model", "depth", "stage"), ("rho", "ci_low", "ci_high")),
    "table12": PaperTable(("task", "model", "depth", "stage"), ("rho",)),
    **{f"table{n}": PaperTable(CONTROLLED_KEYS, ("mean", "std")) for n in range(13, 18)},
}


def load_paper_numbers(name: str) -> pd.DataFrame:
    """The paper's numbers for table ``name`` (e.g. ``table13``) as a long frame."""
    if name not in PAPER_TABLES:
        suggestion = difflib.get_close_matches(name, PAPER_TABLES, n=1)
        hint = f"; did you mean '{suggestion[0]}'?" if suggestion else ""
        raise KeyError(f"no published numbers for {name!r}{hint} (known: {', '.join(PAPER_TABLES)})")
    with resources.files("analysis").joinpath(PAPER_NUMBERS_FOLDER, f"{name}.csv").open("r", encoding="utf-8") as handle:
        frame = pd.read_csv(handle, keep_default_na=False, na_values=[""])
    for key in PAPER_TABLES[name].keys:
        if key != "depth":
            frame[key] = frame[key].fillna("").astype(str)
    return frame


def _key_frame(frame: pd.DataFrame, keys: tuple[str, ...]) -> pd.DataFrame:
    out = frame.copy()
    for key in keys:
        if key == "model":
            out[key] = out[key].map(canonical_model)
        elif key == "depth":
            out[key] = pd.to_numeric(out[key]).astype("int64")
        else:
            out[key] = out[key].fillna("").astype(str)
    return out


def compare_with_paper(name: str, ours: pd.DataFrame) -> pd.DataFrame:
    """One row per published cell: its keys, and for each compared number ``{v}_ours``,
    ``{v}_paper`` and ``{v}_diff`` (ours - paper); ours is NaN where the run lacks the cell.
    Models are matched through :func:`canonical_model` (``FacebookAI/xlm-roberta-base`` is
    XLM-R Base)."""
    spec = PAPER_TABLES[name]
    paper = _key_frame(load_paper_numbers(name), spec.keys)
    ours_keyed = _key_frame(ours, spec.keys)
    available = [v for v in spec.values if v in ours_keyed.columns]
    ours_keyed = ours_keyed[[*spec.keys, *available]].drop_duplicates(list(spec.keys))
    merged = paper[[*spec.keys, *spec.values]].merge(ours_keyed, on=list(spec.keys), how="left", suffixes=("_paper", "_ours"))
    out = merged[list(spec.keys)].copy()
    for value in spec.values:
        paper_column = f"{value}_paper" if value in available else value
        ours_values = merged[f"{value}_ours"] if value in available else pd.Series(np.nan, index=merged.index)
        out[f"{value}_ours"] = ours_values.astype(float)
        out[f"{value}_paper"] = merged[paper_column].astype(float)
        out[f"{value}_diff"] = out[f"{value}_ours"] - out[f"{value}_paper"]
    return out


def _shown_key(key: str, value: object) -> str:
    if key == "model":
        return display_model(str(value))
    if key == "task":
        return display_task(str(value))
    return str(value)


def comparison_markdown(name: str, comparison: pd.DataFrame, title: str) -> str:
    """The comparison as a Markdown table: keys, then ours / paper / difference per number."""
    spec = PAPER_TABLES[name]
    digits = 1 if "mean" in spec.values and name not in ("table3", "table10") else 2
    header = [*spec.keys]
    for value in spec.values:
        header += [f"{value} ours", f"{value} paper", f"{value} diff"]
    lines = [f"# {title}", "", "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for _, row in comparison.iterrows():
        cells = [_shown_key(k, row[k]) for k in spec.keys]
        for value in spec.values:
            for suffix in ("ours", "paper", "diff"):
                number = row[f"{value}_{suffix}"]
                cells.append(MISSING if not np.isfinite(number) else f"{number:+.{digits}f}" if suffix == "diff" else f"{number:.{digits}f}")
        lines.append("| " + " | ".join(escape_markdown(c) for c in cells) + " |")
    present = comparison[[f"{v}_ours" for v in spec.values]].notna().any(axis=1)
    lines.append("")
    lines.append(f"- {int(present.sum())} of {len(comparison)} published cells present in this run")
    if present.any():
        first = spec.values[0]
        diffs = comparison.loc[present, f"{first}_diff"].abs()
        lines.append(f"- mean absolute difference of {first}: {diffs.mean():.{digits}f} (max {diffs.max():.{digits}f})")
    return "\n".join(lines) + "\n"


def write_comparison(name: str, ours: pd.DataFrame, out_dir: Path, title: str) -> list[Path]:
    """Write ``{name}_vs_paper.md`` and ``.csv`` into ``out_dir`` atomically."""
    comparison = compare_with_paper(name, ours)
    out_dir = Path(out_dir)
    return [
        files.write_text(out_dir / f"{name}_vs_paper.md", comparison_markdown(name, comparison, title)),
        files.write_csv(out_dir / f"{name}_vs_paper.csv", comparison),
    ]
