"""Run an experiment as one Ray Tune sweep: start or join Ray, fit or resume, report."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import tune

from sweep.display import SweepProgress, ViewRelay
from sweep.experiment import (
    Experiment,
    ExperimentError,
    check_run_name,
    device_problems,
    trial_settings,
)
from sweep.trainable import FINAL_FILE, make_trainable, read_json, write_json

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MAX_FAILURES = 2  # retries of a failed trial from its last checkpoint
CHECKPOINTS_KEPT = 1  # the trial state holds model + optimizer: keep only the newest
CACHE_FOLDER = "cache"  # shared work (pairs, tokenised data, pre-trained alignment) under --storage
RUNTIME_ENV_EXCLUDES = [".git", ".venv", "results", "**/__pycache__", "*.pt", "*.safetensors"]
RUN_MARKER = "sweep-run.json"  # written when a run folder is made: what `--fresh` may delete
ADDRESS_TIMEOUT_S = 5.0  # a Ray head answers at once; ray.init itself would wait forever
DEFAULT_RAY_PORT = 6379


def git_commit() -> str:
    """The code's commit, '-dirty' when the working tree has changes, 'unknown' outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def trial_configs(experiment: Experiment, storage: Path) -> list[dict[str, Any]]:
    """The Ray config of each trial: its axes, settings, resources, and the code's commit."""
    commit = git_commit()
    configs = []
    for trial in experiment.trials:
        spec = experiment.models[trial.model]
        config = trial.config(spec, extra={
            "resources": {"CPU": spec.cpu, "GPU": spec.gpu},
            "git_commit": commit,
            "experiment": experiment.name,
        })
        config["settings"].setdefault("cache_dir", str(storage / CACHE_FOLDER))
        configs.append(config)
    return configs


@dataclass
class ClusterInfo:
    total_gpus: float
    max_node_gpus: float
    max_node_cpus: float
    dashboard_url: str | None


def check_address(address: str, timeout: float = ADDRESS_TIMEOUT_S) -> None:
    """Something must answer at a cluster address before `ray.init` joins it: given an address
    where nothing listens, ray.init retries forever."""
    if address == "auto":  # Ray reads the local cluster's address file and fails at once if absent
        return
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":") if ":" in target else (target, "", "")
    host = host.strip("[]") or "127.0.0.1"
    try:
        number = int(port) if port else DEFAULT_RAY_PORT
    except ValueError:
        raise ExperimentError(f"--address {address}: expected HOST:PORT, e.g. 10.0.0.1:6379") from None
    try:
        socket.create_connection((host, number), timeout=timeout).close()
    except OSError as error:
        raise ExperimentError(f"--address {address}: nothing answers at {host}:{number} within {timeout:g} s "
                              f"({error.strerror or error}); is the Ray head running (`ray start --head`)?") from None


def start_ray(address: str | None, num_cpus: int | None = None) -> ClusterInfo:
    """Join a cluster (shipping this project's code to its workers) or start a local Ray."""
    if num_cpus is not None and num_cpus < 1:
        raise ExperimentError(f"--num-cpus {num_cpus}: expected a whole number >= 1")
    if ray.is_initialized():  # a Ray this process already joined (tests, notebooks)
        context = None
    elif address:
        check_address(address)
        try:
            context = ray.init(address=address, runtime_env={"working_dir": str(PROJECT_ROOT),
                                                             "excludes": RUNTIME_ENV_EXCLUDES})
        except ConnectionError as error:
            raise ExperimentError(f"--address {address}: {str(error).splitlines()[0]}") from None
    else:
        # include_dashboard=None: the dashboard runs where its dependencies (ray[default]) are installed
        context = ray.init(num_cpus=num_cpus, include_dashboard=None, dashboard_host="127.0.0.1",
                           log_to_driver=False)
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    return ClusterInfo(
        total_gpus=float(ray.cluster_resources().get("GPU", 0)),
        max_node_gpus=max((float(n.get("GPU", 0)) for n in nodes), default=0.0),
        max_node_cpus=max((float(n.get("CPU", 0)) for n in nodes), default=0.0),
        dashboard_url=(getattr(context, "dashboard_url", None) or None) if context else None,
    )


def check_resources(experiment: Experiment, cluster: ClusterInfo) -> None:
    """Refuse requests no node can meet: Tune would wait for them forever."""
    for name in sorted({t.model for t in experiment.trials}):
        spec = experiment.models[name]
        if spec.cpu > cluster.max_node_cpus:
            raise ExperimentError(f"model {name!r} asks {spec.cpu} CPUs per trial; the largest node has "
                                  f"{cluster.max_node_cpus:g} (set models[{name!r}]['cpu'] lower)")
        if cluster.total_gpus > 0 and spec.gpu > cluster.max_node_gpus:
            raise ExperimentError(f"model {name!r} asks {spec.gpu} GPU per trial; the largest node has "
                                  f"{cluster.max_node_gpus:g} (set models[{name!r}]['gpu'] lower)")
    problems = device_problems(experiment, trial_settings(experiment), cluster.total_gpus, "the Ray cluster")
    if problems:
        raise ExperimentError(problems[0])


# --- the run folder ------------------------------------------------------------------------------


def trials_digest(experiment: Experiment) -> str:
    """A hash of the trial list (axes, settings, model sources and shares)."""
    trials = [[t.name, list(map(list, t.settings)), experiment.models[t.model].source,
               experiment.models[t.model].cpu, experiment.models[t.model].gpu] for t in experiment.trials]
    return hashlib.sha256(json.dumps(trials, sort_keys=True, default=str).encode()).hexdigest()


def experiment_file(experiment: Experiment) -> str:
    source = Path(experiment.source)
    return str(source.resolve()) if experiment.source and source.is_file() else experiment.source


def run_marker(experiment: Experiment) -> dict[str, str]:
    return {"experiment": experiment.name, "experiment_file": experiment_file(experiment),
            "trials_sha256": trials_digest(experiment)}


def other_experiment(marker: dict[str, Any], experiment: Experiment) -> str | None:
    """How the marker's experiment differs from this one (name or file), or None if it is this one."""
    mine = run_marker(experiment)
    for key in ("experiment", "experiment_file"):
        if marker.get(key) != mine[key]:
            return f"{marker.get('experiment')!r} of {marker.get('experiment_file')}"
    return None


def prepare_run_folder(run_dir: Path, experiment: Experiment, fresh: bool) -> bool:
    """Check (and with `fresh`, delete) the run folder; True when there is a run to restore.

    `--fresh` deletes only a folder whose marker says it is a run of this experiment: a wrong
    `--name` or `--storage` must never cost another run's (or anything else's) files."""
    marker = read_json(run_dir / RUN_MARKER) if run_dir.is_dir() else None
    marker = marker if isinstance(marker, dict) else None
    occupied = run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir()))
    if occupied and marker is None:
        raise ExperimentError(f"{run_dir} exists and is not a run folder of this engine (no {RUN_MARKER}); "
                              f"nothing was {'deleted' if fresh else 'changed'}: choose another --name or --storage")
    if marker is not None and (other := other_experiment(marker, experiment)):
        raise ExperimentError(f"{run_dir} is a run of experiment {other}; nothing was "
                              f"{'deleted' if fresh else 'changed'}: choose another --name")
    if fresh and run_dir.exists():
        shutil.rmtree(run_dir)
    if tune.Tuner.can_restore(str(run_dir)):
        if marker.get("trials_sha256") != trials_digest(experiment):
            print(f"note: the experiment changed since {run_dir} started; the restored run keeps its trial list "
                  "(use --fresh or a new --name to run the new one)")
        return True
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / RUN_MARKER, run_marker(experiment))
    return False


def finished_trials(run_dir: Path) -> int:
    """Trials whose final result is recorded in their folder (see sweep.trainable)."""
    return sum(1 for _ in run_dir.glob(f"*/{FINAL_FILE}"))


def run_sweep(
    experiment: Experiment,
    storage: Path,
    name: str,
    address: str | None = None,
    fresh: bool = False,
    live: bool = True,
    num_cpus: int | None = None,
) -> tune.ResultGrid:
    check_run_name(name)
    storage = storage.resolve()
    run_dir = storage / name
    restoring = prepare_run_folder(run_dir, experiment, fresh)
    cluster = start_ray(address, num_cpus)
    if cluster.dashboard_url:
        print(f"Ray dashboard: http://{cluster.dashboard_url} (token auth: `ray get-auth-token` prints the token "
              f"it asks for; from another machine: ssh -L 8265:127.0.0.1:8265 <head node>)")
    check_resources(experiment, cluster)
    # One id per driver run: a deterministic failure is not retried within it (sweep.trainable).
    trainable = make_trainable(cluster.total_gpus > 0, run_dir, driver_run=uuid.uuid4().hex)
    progress = SweepProgress(total=len(experiment.trials), done=finished_trials(run_dir)) if live else None
    if live:  # the view shows each failure's line and its log; Tune would print every traceback
        os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")
    if restoring:
        print(f"resuming {run_dir} (finished trials are kept; errored and unfinished ones continue)")
        # The restored RunConfig brings back its ViewRelay, which reports to this driver's view.
        tuner = tune.Tuner.restore(str(run_dir), trainable=trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search(trial_configs(experiment, storage))},
            # Workers run trial after trial (a fresh process costs ~5 s of start and imports per
            # trial); each trial hands its freed memory back (sweep.trainable), so a worker holds
            # its live set (~1 GB for e5-small), not the peak of the largest trial it ran.
            tune_config=tune.TuneConfig(trial_name_creator=_trial_name, trial_dirname_creator=_trial_name,
                                        reuse_actors=True),
            run_config=tune.RunConfig(
                name=name,
                storage_path=str(storage),
                failure_config=tune.FailureConfig(max_failures=MAX_FAILURES),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT),
                callbacks=[ViewRelay()],
                verbose=0 if live else 1,
            ),
        )
    if progress:
        with progress:
            return tuner.fit()
    return tuner.fit()


def _trial_name(trial: Any) -> str:
    config = trial.config["trial"]
    return f"{config['model'].split('/')[-1]}_{config['task']}_{config['realign']}_{config['pairs']}_" \
           f"{config['corpus']}_s{config['seed']}_{trial.trial_id}"
