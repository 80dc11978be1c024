"""Run an experiment with Ray Tune: start or join Ray, resume its unfinished trials, run its new
ones as one more batch (see sweep.ledger for the experiment folder), report."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import ray
from ray import tune

from sweep.display import SweepProgress, ViewRelay, trial_group
from sweep.experiment import (
    Experiment,
    ExperimentError,
    check_run_name,
    device_problems,
    trial_settings,
)
from sweep.ledger import (
    RUN_MARKER,
    TUNE_STATE_GLOB,
    Plan,
    batch_names,
    finished_durations,
    next_batch_name,
    plan_trials,
    read_marker,
    write_batch_record,
    write_current,
)
from sweep.trainable import make_trainable, write_json

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MAX_FAILURES = 2  # retries of a failed trial from its last checkpoint
CHECKPOINTS_KEPT = 1  # the trial state holds model + optimizer: keep only the newest
CACHE_FOLDER = "cache"  # shared work (pairs, tokenised data, pre-trained alignment) under --storage
RUNTIME_ENV_EXCLUDES = [".git", ".venv", "results", "**/__pycache__", "*.pt", "*.safetensors"]
SYNC_WARNING_ENV = "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S"
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
    """The Ray config of each trial: its axes, settings, resources, content key (what identifies
    it across runs, sweep.experiment.trial_key) and the code's commit."""
    commit = git_commit()
    configs = []
    for trial, key in experiment.keys().items():
        spec = experiment.models[trial.model]
        config = trial.config(spec, extra={
            "resources": {"CPU": spec.cpu, "GPU": spec.gpu},
            "key": key,
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
        # The dashboard (ray[default], a dependency) serves on loopback only: a sweep's dashboard
        # can stop jobs and read their logs; other machines reach it through an SSH tunnel.
        # include_dashboard=None rather than True: a minimal Ray still runs, without a dashboard.
        context = ray.init(num_cpus=num_cpus, include_dashboard=None, dashboard_host="127.0.0.1",
                           log_to_driver=False)
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    return ClusterInfo(
        total_gpus=float(ray.cluster_resources().get("GPU", 0)),
        max_node_gpus=max((float(n.get("GPU", 0)) for n in nodes), default=0.0),
        max_node_cpus=max((float(n.get("CPU", 0)) for n in nodes), default=0.0),
        dashboard_url=(getattr(context, "dashboard_url", None) or None) if context is not None else None,
    )


def dashboard_authentication_mode(address: str) -> str:
    """The dashboard's own answer to "which sign-in?" (its public /api/authentication_mode route):
    "token" or "disabled"; where it does not answer, what RAY_AUTH_MODE asks for (Ray 2.60's
    local default is token mode)."""
    try:
        with urllib.request.urlopen(f"http://{address}/api/authentication_mode", timeout=3) as response:
            return str(json.load(response).get("authentication_mode", "disabled"))
    except (OSError, ValueError):
        return "disabled" if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled" else "token"


def dashboard_note(cluster: ClusterInfo) -> str | None:
    """The line telling where the Ray dashboard is and how to sign in to it (None without one).

    Ray (2.60) starts a local cluster in token mode unless RAY_AUTH_MODE=disabled: the dashboard's
    page loads, but its API answers 401 until the browser signs in with the cluster's token
    (`ray get-auth-token` prints it; the page keeps it in a cookie), or a client sends
    `Authorization: Bearer <token>`."""
    if not cluster.dashboard_url:
        return None
    address = cluster.dashboard_url.removeprefix("http://").removeprefix("https://")
    port = address.rpartition(":")[2] or "8265"
    token_mode = dashboard_authentication_mode(address) == "token"
    sign_in = ("sign in with the token `ray get-auth-token` prints" if token_mode
               else "no sign-in: Ray's token authentication is off; RAY_AUTH_MODE=token turns it on")
    return (f"Ray dashboard: http://{address} ({sign_in}; from another machine: "
            f"ssh -L {port}:127.0.0.1:{port} <head node>)")


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


def experiment_file(experiment: Experiment) -> str:
    source = Path(experiment.source)
    return str(source.resolve()) if experiment.source and source.is_file() else experiment.source


def run_marker(experiment: Experiment) -> dict[str, str]:
    return {"experiment": experiment.name, "experiment_file": experiment_file(experiment)}


def other_experiment(marker: dict[str, Any], experiment: Experiment) -> str | None:
    """How the marker's experiment differs from this one (name or file), or None if it is this one."""
    mine = run_marker(experiment)
    for key in ("experiment", "experiment_file"):
        if marker.get(key) != mine[key]:
            return f"{marker.get('experiment')!r} of {marker.get('experiment_file')}"
    return None


def prepare_run_folder(run_dir: Path, experiment: Experiment, fresh: bool) -> bool:
    """Check (and with `fresh`, delete) the experiment folder; True when it holds batches already.

    `--fresh` deletes only a folder whose marker says it is a run of this experiment: a wrong
    `--name` or `--storage` must never cost another run's (or anything else's) files."""
    marker = read_marker(run_dir)
    occupied = run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir()))
    if occupied and marker is None:
        raise ExperimentError(f"{run_dir} exists and is not a run folder of this engine (no {RUN_MARKER}); "
                              f"nothing was {'deleted' if fresh else 'changed'}: choose another --name or --storage")
    if marker is not None and (other := other_experiment(marker, experiment)):
        raise ExperimentError(f"{run_dir} is a run of experiment {other}; nothing was "
                              f"{'deleted' if fresh else 'changed'}: choose another --name")
    if fresh and run_dir.exists():
        shutil.rmtree(run_dir)
    elif marker is not None and any(run_dir.glob(TUNE_STATE_GLOB)):
        raise ExperimentError(f"{run_dir} holds one Tune run of an earlier version of this engine (no batches); "
                              f"nothing was changed: `python -m analysis {run_dir}` reads it; run this experiment "
                              "with another --name (or --fresh to discard it)")
    run_dir.mkdir(parents=True, exist_ok=True)
    if read_marker(run_dir) is None:
        write_json(run_dir / RUN_MARKER, run_marker(experiment))
    return bool(batch_names(run_dir))


@dataclass
class SweepResults:
    """One driver run of an experiment: the plan it followed (done, to resume, new) and Tune's
    results of the trials it ran (iterating gives those `tune.Result`s)."""

    run_dir: Path
    plan: Plan
    grids: list[tune.ResultGrid] = field(default_factory=list)
    ran: frozenset[str] = frozenset()  # content keys of the trials this run had to run

    @property
    def results(self) -> list[Any]:
        return [r for grid in self.grids for r in grid if result_key(r) in self.ran]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    @property
    def errors(self) -> list[Exception]:
        return [r.error for r in self.results if r.error]

    @property
    def finished(self) -> int:
        """Trials of the experiment finished, in this run or before it."""
        return len(self.plan.done) + sum(1 for r in self.results if not r.error)

    def get_dataframe(self) -> Any:
        import pandas as pd

        frames = [grid.get_dataframe() for grid in self.grids]
        frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        return frame[frame["config/trial/key"].isin(self.ran)].reset_index(drop=True) if len(frame) else frame


def result_key(result: Any) -> str | None:
    return (result.config or {}).get("trial", {}).get("key")


def run_sweep(
    experiment: Experiment,
    storage: Path,
    name: str,
    address: str | None = None,
    fresh: bool = False,
    live: bool = True,
    num_cpus: int | None = None,
    log: bool = False,
    on_finished: Callable[[int], None] | None = None,
) -> SweepResults:
    """Run the experiment's trials that are not done: first those a batch can resume (restored
    with Tune, oldest batch first), then the new ones as one more batch. `live`: our view (`log`:
    as plain lines) instead of Tune's output; `on_finished(n)` after each of this run's trials
    finishes, n counting them."""
    check_run_name(name)
    storage = storage.resolve()
    run_dir = storage / name
    prepare_run_folder(run_dir, experiment, fresh)
    configs = {config["key"]: config for config in trial_configs(experiment, storage)}
    plan = plan_trials(run_dir, configs)
    print(f"{name}: {len(configs)} trials: {plan.summary()}", flush=True)
    new_batch = next_batch_name(run_dir) if plan.new else None
    current = {key: placement.batch for key, placement in {**plan.done, **plan.resume}.items()}
    write_current(run_dir, read_marker(run_dir) or run_marker(experiment),
                  {key: current.get(key, new_batch) for key in configs})
    to_run = frozenset(plan.resume) | frozenset(plan.new)
    if not to_run:
        return SweepResults(run_dir, plan)
    cluster = start_ray(address, num_cpus)
    note = dashboard_note(cluster)
    if note:
        print(note, flush=True)
    check_resources(experiment, cluster)
    gpus = cluster.total_gpus > 0
    driver_run = uuid.uuid4().hex  # one id per driver run: a deterministic failure is not retried within it
    mode = ("log" if log else "live") if live else "quiet"
    if mode != "quiet":  # the view shows each failure's line and its log, and the progress Tune would print
        os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0, Tune's output then prints nothing
    # Keeping one checkpoint (CHECKPOINTS_KEPT) makes Tune save its experiment state at every trial
    # checkpoint, and it warns each time several come within 5 s (ray/tune/execution/experiment_state.py):
    # expected here, not a problem; Tune's slow-sync warning stays on.
    os.environ.setdefault(SYNC_WARNING_ENV, "0")
    progress = SweepProgress(
        total=len(configs), done=len(plan.done), mode=mode, keys=to_run, on_finished=on_finished,
        todo=Counter(trial_group(configs[key]) for key in to_run),
        durations=[(trial_group(configs[p.key]), seconds) for p in plan.done.values()
                   for seconds in finished_durations(run_dir, [p])],
    )
    outcome = SweepResults(run_dir, plan, ran=to_run)
    with progress:
        for batch in plan.batches_to_restore:
            print(f"resuming {run_dir / batch} (its finished trials are kept; errored and unfinished ones continue)",
                  flush=True)
            # The restored RunConfig brings back its ViewRelay, which reports to this driver's view.
            tuner = tune.Tuner.restore(str(run_dir / batch), resume_errored=True,
                                       trainable=make_trainable(gpus, run_dir / batch, driver_run, wanted=configs))
            outcome.grids.append(tuner.fit())
        if new_batch is not None:
            write_batch_record(run_dir, new_batch, {key: trial_folder_name(configs[key]) for key in plan.new})
            tuner = tune.Tuner(
                make_trainable(gpus, run_dir / new_batch, driver_run, wanted=configs),
                param_space={"trial": tune.grid_search([configs[key] for key in plan.new])},
                # Workers run trial after trial (a fresh process costs ~5 s of start and imports per
                # trial); each trial hands its freed memory back (sweep.trainable), so a worker holds
                # its live set (~1 GB for e5-small), not the peak of the largest trial it ran.
                tune_config=tune.TuneConfig(trial_name_creator=_trial_name, trial_dirname_creator=_trial_name,
                                            reuse_actors=True),
                run_config=tune.RunConfig(
                    name=new_batch,
                    storage_path=str(run_dir),
                    failure_config=tune.FailureConfig(max_failures=MAX_FAILURES),
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT),
                    callbacks=[ViewRelay()],
                    verbose=0 if live else 1,
                ),
            )
            outcome.grids.append(tuner.fit())
    return outcome


def trial_folder_name(config: Mapping[str, Any]) -> str:
    """A trial's folder (and Tune trial name): its axes for the reader, its content key to be unique."""
    parts = [str(config["model"]).split("/")[-1], config["task"], config["realign"], config["pairs"],
             str(config["corpus"]).replace("/", "-"), f"s{config['seed']}", config["key"]]
    return "_".join(map(str, parts))


def _trial_name(trial: Any) -> str:
    return trial_folder_name(trial.config["trial"])
