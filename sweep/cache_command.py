"""`python -m sweep cache list|prune`: what the shared cache of a results folder holds, and pruning it.

The cache is `<storage>/cache` (where the sweep puts it: `sweep.runner.CACHE_FOLDER`), or the folder
`--cache-dir` names (a sweep whose `cache_dir` setting points elsewhere). Only files whose names the
cache makes are listed by kind and ever deleted (`trainables.cache.CACHE_KINDS`); anything else is
counted and left alone, and a temporary file young enough to be a write in progress is kept.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

from sweep.cli import DEFAULT_STORAGE
from trainables.cache import CACHE_KINDS, TEMPORARY_GRACE_S, CacheFile, prune_cache, scan_cache

CACHE_FOLDER = "cache"  # = sweep.runner.CACHE_FOLDER (not imported: that module imports Ray)
SECONDS_PER_DAY = 86_400
FOREIGN_SHOWN = 5  # files not the cache's, named in the output before "and N more"


class CacheCommandError(ValueError):
    """A bad folder or option: one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--storage", default=DEFAULT_STORAGE,
                       help=f"results folder whose {CACHE_FOLDER}/ to use (default: {DEFAULT_STORAGE})")
    where.add_argument("--cache-dir", help="the cache folder itself (a sweep's cache_dir setting); overrides --storage")
    parser = argparse.ArgumentParser(prog="python -m sweep cache", description=__doc__.splitlines()[0])
    actions = parser.add_subparsers(dest="action", required=True, metavar="{list,prune}")
    actions.add_parser("list", parents=[where], help="entries by kind: files, size, newest use")
    prune = actions.add_parser("prune", parents=[where], help="delete old (or all) entries")
    age = prune.add_mutually_exclusive_group(required=True)
    age.add_argument("--older-than", type=float, metavar="DAYS", help="delete entries last used more than DAYS ago")
    age.add_argument("--all", action="store_true", help="delete every entry")
    prune.add_argument("--dry-run", action="store_true", help="say what would be deleted, delete nothing")
    return parser


def cache_folder(storage: str, cache_dir: str | None) -> Path:
    """The cache folder the options name; `CacheCommandError` when it is not a folder."""
    if cache_dir is not None:
        folder, option = Path(cache_dir).expanduser(), "--cache-dir"
    else:
        if "://" in storage and not storage.startswith("file://"):
            raise CacheCommandError(f"--storage {storage}: a sweep on that storage keeps its cache where its "
                                    "cache_dir setting says (a folder every node mounts): pass it as --cache-dir")
        root = Path(storage.removeprefix("file://")).expanduser()
        if root.exists() and not root.is_dir():
            raise CacheCommandError(f"--storage {root} is a file, not a results folder")
        folder, option = root / CACHE_FOLDER, f"--storage {root}"
    if not folder.exists():
        raise CacheCommandError(f"no cache at {folder} ({option}; --cache-dir names another folder)")
    if not folder.is_dir():
        raise CacheCommandError(f"cache {folder} is a file, not a folder")
    return folder.resolve()


def human_size(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(seconds))


def describe_foreign(foreign: Sequence[Path], folder: Path, verb: str) -> str:
    names = ", ".join(str(p.relative_to(folder)) for p in foreign[:FOREIGN_SHOWN])
    more = f" and {len(foreign) - FOREIGN_SHOWN} more" if len(foreign) > FOREIGN_SHOWN else ""
    return f"{verb} {len(foreign)} file(s) the cache did not make: {names}{more}"


def summary_row(label: str, files: Sequence[CacheFile]) -> str:
    entries = sum(f.role == "entry" for f in files)
    newest = when(max(f.last_use for f in files)) if files else "-"
    return f"{label:<10} {entries:>7} {len(files):>6} {human_size(sum(f.size for f in files)):>10}  {newest}"


def list_cache(folder: Path) -> list[str]:
    scan = scan_cache(folder)
    lines = [f"cache {folder}", f"{'kind':<10} {'entries':>7} {'files':>6} {'size':>10}  newest use"]
    for kind in CACHE_KINDS:
        files = [f for f in scan.files if f.kind == kind.label]
        if files:
            lines.append(summary_row(kind.label, files))
    lines.append(summary_row("total", scan.files))
    if scan.foreign:
        lines.append(describe_foreign(scan.foreign, folder, "not listed:"))
    return lines


def prune(folder: Path, older_than_days: float | None, dry_run: bool) -> list[str]:
    if older_than_days is not None and older_than_days < 0:
        raise CacheCommandError(f"--older-than {older_than_days:g}: expected a number of days >= 0")
    older_than_s = None if older_than_days is None else older_than_days * SECONDS_PER_DAY
    result = prune_cache(folder, older_than_s, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    entries = sum(f.role == "entry" for f in result.deleted)
    lines = [f"{verb} {entries} entries ({len(result.deleted)} files, "
             f"{human_size(sum(f.size for f in result.deleted))}) from {folder}"]
    if dry_run:
        lines[1:1] = [f"  {f.path.relative_to(folder)}" for f in result.deleted]
    busy = {f.entry for f in result.busy}
    if busy:
        lines.append(f"kept {len(result.busy)} temporary file(s) younger than {TEMPORARY_GRACE_S // 3600} h "
                     "(writes in progress) of: "
                     + ", ".join(str(e.relative_to(folder)) for e in sorted(busy)[:FOREIGN_SHOWN]))
    if result.foreign:
        lines.append(describe_foreign(result.foreign, folder, "left alone:"))
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        folder = cache_folder(args.storage, args.cache_dir)
        if args.action == "list":
            lines = list_cache(folder)
        else:
            lines = prune(folder, None if args.all else args.older_than, args.dry_run)
    except (CacheCommandError, OSError) as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0
