"""Checks made before Ray starts: every model and data file a trial will need is there.

Each problem is one line naming the setting, model or file; the sweep starts only when there
are none (the issue: "reported before Ray starts, one clear message each").
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from sweep.experiment import Experiment
from trainables.settings import make_settings


def looks_like_local_path(source: str) -> bool:
    return source.startswith(("/", "~", "./", "../")) or os.path.exists(source)


def preflight_problems(experiment: Experiment) -> list[str]:
    from trainables.data import describe_missing

    problems: list[str] = []
    for name in sorted({t.model for t in experiment.trials}):
        source = experiment.models[name].source
        if looks_like_local_path(source) and not (Path(source) / "config.json").is_file():
            problems.append(f"model {name!r}: {source}/config.json not found (a transformers model folder is expected)")
    needs: set[tuple] = set()
    for trial in experiment.trials:
        settings = make_settings(dict(trial.settings), model=trial.model)
        needs.add(("task", trial.task, settings.langs, settings.data_dir))
        needs.add(("parallel", trial.corpus, settings.langs, settings.data_dir))
        if trial.pairs == "dico":
            needs.add(("dictionary", "muse", settings.langs, settings.data_dir))
        if trial.pairs == "awesome" and looks_like_local_path(settings.awesome_model):
            if not (Path(settings.awesome_model) / "config.json").is_file():
                problems.append(f"setting awesome_model: {settings.awesome_model}/config.json not found")
    for kind, name, langs, data_dir in sorted(needs, key=str):
        problems.extend(describe_missing(kind, name, langs, data_dir))
    return _unique(problems)


def _unique(lines: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(lines))
