"""Atomic file writing: every output is written to a temporary file in the same folder, then
renamed over the target with ``os.replace``, so a reader never sees a half-written file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd


def _atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then move ``tmp_path`` onto ``path`` (same folder, same suffix)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same directory so os.replace is a rename on one filesystem; same suffix so writers that
    # infer the format from the name (matplotlib, pandas) pick the right one.
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(handle)
    tmp_path = Path(tmp_name)
    try:
        write(tmp_path)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return _atomic_write(Path(path), lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_csv(path: Path, frame: pd.DataFrame, index: bool = False) -> Path:
    """Write ``frame`` as CSV to ``path`` atomically."""
    return _atomic_write(Path(path), lambda tmp: frame.to_csv(tmp, index=index))


def write_parquet(path: Path, frame: pd.DataFrame) -> Path:
    """Write ``frame`` as Parquet to ``path`` atomically."""
    return _atomic_write(Path(path), lambda tmp: frame.to_parquet(tmp, index=False))


def save_figure(figure: "object", path: Path) -> Path:
    """Save a matplotlib figure to ``path`` atomically; the format comes from the suffix."""
    fmt = Path(path).suffix.lstrip(".")
    return _atomic_write(Path(path), lambda tmp: figure.savefig(tmp, format=fmt, bbox_inches="tight"))
