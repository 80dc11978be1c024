"""Atomic file writing: every output is written to a temporary file in the same folder, then
renamed over the target with ``os.replace``, so a reader never sees a half-written file and a
crash mid-analysis leaves the previous version (or nothing), never a truncated one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd


def _read_umask() -> int:
    # os.umask can only be read by setting it; set it back at once (once, at import, so no
    # other thread creates a file while the mask is 0).
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


UMASK = _read_umask()


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then move ``tmp_path`` onto ``path`` (same folder, same suffix).

    The only writer of the package: every output goes through it. On any failure the
    temporary file is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same directory so os.replace is a rename on one filesystem; same suffix so writers that
    # infer the format from the name (matplotlib, pandas) pick the right one.
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(handle)
    tmp_path = Path(tmp_name)
    try:
        write(tmp_path)
        # mkstemp creates the file private (0600); give it the permissions a plain open() would.
        os.chmod(tmp_path, 0o666 & ~UMASK)
        # Flush the bytes to disk before the rename, so a power loss cannot leave an empty file
        # under the final name.
        with open(tmp_path, "rb") as written:
            os.fsync(written.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(Path(path), lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_csv(path: Path, frame: pd.DataFrame, index: bool = False) -> Path:
    """Write ``frame`` as CSV to ``path`` atomically."""
    return atomic_write(Path(path), lambda tmp: frame.to_csv(tmp, index=index))


def write_parquet(path: Path, frame: pd.DataFrame) -> Path:
    """Write ``frame`` as Parquet to ``path`` atomically."""
    return atomic_write(Path(path), lambda tmp: frame.to_parquet(tmp, index=False))


def save_figure(figure: "object", path: Path) -> Path:
    """Save a matplotlib figure to ``path`` atomically; the format comes from the suffix."""
    fmt = Path(path).suffix.lstrip(".")
    return atomic_write(Path(path), lambda tmp: figure.savefig(tmp, format=fmt, bbox_inches="tight"))


def remove_stale(paths: list[Path]) -> list[Path]:
    """Delete the files among ``paths`` that exist (outputs of an earlier analysis that this one
    could not make, which would otherwise be read as current); returns those removed."""
    removed = []
    for path in paths:
        if Path(path).is_file():
            Path(path).unlink()
            removed.append(Path(path))
    return removed
