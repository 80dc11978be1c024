"""The Ray Tune adapter around `trainables.trial.run_trial`: checkpoints in, metrics out.

The whole resumable state of a trial is one dict (the trial's checkpoint); here it is stored as
`state.pt` in a Tune checkpoint folder. Tune restores the latest one after a failure
(`FailureConfig`) or when the driver resumes the experiment.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from ray import tune

STATE_FILE = "state.pt"
# Fault injection for the resilience tests: the worker process dies (as if killed) right after
# its N-th checkpoint of a trial that started from scratch.
CRASH_AFTER_CHECKPOINTS_ENV = "SWEEP_TEST_CRASH_AFTER_CHECKPOINTS"


def load_checkpoint_state() -> dict[str, Any] | None:
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        return torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=False)


def report_to_tune(metrics: Mapping[str, Any], state: Mapping[str, Any] | None = None) -> None:
    """Report nested metrics (Tune flattens them with '/'), with the state as a checkpoint if given."""
    if state is None:
        tune.report(dict(metrics))
        return
    with tempfile.TemporaryDirectory() as folder:
        torch.save(dict(state), Path(folder) / STATE_FILE)
        tune.report(dict(metrics), checkpoint=tune.Checkpoint.from_directory(folder))


def run_trial_in_tune(config: Mapping[str, Any]) -> None:
    # imported in the worker: the driver needs no torch models
    from trainables.runtime import return_freed_memory
    from trainables.trial import run_trial

    trial_config = dict(config["trial"])
    cpus = trial_config.get("resources", {}).get("CPU")
    if cpus:  # one trial per CPU share: don't let torch oversubscribe the node's cores
        torch.set_num_threads(max(1, int(cpus)))
    state = load_checkpoint_state()
    report = report_to_tune
    crash_after = int(os.environ.get(CRASH_AFTER_CHECKPOINTS_ENV, "0"))
    if crash_after and state is None:
        report = _crashing_after(crash_after, report_to_tune)
    try:
        run_trial(trial_config, state, report)
    finally:  # the worker process runs the next trial: don't let it hold this one's peak memory
        return_freed_memory()


def _crashing_after(n_checkpoints: int, report: Callable[..., None]) -> Callable[..., None]:
    saved = 0

    def crash_after_checkpoint(metrics: Mapping[str, Any], state: Mapping[str, Any] | None = None) -> None:
        nonlocal saved
        report(metrics, state)
        if state is not None:
            saved += 1
            if saved >= n_checkpoints:
                os._exit(1)

    return crash_after_checkpoint


def trial_resources(gpus_available: bool) -> Callable[[Mapping[str, Any]], tune.PlacementGroupFactory]:
    """Each trial's request from its config; no GPU request at all where the cluster has none
    (a request no node can meet would leave Tune waiting forever)."""

    def request(config: Mapping[str, Any]) -> tune.PlacementGroupFactory:
        wanted = config["trial"]["resources"]
        bundle = {"CPU": float(wanted["CPU"])}
        if gpus_available and wanted.get("GPU", 0) > 0:
            bundle["GPU"] = float(wanted["GPU"])
        return tune.PlacementGroupFactory([bundle])

    return request


def make_trainable(gpus_available: bool) -> Any:
    return tune.with_resources(run_trial_in_tune, trial_resources(gpus_available))
