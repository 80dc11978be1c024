"""Run an experiment as one Ray Tune sweep: start or join Ray, fit or resume, report."""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import tune

from sweep.display import SweepProgress
from sweep.experiment import Experiment, ExperimentError, Trial
from sweep.trainable import make_trainable

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MAX_FAILURES = 2  # retries of a failed trial from its last checkpoint
CHECKPOINTS_KEPT = 1  # the trial state holds model + optimizer: keep only the newest
CACHE_FOLDER = "cache"  # shared work (pairs, tokenised data, pre-trained alignment) under --storage
RUNTIME_ENV_EXCLUDES = [".git", ".venv", "results", "**/__pycache__", "*.pt", "*.safetensors"]


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


def start_ray(address: str | None, num_cpus: int | None = None) -> ClusterInfo:
    """Join a cluster (shipping this project's code to its workers) or start a local Ray."""
    dashboard = ray._private.utils.get_dashboard_dependency_error() is None
    if ray.is_initialized():  # a Ray this process already joined (tests, notebooks)
        context = None
    elif address:
        context = ray.init(address=address, runtime_env={"working_dir": str(PROJECT_ROOT),
                                                         "excludes": RUNTIME_ENV_EXCLUDES})
    else:
        context = ray.init(num_cpus=num_cpus, include_dashboard=dashboard, dashboard_host="127.0.0.1",
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


def run_sweep(
    experiment: Experiment,
    storage: Path,
    name: str,
    address: str | None = None,
    fresh: bool = False,
    live: bool = True,
    num_cpus: int | None = None,
) -> tune.ResultGrid:
    storage = storage.resolve()
    run_dir = storage / name
    if fresh and run_dir.exists():
        shutil.rmtree(run_dir)
    cluster = start_ray(address, num_cpus)
    if cluster.dashboard_url:
        print(f"Ray dashboard: http://{cluster.dashboard_url} (token auth: `ray get-auth-token` prints the token "
              f"it asks for; from another machine: ssh -L 8265:127.0.0.1:8265 <head node>)")
    check_resources(experiment, cluster)
    trainable = make_trainable(gpus_available=cluster.total_gpus > 0)
    progress = SweepProgress(total=len(experiment.trials)) if live else None
    callbacks = [progress] if progress else []
    if tune.Tuner.can_restore(str(run_dir)):
        print(f"resuming {run_dir} (finished trials are kept; errored and unfinished ones continue)")
        tuner = tune.Tuner.restore(str(run_dir), trainable=trainable, resume_errored=True)
        # Tune restores the RunConfig saved with the experiment, whose live display belonged to the
        # dead driver; Tuner.restore takes no callbacks, so attach this driver's display here.
        tuner._local_tuner.get_run_config().callbacks = callbacks  # noqa: SLF001
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
                callbacks=callbacks,
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
