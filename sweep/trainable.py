"""The Ray Tune adapter around `trainables.trial.run_trial`: checkpoints in, metrics out.

The whole resumable state of a trial is one dict (the trial's checkpoint); here it is stored as
`state.pt` in a Tune checkpoint folder. Tune restores the latest one after a failure
(`FailureConfig`) or when the driver resumes the experiment.

Beside Tune's files, each trial folder holds small records of ours, written by the trial
itself (atomically) because Tune's own view of a trial reaches disk only when the driver syncs
its experiment state, which a killed driver never does. They are written and read through the
run's storage filesystem (a `sweep.ledger.Location`: a local or network path, or an object store
such as s3:// or gs://), the one Tune keeps its checkpoints on, so any node can read them:

- `sweep-starts.txt`: how many times the trial started, from scratch or from a checkpoint
  (a checkpoint cannot count the starts that died before their first checkpoint);
- `sweep-final.json`: the final metrics, written before they are reported. A trial that Tune
  restores after it finished (the driver died before recording it) reports them again and
  runs nothing;
- `sweep-failure.json`: the one-line reason of the last exception, and whether a retry could
  fix it (`trainables.errors.is_deterministic`). Tune retries every failure (`FailureConfig`
  has no per-exception policy): a retry of a deterministic failure, in the same driver run,
  raises at once instead of redoing the work. A new driver run (the user may have fixed the
  input) tries again;
- `sweep-skipped.json`: the trial was not started because its experiment no longer has it (a
  restored batch brings back every trial it saved; see sweep.ledger).

Disk: a finished trial's last checkpoint is its small final state (`trainables.trial.final_state`),
so Tune, keeping only the newest checkpoint, deletes the weights and optimizer state. With
`--keep-models` (the trial config's `keep_models`) the fine-tuned model is saved in the trial
folder, `model/` (safetensors and the tokenizer, loadable with `from_pretrained`); on a storage
that is not a local path it is saved in a local folder first and uploaded before the final record.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import AbstractSet, Any, Callable, Mapping

from ray import tune

from sweep.ledger import FINAL_FILE, SKIPPED_FILE, Location, Where, location, read_json, write_json
from trainables.errors import is_deterministic

STATE_FILE = "state.pt"
MODEL_FOLDER = "model"  # --keep-models: the fine-tuned model, in the trial folder
STARTS_FILE = "sweep-starts.txt"
FAILURE_FILE = "sweep-failure.json"
TUNE_ERROR_FILE = "error.txt"  # Tune's: the traceback of every failure of the trial
# Fault injection for the resilience tests: the worker process dies (as if killed) right after
# its N-th checkpoint of a trial that started from scratch.
CRASH_AFTER_CHECKPOINTS_ENV = "SWEEP_TEST_CRASH_AFTER_CHECKPOINTS"


class RecordedFailure(ValueError):
    """A retry of a trial whose failure is deterministic: raised before any work is redone."""


# --- records in the trial folder ---------------------------------------------------------------


def count_start(trial_dir: Where) -> int:
    """Add one start to the trial's count and return the new count."""
    record = location(trial_dir) / STARTS_FILE
    try:
        starts = int(record.read_text()) + 1
    except (OSError, ValueError):
        starts = 1
    record.write_text(str(starts))
    return starts


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def one_line(error: BaseException) -> str:
    """The line a user reads: the exception's type and the last line of its message."""
    return f"{type(error).__name__}: {last_line(str(error))}".rstrip(": ")


def failure_reason(trial_dir: Where, error: BaseException | None = None) -> str:
    """A failed trial's one-line reason: the trial's own record when it raised, else the last line
    of the error Tune saw (a worker that died raised nothing). `trial_dir`: a local path, or a
    `Location` on the run's storage filesystem."""
    folder = location(trial_dir)
    record = read_json(folder / FAILURE_FILE)
    if isinstance(record, dict) and record.get("reason"):
        return str(record["reason"])
    if error is not None:  # a remote error's text is its traceback: the last line is the exception
        return last_line(str(error)) or type(error).__name__
    try:
        return last_line((folder / TUNE_ERROR_FILE).read_text()) or "failed"
    except OSError:
        return "failed (no error recorded)"


# --- reporting -----------------------------------------------------------------------------------


def load_checkpoint_state() -> dict[str, Any] | None:
    import torch

    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        return torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=False)


def report_to_tune(metrics: Mapping[str, Any], state: Mapping[str, Any] | None = None) -> None:
    """Report nested metrics (Tune flattens them with '/'), with the state as a checkpoint if given."""
    import torch

    if state is None:
        tune.report(dict(metrics))
        return
    with tempfile.TemporaryDirectory() as folder:
        torch.save(dict(state), Path(folder) / STATE_FILE)
        tune.report(dict(metrics), checkpoint=tune.Checkpoint.from_directory(folder))


def run_trial_in_tune(config: Mapping[str, Any], trial_dir: Where, driver_run: str,
                      wanted: AbstractSet[str] | Mapping[str, Mapping[str, Any]] | None = None) -> None:
    """One trial in a Tune worker; `trial_dir` is its folder in the run (a local path or a
    `Location` on the storage filesystem), `driver_run` names the driver run that scheduled it (a
    deterministic failure is not retried within one); `wanted`, when given, are the content keys
    the experiment has now: any other trial stops unstarted. Given as this driver run's trial
    configs by key, their run options (`keep_models`) apply to a trial restored from an earlier
    run too: they are not part of its identity."""
    trial_dir = location(trial_dir)
    final = read_json(trial_dir / FINAL_FILE)
    if isinstance(final, dict):
        tune.report(final)  # finished before the driver recorded it: the same result, nothing rerun
        return
    if wanted is not None and config["trial"].get("key") not in wanted:
        write_json(trial_dir / SKIPPED_FILE, {"driver_run": driver_run})
        return  # Tune records it as terminated without results; the analysis never reads it
    failure = read_json(trial_dir / FAILURE_FILE)
    if isinstance(failure, dict) and failure.get("deterministic") and failure.get("driver_run") == driver_run:
        raise RecordedFailure(f"{failure['reason']} (not retried: it fails the same way every time; "
                              f"first traceback in {trial_dir / TUNE_ERROR_FILE})")
    (trial_dir / FAILURE_FILE).unlink(missing_ok=True)  # an earlier run's failure: try again
    starts = count_start(trial_dir)

    import torch

    # imported in the worker: the driver needs no torch models
    from trainables.runtime import return_freed_memory
    from trainables.trial import run_trial

    trial_config = dict(config["trial"])
    staging = None  # a local folder the model is saved in before it goes to a remote storage
    if keeps_model(trial_config, wanted):
        if trial_dir.local is not None:
            trial_config["model_dir"] = str(trial_dir.local / MODEL_FOLDER)
        else:  # save_model writes local files (transformers' save_pretrained)
            staging = Path(tempfile.mkdtemp(prefix="sweep-model-"))
            trial_config["model_dir"] = str(staging / MODEL_FOLDER)
    cpus = trial_config.get("resources", {}).get("CPU")
    if cpus:  # one trial per CPU share: don't let torch oversubscribe the node's cores
        torch.set_num_threads(max(1, int(cpus)))
    state = load_checkpoint_state()

    def report(metrics: Mapping[str, Any], checkpoint_state: Mapping[str, Any] | None = None) -> None:
        if metrics.get("phase") == "done":  # the final result: recorded before Tune hears of it
            if staging is not None and (staging / MODEL_FOLDER).is_dir():  # whole before the trial counts as done
                (trial_dir / MODEL_FOLDER).upload(staging / MODEL_FOLDER)
            metrics = {**metrics, "trial_starts": starts}
            write_json(trial_dir / FINAL_FILE, dict(metrics))
        report_to_tune(metrics, checkpoint_state)

    crash_after = int(os.environ.get(CRASH_AFTER_CHECKPOINTS_ENV, "0"))
    if crash_after and state is None:
        report = _crashing_after(crash_after, report)
    try:
        run_trial(trial_config, state, report)
    except Exception as error:
        write_json(trial_dir / FAILURE_FILE, {"reason": one_line(error), "type": type(error).__name__,
                                              "deterministic": is_deterministic(error), "driver_run": driver_run})
        raise
    finally:  # the worker process runs the next trial: don't let it hold this one's peak memory
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        return_freed_memory()


def keeps_model(trial_config: Mapping[str, Any],
                wanted: AbstractSet[str] | Mapping[str, Mapping[str, Any]] | None) -> bool:
    """Whether the trial saves its fine-tuned model: this driver run's choice when it gave its
    configs, else the one the trial was scheduled with (a restored batch keeps its first configs)."""
    current = wanted.get(trial_config.get("key")) if isinstance(wanted, Mapping) else None
    return bool((current if current is not None else trial_config).get("keep_models", False))


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


def make_trainable(gpus_available: bool, run_dir: Path | Location, driver_run: str,
                   wanted: AbstractSet[str] | Mapping[str, Mapping[str, Any]] | None = None) -> Any:
    """The trainable of one driver run. Each trial's folder is `run_dir/<trial name>` (the runner
    names folders after trials; `run_dir` is the batch's Tune run, the `storage_path` /
    `storage_filesystem` the runner gives Tune); the storage must be shared by every node, as
    Tune requires for its checkpoints. `wanted`: see `run_trial_in_tune`."""
    # The filesystem travels to the workers with the trainable, as Tune's own storage context
    # carries `storage_filesystem` to them (ray/train/_internal/storage.py, StorageContext).
    batch = location(run_dir)
    if isinstance(wanted, Mapping):  # only the run options travel to the workers, not whole configs
        wanted = {key: {"keep_models": bool(c.get("keep_models", False))} for key, c in wanted.items()}
    elif wanted is not None:
        wanted = frozenset(wanted)

    def sweep_trial(config: Mapping[str, Any]) -> None:
        run_trial_in_tune(config, batch / tune.get_context().get_trial_name(), driver_run, wanted)

    return tune.with_resources(sweep_trial, trial_resources(gpus_available))
