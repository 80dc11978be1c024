"""Run an experiment with Ray Tune: start or join Ray, resume its unfinished trials, run its new
ones as one more batch (see sweep.ledger for the experiment folder), report.

The storage is whatever Tune takes (`RunConfig(storage_path=..., storage_filesystem=...)`): a
local or network path, or a URI pyarrow opens (s3://, gs://, ...), or a `sweep.ledger.Location`
on any pyarrow filesystem; the run folder, Tune's checkpoints and the trials' own records all
live there. Since Ray 2.7 Tune no longer syncs trial folders to the head node, so on a cluster
of several nodes a local path works only where every node sees the same folder
(`check_shared_storage`), and the shared cache, which trials read as plain files, needs such a
folder too (`cache_folder`).
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

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
    Location,
    Plan,
    Where,
    batch_names,
    finished_durations,
    location,
    next_batch_name,
    plan_trials,
    read_marker,
    remove_tree,
    sees_marker,
    write_batch_record,
    write_current,
    write_json,
)
from sweep.trainable import make_trainable
from trainables.data import CACHE_DIR_ENV
from trainables.runtime import ALLOCATOR_ENV

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MAX_FAILURES = 2  # retries of a failed trial from its last checkpoint
CHECKPOINTS_KEPT = 1  # the trial state holds model + optimizer: keep only the newest
CACHE_FOLDER = "cache"  # shared work (pairs, tokenised data, pre-trained alignment) under --storage
RUNTIME_ENV_EXCLUDES = [".git", ".venv", "results", "**/__pycache__", "*.pt", "*.safetensors"]
SYNC_WARNING_ENV = "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S"
ADDRESS_TIMEOUT_S = 5.0  # a Ray head answers at once; ray.init itself would wait forever
DEFAULT_RAY_PORT = 6379
# Filesystem types (/proc/mounts) that other machines can mount too: a folder on one of them may be
# shared by every node of a cluster (Tune's "NFS mounted to all machines" case).
NETWORK_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "glusterfs", "fuse.glusterfs", "ceph",
    "fuse.ceph", "fuse.ceph-fuse", "beegfs", "wekafs", "panfs", "ocfs2", "gfs2", "afs", "fuse.s3fs",
    "fuse.gcsfuse", "fuse.juicefs", "fuse.mountpoint-s3", "fuse.sshfs", "fuse.rclone",
})
MOUNTS_FILE = Path("/proc/mounts")
SHARED_CHECK_TIMEOUT_S = 120.0  # a node sets up the job's runtime environment before its first task


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


def default_cache_dir(storage: Where) -> str | None:
    """Where the shared cache goes when no trial's settings say: `<storage>/cache` for a local or
    network-mounted storage; for another filesystem (s3://...), `$SWEEP_CACHE_DIR` if set on the
    driver, else None: trials read the cache as plain files, which an object store is not."""
    root = location(storage)
    if root.local is not None:
        return str(root.local / CACHE_FOLDER)
    return os.environ.get(CACHE_DIR_ENV) or None


def cache_folder(settings: Mapping[str, Any], storage: Where) -> str:
    """A trial's cache folder: its `cache_dir` setting, else `default_cache_dir`; a one-line
    `ExperimentError` when there is none or it is not a POSIX path."""
    chosen = settings.get("cache_dir") or default_cache_dir(storage)
    if not chosen:
        raise ExperimentError(f"--storage {location(storage)}: the shared cache needs a folder every node can read "
                              "and write as files (e.g. an NFS mount): --set cache_dir=/mnt/shared/sweep-cache, "
                              f"or the environment variable {CACHE_DIR_ENV}")
    if "://" in str(chosen):
        raise ExperimentError(f"cache_dir {chosen}: the shared cache is read as plain files: give a path every "
                              "node mounts (e.g. /mnt/shared/sweep-cache), not a URI")
    return str(chosen)


def trial_configs(experiment: Experiment, storage: Where) -> list[dict[str, Any]]:
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
        config["settings"]["cache_dir"] = cache_folder(config["settings"], storage)
        configs.append(config)
    return configs


@dataclass
class ClusterInfo:
    total_gpus: float
    max_node_gpus: float
    max_node_cpus: float
    dashboard_url: str | None
    nodes: list[dict[str, Any]] = field(default_factory=list)  # ray.nodes() of the alive nodes


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
            # log_to_driver=False as for a local Ray: the trials' output stays in their logs on
            # the nodes, and the driver's live view or plain log is not interleaved with it.
            context = ray.init(address=address, runtime_env={"working_dir": str(PROJECT_ROOT),
                                                             "excludes": RUNTIME_ENV_EXCLUDES,
                                                             "env_vars": dict(ALLOCATOR_ENV)},
                               log_to_driver=False)
        except ConnectionError as error:
            raise ExperimentError(f"--address {address}: {str(error).splitlines()[0]}") from None
    else:
        # The dashboard (ray[default], a dependency) serves on loopback only: a sweep's dashboard
        # can stop jobs and read their logs; other machines reach it through an SSH tunnel.
        # include_dashboard=None rather than True: a minimal Ray still runs, without a dashboard.
        # address="local": always a new Ray of our own; without it, ray.init joins the latest
        # cluster already running on this machine (another user's sweep, a test cluster).
        # ALLOCATOR_ENV: the workers' glibc reuses the large blocks a training step frees instead of
        # faulting fresh pages in (trainables.runtime.reuse_freed_memory); it changes no number.
        context = ray.init(address="local", num_cpus=num_cpus, include_dashboard=None,
                           dashboard_host="127.0.0.1", log_to_driver=False,
                           runtime_env={"env_vars": dict(ALLOCATOR_ENV)})
    alive = [n for n in ray.nodes() if n.get("Alive")]
    nodes = [n["Resources"] for n in alive]
    return ClusterInfo(
        total_gpus=float(ray.cluster_resources().get("GPU", 0)),
        max_node_gpus=max((float(n.get("GPU", 0)) for n in nodes), default=0.0),
        max_node_cpus=max((float(n.get("CPU", 0)) for n in nodes), default=0.0),
        dashboard_url=(getattr(context, "dashboard_url", None) or None) if context is not None else None,
        nodes=alive,
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


# --- storage every node shares -------------------------------------------------------------------


def mount_type(path: Path, mounts_file: Path = MOUNTS_FILE) -> str | None:
    """The type of the filesystem `path` is on: that of the longest mount point above it in
    /proc/mounts (None where that file cannot be read)."""
    try:
        lines = mounts_file.read_text().splitlines()
    except OSError:
        return None
    target = Path(path).resolve().as_posix()
    best, kind = "", None
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[1])  # "\040" is a space
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


def nodes_not_seeing(folder: Path, nodes: list[dict[str, Any]], timeout: float = SHARED_CHECK_TIMEOUT_S) -> list[str]:
    """The nodes (their addresses) that do not see a marker file the driver writes in `folder`:
    one task pinned to each node looks for it. Nodes of one host (a local test cluster) see it."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    folder.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    marker = folder / f".sweep-shared-check-{token}"
    marker.write_text(token)
    try:
        probe = ray.remote(num_cpus=0, max_retries=0)(sees_marker)
        asked = {f"{node.get('NodeManagerAddress', '?')} ({str(node['NodeID'])[:8]})": probe.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote(str(marker), token)
            for node in nodes}
        ready, _ = ray.wait(list(asked.values()), num_returns=len(asked), timeout=timeout)
        answered = set(ready)
        return [name for name, ref in asked.items() if ref not in answered or not ray.get(ref)]
    finally:
        marker.unlink(missing_ok=True)


def check_fastalign_nodes(configs: Iterable[Mapping[str, Any]], nodes: list[dict[str, Any]],
                          timeout: float | None = None) -> None:
    """Refuse to start when a trial reads FastAlign pairs and a node of the cluster cannot run
    fast_align (`sweep.preflight.fastalign_node_problems`, one line a node), before any trial
    is scheduled on it."""
    from trainables.pairs import FASTALIGN_NUMPY
    from trainables.settings import make_settings

    # the settings a trial will run with (its model's preset applied), as preflight reads them
    backends = {make_settings(config.get("settings") or {}, model=config.get("model", "")).fastalign_backend
                for config in configs if config["pairs"] == "fastalign"} - {FASTALIGN_NUMPY}  # numpy needs nothing
    if not backends:
        return
    from sweep.preflight import NODE_CHECK_TIMEOUT_S, fastalign_node_problems

    problems = fastalign_node_problems(nodes, timeout=NODE_CHECK_TIMEOUT_S if timeout is None else timeout,
                                       backends=backends)
    if problems:
        raise ExperimentError(f"pair source 'fastalign' cannot run on {len(problems)} of the cluster's "
                              f"{len(nodes)} nodes: " + "; ".join(problems))


def check_shared_storage(folders: Mapping[str, Path], nodes: list[dict[str, Any]],
                         mounts_file: Path = MOUNTS_FILE) -> None:
    """On a cluster of several nodes, refuse a local folder (the run folder, the shared cache)
    that not every node sees: Tune (since 2.7) keeps checkpoints only in the storage, so a trial
    moved to another node would not find its checkpoint, and the cache would be one per node.
    A folder on a network filesystem passes at once; another passes if every node sees a marker
    file the driver writes there (nodes on one host do). `folders`: what names each, for the
    message ("--storage ...", "cache_dir ...")."""
    if len(nodes) < 2:
        return
    for label, folder in folders.items():
        kind = mount_type(folder, mounts_file)
        if kind in NETWORK_FILESYSTEMS or (kind or "").startswith("nfs"):
            continue
        missing = nodes_not_seeing(folder, nodes)
        if missing:
            fix = ("use an NFS path every node mounts, or s3:// or gs:// (any URI pyarrow opens)"
                   if label.startswith("--storage") else
                   "set cache_dir to a folder every node mounts (NFS), e.g. --set cache_dir=/mnt/nfs/sweep-cache")
            raise ExperimentError(f"{label}: {folder} is on this machine's {kind or 'local'} filesystem and "
                                  f"{len(missing)} of the cluster's {len(nodes)} nodes do not see it "
                                  f"({', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}): {fix}")


def tune_storage(folder: Path | Location) -> dict[str, Any]:
    """`RunConfig`'s storage arguments for a batch's parent folder: a local path as it is, another
    filesystem as its pyarrow filesystem and the path on it (Tune's `storage_filesystem`)."""
    if isinstance(folder, Path):
        return {"storage_path": str(folder)}
    return {"storage_path": folder.path, "storage_filesystem": folder.fs}


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


def prepare_run_folder(run_dir: Where, experiment: Experiment, fresh: bool) -> bool:
    """Check (and with `fresh`, delete) the experiment folder; True when it holds batches already.

    `--fresh` deletes only a folder whose marker says it is a run of this experiment: a wrong
    `--name` or `--storage` must never cost another run's (or anything else's) files."""
    run_dir = location(run_dir)
    marker = read_marker(run_dir)
    occupied = run_dir.exists() and (not run_dir.is_dir() or bool(run_dir.iterdir()))
    if occupied and marker is None:
        raise ExperimentError(f"{run_dir} exists and is not a run folder of this engine (no {RUN_MARKER}); "
                              f"nothing was {'deleted' if fresh else 'changed'}: choose another --name or --storage")
    if marker is not None and (other := other_experiment(marker, experiment)):
        raise ExperimentError(f"{run_dir} is a run of experiment {other}; nothing was "
                              f"{'deleted' if fresh else 'changed'}: choose another --name")
    if fresh and run_dir.exists():
        remove_tree(run_dir)
    elif marker is not None and run_dir.glob(TUNE_STATE_GLOB):
        raise ExperimentError(f"{run_dir} holds one Tune run of an earlier version of this engine (no batches); "
                              f"nothing was changed: `python -m analysis {run_dir}` reads it; run this experiment "
                              "with another --name (or --fresh to discard it)")
    run_dir.mkdir()
    if read_marker(run_dir) is None:
        write_json(run_dir / RUN_MARKER, run_marker(experiment))
    return bool(batch_names(run_dir))


@dataclass
class SweepResults:
    """One driver run of an experiment: the plan it followed (done, to resume, new) and Tune's
    results of the trials it ran (iterating gives those `tune.Result`s)."""

    run_dir: Path | Location  # a Location where the storage is not a local or network-mounted path
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
        """Trials of the experiment finished, in this run or before it. A trial this run ran counts
        once its last report is the trial's final one (phase "done"): a trial stopped by an
        interrupt ends without an error in Tune's TERMINATED state, yet it is not finished."""
        return len(self.plan.done) + sum(1 for r in self.results if not r.error and _reached_done(r))

    @property
    def unfinished(self) -> int:
        """Trials this run started or planned that neither finished nor failed (e.g. interrupted):
        the same command resumes them."""
        return sum(1 for r in self.results if not r.error and not _reached_done(r))

    def get_dataframe(self) -> Any:
        import pandas as pd

        frames = [grid.get_dataframe() for grid in self.grids]
        frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        return frame[frame["config/trial/key"].isin(self.ran)].reset_index(drop=True) if len(frame) else frame


def _reached_done(result: Any) -> bool:
    return (result.metrics or {}).get("phase") == "done"


def result_key(result: Any) -> str | None:
    return (result.config or {}).get("trial", {}).get("key")


def run_sweep(
    experiment: Experiment,
    storage: Where,
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
    root = location(storage)  # the trials write their records through its filesystem too (sweep.trainable)
    run_dir: Path | Location = root.local / name if root.local is not None else root / name
    configs = {config["key"]: config for config in trial_configs(experiment, root)}  # a cache error: before any write
    prepare_run_folder(run_dir, experiment, fresh)
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
    shared = {f"--storage {root}": run_dir} if isinstance(run_dir, Path) else {}
    shared.update({f"cache_dir {folder}": Path(folder)
                   for folder in sorted({c["settings"]["cache_dir"] for c in configs.values()})})
    check_shared_storage(shared, cluster.nodes)
    if address is not None:  # the trials run on the cluster's nodes: the driver's check saw this machine only
        check_fastalign_nodes(configs.values(), cluster.nodes)
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
            saved = tune_storage(run_dir / batch)  # the batch's own folder, where Tune saved its state
            tuner = tune.Tuner.restore(saved["storage_path"], storage_filesystem=saved.get("storage_filesystem"),
                                       resume_errored=True,
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
                    **tune_storage(run_dir),
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
