"""The two kinds of trial failure that retrying cannot fix.

A trial that fails on bad input (a data file, a setting, a model folder) or whose training
diverged would fail the same way on every retry: the engine reports such a failure once, with
its one-line reason, instead of retrying it. Crashes, preemption and out-of-memory kills are
other exceptions (or no exception at all) and are retried from the last checkpoint.
"""
from __future__ import annotations


class TrialInputError(ValueError):
    """Bad input: the message names the file and line, the setting or the model folder."""


class NonFiniteLossError(ArithmeticError):
    """The training loss became NaN or infinite; the message names the phase and the step."""


# What a retry cannot fix. ValueError covers every validation error of the library
# (settings, data readers, registries), of which TrialInputError and DataSourceError are kinds.
DETERMINISTIC_ERRORS: tuple[type[BaseException], ...] = (ValueError, NonFiniteLossError)


def is_deterministic(error: BaseException) -> bool:
    return isinstance(error, DETERMINISTIC_ERRORS)
