"""A rehearsal of a multi-node GPU cluster on this machine: three local Ray nodes that declare one
GPU each (`ray.cluster_utils.Cluster`), joined the way `--address` joins a real cluster (the
engine's `start_ray`: the project shipped as the job's working_dir). The GPUs are only resources:
Ray sets CUDA_VISIBLE_DEVICES, torch sees no CUDA and the trials run on CPU. What is rehearsed is
the resource logic: fractional GPU shares packed on one GPU, a node lost mid-sweep, and the shared
cache: each entry published once for the whole cluster (first writer wins).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import shutil
import struct
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable

import pytest

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

import torch  # noqa: E402
from ray import tune  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from sweep.experiment import build_experiment  # noqa: E402
from sweep.ledger import FINAL_FILE  # noqa: E402
from sweep.runner import CACHE_FOLDER, run_sweep, start_ray  # noqa: E402
from sweep.trainable import STARTS_FILE  # noqa: E402
from trainables.cache import CLAIM_SUFFIX  # noqa: E402

NODES = 3
NODE_CPUS = 1
GPU_SHARE = 0.25  # distilmBERT's share in the paper's grid: four trials to a GPU
SWEEP_TIMEOUT_S = 420  # a loaded 2-core machine; the watch fails the test past it
POLL_S = 0.1
CACHE_KINDS = ("pairs", "features", "alignment")
DRIVER_NODE_TIMEOUT_S = 60


def toy_settings(data: Path, **changes: Any) -> dict[str, Any]:
    settings = dict(data_dir=str(data), langs=["es"], epochs=2, batch_size=16, micro_batch_size=16,
                    learning_rate=1e-3, train_subset=32, test_subset=16, parallel_subset=60, align_pairs=30,
                    num_threads=1)
    return {**settings, **changes}


# --- the cluster ---------------------------------------------------------------------------------


class RehearsalCluster:
    """The local cluster and what the tests need to know about its nodes: a label per node,
    found from a process id through its raylet (every worker process is a raylet's child)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        nodes = cluster.list_all_nodes()  # the head first
        self.labels = {node.node_id: "head" if i == 0 else f"node-{i}" for i, node in enumerate(nodes)}
        self.nodes = {self.labels[node.node_id]: node for node in nodes}
        self.raylets = {self.raylet_pid(node): self.labels[node.node_id] for node in nodes}

    @staticmethod
    def raylet_pid(node: Any) -> int:
        return node.all_processes[ray._private.ray_constants.PROCESS_TYPE_RAYLET][0].process.pid

    def node_of(self, pid: int) -> str | None:
        """The label of the node whose raylet started process `pid` (None once it has exited)."""
        try:
            ancestors = [parent.pid for parent in psutil.Process(pid).parents()]
        except psutil.Error:
            return None
        return next((self.raylets[p] for p in ancestors if p in self.raylets), None)

    def removable(self) -> set[str]:
        """Nodes that can go without taking the cluster or this driver with them."""
        driver = ray.get_runtime_context().get_node_id()
        alive = {self.labels[node.node_id] for node in self.cluster.list_all_nodes()}
        return {label for label in alive if label != "head" and self.nodes[label].node_id != driver}

    def remove(self, label: str) -> None:
        self.cluster.remove_node(self.nodes[label])


@pytest.fixture(scope="module")
def gpu_cluster():
    """Three nodes of NODE_CPUS CPUs and one declared GPU each, joined by the engine as it joins
    `--address`; shut down (the driver, then every node) whatever happens."""
    assert not ray.is_initialized(), "a Ray connection is left over from another test module"
    # The head writes its address into the Ray temp folder, where a plain `ray.init()` of any
    # process on this machine would find and join it: a private folder keeps it to this test.
    private = tempfile.mkdtemp(prefix="rayc-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    saved = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = private
    cluster = None
    try:
        cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=NODE_CPUS, num_gpus=1,
                                                                   include_dashboard=False))
        for _ in range(NODES - 1):
            cluster.add_node(num_cpus=NODE_CPUS, num_gpus=1)
        cluster.wait_for_nodes()
        info = start_ray(cluster.address)  # what run_sweep(address=...) does first
        yield RehearsalCluster(cluster), info
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
        if saved is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = saved
        shutil.rmtree(private, ignore_errors=True)


# --- watching a sweep ----------------------------------------------------------------------------


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Tune's result.json rows; the line Tune is writing may be incomplete: skipped."""
    rows = []
    try:
        text = path.read_text()
    except OSError:
        return rows
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return rows


class SweepWatch(threading.Thread):
    """Polls a running sweep from beside the driver: each trial's rows, the nodes its worker
    processes ran on (in order), the cluster's free GPU; `act(watch)` after every poll.

    `rows_seen(name)` keeps every row read at any poll: Tune may rewrite a trial's result.json
    without rows it had. When a trial restores from a checkpoint, its JSON logger copies the
    storage's result.json over the driver's copy (`LoggerCallback._restore_from_remote`) while
    the driver's background sync may be rewriting that storage file; seen once on a loaded
    machine: result.json then held only the second start's rows, progress.csv all of them."""

    def __init__(self, run_dir: Path, cluster: RehearsalCluster,
                 act: Callable[["SweepWatch"], None] | None = None) -> None:
        super().__init__(daemon=True)
        self.run_dir, self.cluster, self.act = run_dir, cluster, act
        self.rows: dict[str, list[dict[str, Any]]] = {}
        self.seen: dict[str, dict[tuple[int, int], dict[str, Any]]] = defaultdict(dict)  # (pid, iteration)
        self.nodes: dict[str, list[str]] = defaultdict(list)
        self.free_gpus: list[float] = []
        self.error: BaseException | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.poll()
                if self.act is not None:
                    self.act(self)
                self.stop.wait(POLL_S)
        except BaseException as error:  # re-raised by the test, in its thread
            self.error = error

    def poll(self) -> None:
        for result in self.run_dir.glob("run-*/*/result.json"):
            rows = read_rows(result)
            if not rows:
                continue
            name = result.parent.name
            self.rows[name] = rows
            self.seen[name].update({(row["pid"], row["training_iteration"]): row for row in rows})
            node = self.cluster.node_of(rows[-1]["pid"])
            if node is not None and (not self.nodes[name] or self.nodes[name][-1] != node):
                self.nodes[name].append(node)
        self.free_gpus.append(float(ray.available_resources().get("GPU", 0.0)))

    def rows_seen(self, name: str) -> list[dict[str, Any]]:
        """Every row of trial `name` read at any poll or now, in Tune's iteration order."""
        for row in read_rows(next(self.run_dir.glob(f"run-*/{name}/result.json"))):
            self.seen[name][row["pid"], row["training_iteration"]] = row
        return sorted(self.seen[name].values(), key=lambda row: row["training_iteration"])

    def __enter__(self) -> "SweepWatch":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.join(timeout=10)
        if self.error is not None and exc[0] is None:
            raise self.error


class RenameCounter:
    """How many times each cache entry was published in the watched folders (inotify IN_CREATE /
    IN_MOVED_TO of its final name). The cache writes an entry to a temporary sibling and links it
    into place, first writer wins (trainables.cache.atomic_save): one event is one publication of
    that entry, on any node of this machine; temporary names are not counted there, but in
    `saves`: one temporary of an entry is one computation of it (saved once, then published or
    discarded). Claim files (`<entry>.claim`, which say who computes) are neither. The kernel
    queues the events until `counts` reads them."""

    IN_CREATE = 0x100
    IN_MOVED_TO = 0x80
    EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then the name

    def __init__(self, folders: list[Path]) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        assert self.fd >= 0, f"inotify_init1: {os.strerror(ctypes.get_errno())}"
        self.folders: dict[int, str] = {}
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)  # the cache makes them with exist_ok too
            watch = libc.inotify_add_watch(self.fd, str(folder).encode(), self.IN_MOVED_TO | self.IN_CREATE)
            assert watch >= 0, f"inotify_add_watch {folder}: {os.strerror(ctypes.get_errno())}"
            self.folders[watch] = folder.name
        self.seen: Counter[str] = Counter()
        self.saves: Counter[str] = Counter()

    def counts(self) -> Counter[str]:
        while True:
            try:
                data = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return self.seen
            offset = 0
            while offset < len(data):
                watch, _mask, _cookie, length = self.EVENT.unpack_from(data, offset)
                start = offset + self.EVENT.size
                name = data[start:start + length].rstrip(b"\0").decode()
                if name.endswith(CLAIM_SUFFIX):
                    pass
                elif ".tmp-" in name:  # a temporary sibling `.{stem}.tmp-{pid}-{hex}{suffix}`, not a publication
                    stem, _, rest = name[1:].partition(".tmp-")
                    self.saves[f"{self.folders[watch]}/{stem}{Path(rest).suffix}"] += 1
                else:
                    self.seen[f"{self.folders[watch]}/{name}"] += 1
                offset = start + length

    def close(self) -> None:
        os.close(self.fd)


def sweep_experiment(name: str, model: Path, cpu: float, gpu: float, grids: list[dict[str, Any]],
                     settings: dict[str, Any]) -> Any:
    base = dict(model=["toy-bert"], task=["udpos"], realign=["none"], pairs=["dico"], corpus=["toy"])
    return build_experiment(dict(name=name, models={"toy-bert": dict(source=str(model), cpu=cpu, gpu=gpu)},
                                 settings=settings, grids=[{**base, **grid} for grid in grids]))


def tune_trials(run_dir: Path) -> list[Any]:
    (batch,) = sorted(run_dir.glob("run-*"))
    return tune.ExperimentAnalysis(str(batch)).trials


# --- the tests -----------------------------------------------------------------------------------


def test_declared_gpu_without_cuda_runs_trials_on_cpu(gpu_cluster):
    cluster, info = gpu_cluster
    # The driver machine has no GPU, the cluster declares three: trials will ask for their share.
    assert (info.total_gpus, info.max_node_gpus, info.max_node_cpus) == (NODES, 1.0, NODE_CPUS)

    @ray.remote(num_cpus=0, num_gpus=GPU_SHARE)
    def device_of_a_trial_worker() -> tuple[str | None, list, bool, str]:
        import torch

        from trainables.runtime import resolve_device  # the job's shipped working_dir
        from trainables.settings import make_settings

        device = resolve_device(make_settings({}))  # device="auto", the default
        return os.environ.get("CUDA_VISIBLE_DEVICES"), ray.get_gpu_ids(), torch.cuda.is_available(), device.type

    visible, gpu_ids, cuda, device = ray.get(device_of_a_trial_worker.remote(), timeout=SWEEP_TIMEOUT_S)
    assert len(gpu_ids) == 1 and visible == str(gpu_ids[0])  # Ray handed out its declared GPU
    if not torch.cuda.is_available():  # a machine with no real GPU, as in CI
        assert (cuda, device) == (False, "cpu")


def test_four_quarter_gpu_trials_share_one_gpu_at_once(gpu_cluster, tmp_path, toy_assets):
    cluster, _ = gpu_cluster
    data, model = toy_assets
    from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group

    # Hold every GPU but one: the four trials can then only run at once by sharing that one.
    held = placement_group([{"GPU": 1.0}] * (NODES - 1), strategy="STRICT_SPREAD")
    try:
        ray.get(held.ready(), timeout=DRIVER_NODE_TIMEOUT_S)
        held_nodes = {cluster.labels[n] for n in placement_group_table(held)["bundles_to_node_id"].values()}
        (free_node,) = set(cluster.nodes) - held_nodes
        experiment = sweep_experiment("pack", model, cpu=GPU_SHARE, gpu=GPU_SHARE,
                                      grids=[dict(seed=[0, 1, 2, 3])], settings=toy_settings(data))
        storage = tmp_path / "results"
        with SweepWatch(storage / "pack", cluster) as watch:
            results = run_sweep(experiment, storage, "pack", address=cluster.cluster.address, live=True, log=True)
    finally:
        remove_placement_group(held)
    assert len(results) == 4 and not results.errors

    trials = tune_trials(storage / "pack")
    assert [t.placement_group_factory.required_resources for t in trials] == [{"CPU": GPU_SHARE, "GPU": GPU_SHARE}] * 4
    # Tune's own times: from the trial's start (its resources granted) to its last result
    spans = sorted((t.run_metadata.start_time, t.run_metadata.last_result_time) for t in trials)
    latest_start, earliest_end = max(s for s, _ in spans), min(e for _, e in spans)
    assert latest_start < earliest_end, f"the four trials did not all run at once: {spans}"
    assert all(nodes == [free_node] for nodes in watch.nodes.values()) and len(watch.nodes) == 4, (
        f"expected every trial on {free_node}: {dict(watch.nodes)}")
    assert min(watch.free_gpus) == 0.0  # four shares of 0.25 filled the free GPU
    print(f"overlap {earliest_end - latest_start:.1f} s of spans {[round(e - s, 1) for s, e in spans]}")


def test_node_lost_mid_sweep_loses_no_trial_and_cache_entries_are_published_once(gpu_cluster, tmp_path, toy_assets):
    """One trial per node (a whole CPU each): a short trial finishes, then the node of a long
    trial that has checkpointed is removed; that trial continues on the freed node from its
    checkpoint. The three trials loaded the same shared inputs at once, on three nodes."""
    cluster, _ = gpu_cluster
    data, model = toy_assets
    # Time to remove a node between a long trial's first checkpoint and its end, after the short
    # trial finished: the long trials' fine-tuning must outlast the skew between the trials' starts
    # (seconds: workers start and wait for the shared cache at different moments). 12 epochs of 64
    # examples took 2 s once, as long as that skew, and the sweep ended before a node was removed.
    long_epochs = 40
    experiment = sweep_experiment("lose-a-node", model, cpu=NODE_CPUS, gpu=0.5,
                                  grids=[dict(seed=[0], settings=dict(epochs=1)),
                                         dict(seed=[1, 2], settings=dict(epochs=long_epochs))],
                                  settings=toy_settings(data, train_subset=128))
    storage = tmp_path / "results"
    run_dir = storage / "lose-a-node"
    renames = RenameCounter([storage / CACHE_FOLDER / kind for kind in CACHE_KINDS])
    removal: dict[str, Any] = {}
    started = time.monotonic()

    def remove_a_node_when_ready(watch: SweepWatch) -> None:
        if removal:
            return
        assert time.monotonic() - started < SWEEP_TIMEOUT_S, f"no node removed; trials seen: {dict(watch.nodes)}"
        epochs = {name: rows[-1]["config"]["trial"]["settings"]["epochs"] for name, rows in watch.rows.items()}
        done = {name for name in watch.rows if (watch.run_dir / "run-001" / name / FINAL_FILE).is_file()}
        if not any(epochs[name] == 1 for name in done):
            return
        removable = cluster.removable()
        for name, rows in watch.rows.items():
            checkpointed = [row["epoch"] for row in rows if row.get("checkpoint_dir_name")]
            node = watch.nodes[name][-1] if watch.nodes[name] else None
            if name not in done and checkpointed and node in removable:
                removal.update(trial=name, node=node, epoch=max(checkpointed), finals={
                    n: (watch.run_dir / "run-001" / n / FINAL_FILE).read_text() for n in done})
                cluster.remove(node)
                return

    try:
        with SweepWatch(run_dir, cluster, act=remove_a_node_when_ready) as watch:
            results = run_sweep(experiment, storage, "lose-a-node", address=cluster.cluster.address,
                                live=True, log=True)
        writes = renames.counts()
    finally:
        renames.close()
    assert removal, f"the sweep ended before a node could be removed: {dict(watch.nodes)}"
    assert len(results) == 3 and not results.errors, results.errors

    # (b) no trial lost: every one finished; the interrupted one resumed from its last checkpoint
    batch = run_dir / "run-001"
    finals = {path.parent.name: json.loads(path.read_text()) for path in batch.glob(f"*/{FINAL_FILE}")}
    assert len(finals) == 3 and all(final["phase"] == "done" for final in finals.values())
    assert [t.status for t in tune_trials(run_dir)] == ["TERMINATED"] * 3
    victim = removal["trial"]
    rows = watch.rows_seen(victim)
    # the first start's process (the second start, on another node, redoes the iterations after
    # the checkpoint it restores, so rows of both can share an iteration number)
    first_start = [row for row in rows if row["pid"] == rows[0]["pid"]]
    checkpointed = {row["epoch"] for row in first_start if row.get("checkpoint_dir_name")}
    last_checkpoint = max(checkpointed)
    assert last_checkpoint >= removal["epoch"] >= 1
    assert finals[victim]["trial_starts"] == 2 and finals[victim]["resumed_at"].startswith("finetune:")
    resumed_epoch = int(finals[victim]["resumed_at"].split(":")[1])
    # From a checkpoint of its first start, never from scratch: the last one, or the one before.
    # Tune logs a result (result.json) before it asks the trial's actor to `save`, and registers
    # the checkpoint only when that save returns (tune_controller `_process_trial_result`, then
    # `_process_trial_save`); a node lost in between leaves the trial on its previous checkpoint
    # (seen once on a loaded machine: checkpoint 2 in result.json, resumed from 1).
    assert resumed_epoch in checkpointed and resumed_epoch >= last_checkpoint - 1, (resumed_epoch, checkpointed)
    assert watch.nodes[victim][0] == removal["node"] and removal["node"] not in watch.nodes[victim][1:]
    assert len(watch.nodes[victim]) == 2, watch.nodes[victim]  # it finished elsewhere
    for name, final in finals.items():
        # a finished trial never starts again: its start count and final record stay as they were
        assert int((batch / name / STARTS_FILE).read_text()) == final["trial_starts"], name
        if name != victim:
            assert final["trial_starts"] == 1 and "resumed_at" not in final, name
    assert removal["finals"] and all((batch / n / FINAL_FILE).read_text() == text
                                     for n, text in removal["finals"].items())

    # (c) the three trials started on three nodes at once, and each shared entry was computed and
    # published once (trials that miss an entry at the same moment wait for the one that claimed it)
    assert len({nodes[0] for nodes in watch.nodes.values()}) == NODES, dict(watch.nodes)
    entries = {kind: sorted(p.name for p in (storage / CACHE_FOLDER / kind).iterdir()) for kind in CACHE_KINDS}
    assert len(entries["alignment"]) == 1  # one model, one pair sample: one pre-trained alignment
    assert len(entries["features"]) == 3  # English train and test, Spanish test
    assert entries["pairs"], entries
    assert writes == Counter({f"{kind}/{name}": 1 for kind, names in entries.items() for name in names}), writes
    assert renames.saves == writes, renames.saves
    print(f"removed {removal['node']} at epoch {removal['epoch']} of {victim}; nodes {dict(watch.nodes)}")
