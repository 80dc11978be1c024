"""Registries (name -> entry) and their "did you mean" errors, shared by every registry."""
from __future__ import annotations

import difflib
from typing import Iterable, Mapping, TypeVar

T = TypeVar("T")


def did_you_mean(name: str, valid: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest valid name, or '' when none is close."""
    close = difflib.get_close_matches(str(name), [str(v) for v in valid], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_name(what: str, name: str, valid: Iterable[str]) -> str:
    """The one-line message for a name that is not in a registry."""
    valid = [str(v) for v in valid]
    return f"unknown {what} {name!r}{did_you_mean(name, valid)}; valid: {', '.join(valid)}"


def lookup(registry: Mapping[str, T], name: str, what: str) -> T:
    """`registry[name]`, or a ValueError naming the closest valid name and all of them."""
    if name not in registry:
        raise ValueError(unknown_name(what, name, registry))
    return registry[name]
