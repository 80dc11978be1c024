"""Checks made before Ray starts: every model and data file a trial will need is there and sound.

Each problem is one line naming the setting, model or file; the sweep starts only when there
are none. Local model folders (and a local `awesome_model`) are checked by
`trainables.model_files.check_model_folder` (config, fast tokenizer, weights covering the
encoder), once per folder; local data files are read whole through their readers, once per file,
so that a bad line fails here rather than in hundreds of trials. Hub model ids (and a hub
`awesome_model`) are asked of the hub at their pinned revision when online
(`trainables.model_files.hub_model_problems`): a typo is one line here, with "did you mean",
instead of a failure inside every trial; offline they are skipped with a note. Nothing is cached
on disk.

These checks run on the driver, before Ray starts, so they see this machine only. FastAlign (a
package or two programs, per machine) is the one need that can differ between the nodes of a
cluster: `fastalign_node_problems` asks every node of a running Ray, one pinned task each.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import IO, Any, Iterable

from sweep.experiment import Experiment
from trainables.settings import make_settings


def looks_like_local_path(source: str) -> bool:
    return source.startswith(("/", "~", "./", "../")) or os.path.exists(source)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def model_folder_problems(folders: dict[str, str]) -> list[str]:
    """One line per local model folder (-> what refers to it) that fails its check."""
    if not folders:
        return []
    from trainables.model_files import check_model_folder

    problems = []
    for folder, what in folders.items():
        try:
            check_model_folder(folder)
        except ValueError as error:  # TrialInputError
            problems.append(f"{what}: {_one_line(error)}")
    return problems


def hub_problems(hub_models: dict[str, str], notes: IO[str] | None = None, api: object | None = None) -> list[str]:
    """One line per hub model id (-> what names it) that the hub does not serve at its pinned
    revision; when offline nothing is asked and a note says so on `notes` (stderr): the trials
    then read the Hugging Face cache, and a model missing there fails in its trials."""
    if not hub_models:
        return []
    from trainables.data import _offline_reason, is_offline
    from trainables.model_files import hub_model_problems

    if is_offline():
        print(f"note: hub models not checked, {_offline_reason()}: {', '.join(sorted(hub_models))}",
              file=notes if notes is not None else sys.stderr)
        return []
    return hub_model_problems(hub_models, api=api)


FASTALIGN_DRIVER_NOTE = "checked on this machine (the driver) only, before Ray starts"
NODE_CHECK_TIMEOUT_S = 120.0  # a node sets up the job's runtime environment before its first task


def fastalign_missing_here(backends: Iterable[str] = ("auto",)) -> str | None:
    """Why the `fastalign` pair source cannot run on this machine with these `fastalign_backend`
    settings (one line), or None. The default backend, "numpy", needs nothing."""
    from trainables.pairs import fastalign_backend

    for backend in sorted(set(backends)):
        try:  # systran-align, or the fast_align and atools programs on PATH
            fastalign_backend(backend)
        except ValueError as error:  # TrialInputError
            return _one_line(error)
    return None


def fastalign_node_problems(nodes: list[dict[str, Any]], timeout: float = NODE_CHECK_TIMEOUT_S,
                            backends: Iterable[str] = ("auto",)) -> list[str]:
    """One line per node of the running Ray (`ray.nodes()` entries) where the `fastalign` pair
    source cannot run: `fastalign_missing_here` in one task pinned to each node
    (NodeAffinitySchedulingStrategy, not soft), so a compute node without fast_align is found
    before its trials fail there. A node that does not answer within `timeout` is one line too."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0, max_retries=0)(fastalign_missing_here)
    asked = {f"node {node.get('NodeManagerAddress', '?')} ({str(node['NodeID'])[:8]})": probe.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote(sorted(set(backends)))
        for node in nodes}
    ready, _ = ray.wait(list(asked.values()), num_returns=len(asked), timeout=timeout)
    answered = set(ready)
    problems = []
    for name, ref in asked.items():
        reason = ray.get(ref) if ref in answered else f"fast_align not checked: no answer within {timeout:g} s"
        if reason is not None:
            problems.append(f"{name}: {reason}")
    return problems


def preflight_problems(experiment: Experiment) -> list[str]:
    from trainables.data import describe_missing, describe_unreadable

    problems: list[str] = []
    folders: dict[str, str] = {}  # local model folder -> the model or setting that names it
    hub_models: dict[str, str] = {}  # hub model id -> the model or setting that names it
    for name in sorted({t.model for t in experiment.trials}):
        source = experiment.models[name].source
        if looks_like_local_path(source):
            folders.setdefault(source, f"model {name!r}")
        else:
            hub_models.setdefault(source, f"model {name!r}")
    needs: set[tuple] = set()
    fastalign_backends: set[str] = set()
    for trial in experiment.trials:
        try:
            settings = make_settings(dict(trial.settings), model=trial.model)
        except ValueError as error:
            problems.append(f"model {trial.model!r}: {_one_line(error)}")
            continue
        needs.add(("task", trial.task, settings.langs, settings.data_dir, None))
        needs.add(("parallel", trial.corpus, settings.langs, settings.data_dir, None))
        if trial.pairs == "dico":  # only the MUSE files the setting reads (en-X alone for "en-x-copy")
            needs.add(("dictionary", "muse", settings.langs, settings.data_dir, settings.muse_reverse_file))
        if trial.pairs == "fastalign":
            fastalign_backends.add(settings.fastalign_backend)
        if trial.pairs == "awesome":
            sources = folders if looks_like_local_path(settings.awesome_model) else hub_models
            sources.setdefault(settings.awesome_model, "setting awesome_model")
    if fastalign_backends:
        # On a cluster the trials run on other nodes: `fastalign_node_problems` checks those once
        # Ray is up; this line only says what this machine lacks.
        reason = fastalign_missing_here(fastalign_backends)
        if reason is not None:
            problems.append(f"{reason} ({FASTALIGN_DRIVER_NOTE})")
    problems.extend(model_folder_problems(folders))
    problems.extend(hub_problems(hub_models))
    already_read: set[Path] = set()  # a file several needs share is read once
    for kind, name, langs, data_dir, reverse_file in sorted(needs, key=str):
        options = {} if reverse_file is None else {"muse_reverse_file": reverse_file}
        problems.extend(describe_missing(kind, name, langs, data_dir, **options))
        problems.extend(describe_unreadable(kind, name, langs, data_dir, already_read, **options))
    return _unique(problems)


def _unique(lines: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(lines))
