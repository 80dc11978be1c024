"""Render a table grid (strings, with per-cell marks) as Markdown and LaTeX.

The paper shades cells in gray; Markdown has no shading, so marks become a symbol after the
value, explained in a legend under the table. LaTeX gets the paper's ``\\cellcolor`` shades
(needs ``\\usepackage[table]{xcolor}``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

MISSING = "missing"  # a cell the grid expects but the results do not have
NOT_APPLICABLE = "-"  # a cell that cannot exist (e.g. layer -8 of a 6-layer model)

# mark name -> (Markdown symbol, LaTeX cell colour, legend text)
MARKS: dict[str, tuple[str, str, str]] = {
    "light": (
        "°",
        r"\cellcolor{gray!30}",
        "difference to the same model's baseline within the baseline's std (paper: light gray)",
    ),
    "dark": (
        "▼",
        r"\cellcolor{gray!80}",
        "lower than the baseline minus its std (paper: dark gray)",
    ),
    "ns": ("†", r"\cellcolor{gray!30}", "not significant (p >= 0.05)"),
}


@dataclass
class Grid:
    """A table as displayed: ``cells`` holds strings (row index and columns may be MultiIndex),
    ``marks`` the same shape with a key of ``MARKS`` or ''."""

    cells: pd.DataFrame
    marks: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)

    def mark_of(self, i: int, j: int) -> str:
        if self.marks is None:
            return ""
        value = self.marks.iat[i, j]
        return value if isinstance(value, str) else ""


def _row_labels(grid: Grid) -> tuple[list[str], list[list[str]]]:
    """Row header names and, per row, its labels with repeats of the row above blanked (as in
    the paper, where a task name appears once for its block of rows)."""
    index = grid.cells.index
    names = [str(n) if n is not None else "" for n in index.names]
    rows: list[list[str]] = []
    previous: tuple = ()
    for label in index:
        label = label if isinstance(label, tuple) else (label,)
        shown = []
        for level, part in enumerate(label):
            same_prefix = previous[: level + 1] == label[: level + 1]
            shown.append("" if same_prefix and level < len(label) - 1 else str(part))
        rows.append(shown)
        previous = label
    return names, rows


def _column_labels(grid: Grid) -> list[tuple[str, ...]]:
    return [c if isinstance(c, tuple) else (c,) for c in grid.cells.columns]


def _legend(grid: Grid) -> list[str]:
    used = {grid.mark_of(i, j) for i in range(grid.cells.shape[0]) for j in range(grid.cells.shape[1])}
    return [f"{MARKS[m][0]} {MARKS[m][2]}" for m in MARKS if m in used]


def escape_markdown(text: str) -> str:
    """Escape the pipe so a cell cannot split a Markdown table row."""
    return str(text).replace("|", "\\|")


def to_markdown(grid: Grid, title: str) -> str:
    """Markdown: a heading, a pipe table (multi-level column labels joined by ' '), the mark
    legend and the notes."""
    names, rows = _row_labels(grid)
    columns = [" ".join(str(p) for p in c if str(p)) for c in _column_labels(grid)]
    header = [*names, *columns]
    lines = [f"# {title}", "", "| " + " | ".join(escape_markdown(h) for h in header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    for i, labels in enumerate(rows):
        cells = []
        for j in range(grid.cells.shape[1]):
            text = str(grid.cells.iat[i, j])
            mark = grid.mark_of(i, j)
            cells.append(f"{text} {MARKS[mark][0]}" if mark else text)
        lines.append("| " + " | ".join(escape_markdown(c) for c in [*labels, *cells]) + " |")
    extra = _legend(grid) + grid.notes
    if extra:
        lines.append("")
        lines.extend(f"- {line}" for line in extra)
    return "\n".join(lines) + "\n"


LATEX_SPECIALS = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}
LATEX_SYMBOLS = {"±": r"$\pm$", "°": r"$^{\circ}$", "▼": r"$\blacktriangledown$", "†": r"$\dagger$", "≥": r"$\geq$"}


def escape_latex(text: str) -> str:
    """Escape LaTeX special characters and map the few symbols the tables use."""
    out = []
    for char in str(text):
        out.append(LATEX_SPECIALS.get(char) or LATEX_SYMBOLS.get(char) or char)
    return "".join(out)


def to_latex(grid: Grid, title: str, label: str) -> str:
    """A LaTeX ``table`` with a ``tabular``: grouped column headers (``\\multicolumn``) for
    multi-level columns, marks as the paper's gray cell colours, notes in the caption."""
    names, rows = _row_labels(grid)
    column_labels = _column_labels(grid)
    depth = max((len(c) for c in column_labels), default=1)
    n_row_levels = len(names)
    spec = "l" * n_row_levels + "c" * len(column_labels)
    lines = [
        "% Requires \\usepackage[table]{xcolor} for the gray cells.",
        "\\begin{table}[ht]",
        "\\centering",
        f"\\begin{{tabular}}{{{spec}}}",
        "\\hline",
    ]
    for level in range(depth):
        header = [escape_latex(n) if level == depth - 1 else "" for n in names]
        j = 0
        while j < len(column_labels):
            part = column_labels[j][level] if level < len(column_labels[j]) else ""
            span = 1
            # Group consecutive columns sharing this level's label and all levels above it.
            while (
                level < depth - 1
                and j + span < len(column_labels)
                and column_labels[j + span][: level + 1] == column_labels[j][: level + 1]
            ):
                span += 1
            cell = escape_latex(part)
            header.append(f"\\multicolumn{{{span}}}{{c}}{{{cell}}}" if span > 1 else cell)
            j += span
        lines.append(" & ".join(header) + " \\\\")
    lines.append("\\hline")
    for i, labels in enumerate(rows):
        cells = [escape_latex(l) for l in labels]
        for j in range(grid.cells.shape[1]):
            mark = grid.mark_of(i, j)
            colour = MARKS[mark][1] if mark else ""
            cells.append(colour + escape_latex(grid.cells.iat[i, j]))
        lines.append(" & ".join(cells) + " \\\\")
    lines.extend(["\\hline", "\\end{tabular}"])
    caption = "; ".join([title.rstrip("."), *(_legend(grid)), *grid.notes]) + "."
    lines.append(f"\\caption{{{escape_latex(caption)}}}")
    lines.append(f"\\label{{tab:{escape_latex(label)}}}")
    lines.append("\\end{table}")
    return "\n".join(lines) + "\n"
