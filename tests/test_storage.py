"""Where a sweep keeps its run: any storage Ray Tune takes (a local or network path, `file://`,
a pyarrow filesystem URI), its records read and written through pyarrow.fs, and the refusal of
a local folder that not every node of a cluster sees."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow.fs as pafs
import pytest

ray = pytest.importorskip("ray")

from sweep import runner  # noqa: E402
from sweep.cli import check_storage  # noqa: E402
from sweep.experiment import ExperimentError, build_experiment  # noqa: E402
from sweep.ledger import (  # noqa: E402
    FINAL_FILE,
    RUN_MARKER,
    SKIPPED_FILE,
    Location,
    finished_durations,
    location,
    next_batch_name,
    plan_trials,
    read_json,
    read_marker,
    sees_marker,
    write_batch_record,
    write_current,
    write_json,
)
from sweep.trainable import FAILURE_FILE, STARTS_FILE, TUNE_ERROR_FILE, count_start, failure_reason  # noqa: E402
from trainables.data import CACHE_DIR_ENV  # noqa: E402


def in_memory(path: str = "bucket/results") -> Location:
    """A folder on pyarrow's in-memory filesystem, standing in for an object store."""
    return Location(pafs._MockFileSystem(), path, f"mock://{path}")


def all_files(where: Location) -> list[str]:
    infos = where.fs.get_file_info(pafs.FileSelector(where.path, recursive=True, allow_not_found=True))
    return sorted(info.path for info in infos if info.type == pafs.FileType.File)


def test_location_takes_paths_and_uris(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    relative = location("results")
    assert relative.is_local and relative.local == tmp_path / "results" and str(relative) == str(tmp_path / "results")
    uri = location(f"file://{tmp_path}/results")
    assert uri.local == tmp_path / "results" and uri == relative  # file:// is the local path
    remote = location("mock://bucket/results")
    assert not remote.is_local and remote.local is None
    child = remote / "exp" / RUN_MARKER
    assert str(child) == "mock://bucket/results/exp/sweep-run.json" and child.name == RUN_MARKER
    assert str(child.parent) == "mock://bucket/results/exp" and child.parent.path.endswith("results/exp")
    with pytest.raises(TypeError, match="not a local path"):
        Path(remote)  # never a relative folder named "mock:" beside the working directory
    with pytest.raises(ValueError, match="nosuch://x: not a storage pyarrow can open"):
        location("nosuch://x")


def test_the_ledger_reads_and_writes_through_a_pyarrow_filesystem():
    run = in_memory() / "exp"
    write_batch_record(run, "run-001", {"a": "t_a", "b": "t_b", "old": "t_old"})
    write_batch_record(run, "run-002", {"c": "t_c"})  # killed before Tune saved its state
    (run / "run-001" / "experiment_state-2026-12-01_10-00-00.json").write_text("{}")
    write_json(run / "run-001" / "t_a" / FINAL_FILE, {"phase": "done", "trial_starts": 1, "seconds_this_start": 7})
    write_json(run / "run-001" / "t_b" / SKIPPED_FILE, {})
    plan = plan_trials(run, ["a", "b", "c", "d"])
    assert sorted(plan.done) == ["a"] and plan.resume == {} and plan.new == ["b", "c", "d"] and plan.stale == 1
    assert plan.done["a"].path(run) == run / "run-001" / "t_a"
    assert finished_durations(run, plan.done.values()) == [7.0]
    assert next_batch_name(run) == "run-003"
    write_json(run / "run-001" / "t_b" / SKIPPED_FILE, {"again": True})  # replaced in place
    assert read_json(run / "run-001" / "t_b" / SKIPPED_FILE) == {"again": True}
    (run / "run-001" / "t_b" / SKIPPED_FILE).unlink()
    assert plan_trials(run, ["b"]).resume == {"b": plan_trials(run, ["b"]).resume["b"]}  # restorable now
    assert read_marker(run) is None
    write_current(run, {"experiment": "x"}, {"a": "run-001"})
    assert read_marker(run) == {"experiment": "x", "current": {"a": "run-001"}}
    assert read_json(run / "absent.json") is None
    assert not [name for name in all_files(run) if ".tmp-" in name]  # staged writes were moved into place
    assert plan_trials(in_memory() / "nothing", ["a"]).new == ["a"]


def tiny_experiment(**settings):
    return build_experiment(dict(
        name="exp", settings=settings,
        grids=[dict(model=["xlm-roberta-base"], task=["udpos"], realign=["none"], pairs=["dico"], corpus=["opus100"],
                    seed=[0, 1])],
    ))


def test_prepare_run_folder_on_a_uri_storage():
    root = in_memory()
    experiment = tiny_experiment()
    assert runner.prepare_run_folder(root / "exp", experiment, fresh=False) is False
    assert read_marker(root / "exp")["experiment"] == "exp"
    write_batch_record(root / "exp", "run-001", {"a": "t_a"})
    assert runner.prepare_run_folder(root / "exp", experiment, fresh=False) is True
    assert runner.prepare_run_folder(root / "exp", experiment, fresh=True) is False  # its own run: started over
    assert all_files(root / "exp") == [(root / "exp" / RUN_MARKER).path]
    (root / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(ExperimentError, match="is not a run folder of this engine"):
        runner.prepare_run_folder(root / "foreign", experiment, fresh=True)
    assert (root / "foreign" / "notes.txt").read_text() == "mine"


class FakeTuner:
    """Records what the runner hands Tune, runs nothing."""

    made: list[dict] = []

    def __init__(self, trainable, **kwargs) -> None:
        FakeTuner.made.append(kwargs)

    def fit(self) -> list:
        return []


def test_a_uri_storage_is_handed_to_tune_as_its_filesystem(monkeypatch, tmp_path):
    root = in_memory()
    monkeypatch.delenv(CACHE_DIR_ENV, raising=False)
    with pytest.raises(ExperimentError, match=r"mock://bucket/results: the shared cache needs a folder .*cache_dir="):
        runner.run_sweep(tiny_experiment(), root, "exp", live=False)
    assert all_files(root) == []  # refused before anything was written

    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "shared-cache"))
    monkeypatch.setattr(runner, "start_ray", lambda address, num_cpus: runner.ClusterInfo(0, 0, 2, None, [{}]))
    monkeypatch.setattr(runner.tune, "Tuner", FakeTuner)
    FakeTuner.made.clear()
    runner.run_sweep(tiny_experiment(), root, "exp", live=False)
    (made,) = FakeTuner.made
    run_config = made["run_config"]
    assert run_config.storage_filesystem is root.fs and run_config.storage_path == (root / "exp").path
    configs = made["param_space"]["trial"]["grid_search"]
    assert {c["settings"]["cache_dir"] for c in configs} == {str(tmp_path / "shared-cache")}
    assert read_json(root / "exp" / "run-001" / "sweep-batch.json")["trials"].keys() == {c["key"] for c in configs}
    with pytest.raises(ExperimentError, match="cache_dir s3://b/c: .* not a URI"):
        runner.trial_configs(tiny_experiment(cache_dir="s3://b/c"), root)


def test_an_s3_storage_passes_the_checks_before_the_sweep(monkeypatch):
    # Built with its region and anonymous: nothing here asks the network (pyarrow's from_uri would
    # look the bucket's region up). The storage is accepted; the next check, the shared cache, speaks.
    s3 = Location(pafs.S3FileSystem(region="us-east-1", anonymous=True, connect_timeout=1, request_timeout=1),
                  "bucket/x", "s3://bucket/x")
    monkeypatch.delenv(CACHE_DIR_ENV, raising=False)
    with pytest.raises(ExperimentError) as raised:
        runner.run_sweep(tiny_experiment(), s3, "exp", live=False)
    assert str(raised.value).startswith("--storage s3://bucket/x: the shared cache needs a folder")
    assert "records" not in str(raised.value) and "not yet open" not in str(raised.value)
    assert runner.default_cache_dir(s3) is None and runner.tune_storage(s3 / "exp") == {
        "storage_path": "bucket/x/exp", "storage_filesystem": s3.fs}


def test_trial_records_go_through_the_storage_filesystem():
    trial = in_memory() / "exp" / "run-001" / "t"
    assert [count_start(trial) for _ in range(3)] == [1, 2, 3]
    assert (trial / STARTS_FILE).read_text() == "3"
    assert failure_reason(trial) == "failed (no error recorded)"
    (trial / TUNE_ERROR_FILE).write_text("Failure # 1\nTraceback ...\nRuntimeError: worker died\n")
    assert failure_reason(trial) == "RuntimeError: worker died"  # Tune's log, read on the storage
    write_json(trial / FAILURE_FILE, {"reason": "ValueError: x.tsv:3: tag 'B-FOO'", "deterministic": True})
    assert failure_reason(trial, RuntimeError("other")) == "ValueError: x.tsv:3: tag 'B-FOO'"
    assert not [name for name in all_files(trial) if ".tmp-" in name]


def fsspec_folder(root: Path) -> Location:
    """A folder on a filesystem Tune takes but our code cannot treat as a local path: fsspec's
    directory filesystem behind pyarrow's `PyFileSystem`, backed by `root` (so every process of
    a local Ray sees the same files, as every node sees an object store)."""
    from fsspec.implementations.dirfs import DirFileSystem
    from fsspec.implementations.local import LocalFileSystem

    fs = pafs.PyFileSystem(pafs.FSSpecHandler(DirFileSystem(path=str(root), fs=LocalFileSystem())))
    return Location(fs, "results", "fsspec-dir://results")


def test_a_sweep_on_a_non_local_filesystem_keeps_its_records_there(tmp_path, toy_assets, capsys):
    data, model = toy_assets
    (tmp_path / "store").mkdir()
    storage = fsspec_folder(tmp_path / "store")
    assert storage.local is None and not isinstance(storage.fs, pafs.LocalFileSystem)
    experiment = build_experiment(dict(
        name="exp", models={"toy-bert": dict(source=str(model), cpu=1, gpu=0.5)},
        settings=dict(data_dir=str(data), cache_dir=str(tmp_path / "cache"), langs=["es"], epochs=1, batch_size=16,
                      micro_batch_size=16, learning_rate=1e-3, train_subset=32, test_subset=16, parallel_subset=60,
                      align_pairs=30, num_threads=1),
        grids=[dict(model=["toy-bert"], task=["udpos"], realign=["none"], pairs=["dico"], corpus=["toy"], seed=[0])],
    )).keeping_models()
    (key,) = experiment.keys().values()
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        results = runner.run_sweep(experiment, storage, "exp", live=True, log=True)
        assert results.errors == [] and results.finished == 1 and len(results) == 1
        (placement,) = plan_trials(storage / "exp", [key]).done.values()  # the ledger reads the records back
        trial = placement.path(storage / "exp")
        assert isinstance(trial, Location) and trial.fs is storage.fs
        final = read_json(trial / FINAL_FILE)
        assert final["phase"] == "done" and final["trial_starts"] == 1 and 0 <= final["score"]["en"] <= 1
        assert (trial / STARTS_FILE).read_text() == "1" and not (trial / FAILURE_FILE).exists()
        assert (trial / "model" / "config.json").is_file()  # --keep-models: uploaded to the storage
        assert finished_durations(storage / "exp", [placement]) == [final["seconds_this_start"]]
        files = all_files(storage / "exp")
        assert (trial / FINAL_FILE).path in files and not [name for name in files if ".tmp-" in name]
        assert (tmp_path / "store" / trial.path / FINAL_FILE).is_file()  # where this filesystem keeps it

        capsys.readouterr()
        again = runner.run_sweep(experiment, storage, "exp", live=True, log=True)
        assert "exp: 1 trials: 1 done, 0 to resume, 0 new" in capsys.readouterr().out
        assert len(again) == 0 and again.grids == [] and again.finished == 1  # a rerun runs nothing
        assert (trial / STARTS_FILE).read_text() == "1"
    finally:
        ray.shutdown()


def test_check_storage_takes_file_uris_and_names_a_bad_one(tmp_path):
    made = check_storage(f"file://{tmp_path}/results")
    assert made == tmp_path / "results" and made.is_dir()  # a local path, as before
    assert check_storage(str(tmp_path / "plain")) == tmp_path / "plain"
    remote = check_storage("mock://bucket/results")
    assert isinstance(remote, Location) and not remote.is_local
    (tmp_path / "file").write_text("x")
    for storage, message in ((str(tmp_path / "file"), "is a file, not a folder"),
                             ("nosuch://bucket/x", "--storage nosuch://bucket/x: not a storage pyarrow can open")):
        with pytest.raises(ExperimentError, match=message) as raised:
            check_storage(storage)
        assert len(str(raised.value).splitlines()) == 1


# --- a cluster of several nodes ---------------------------------------------------------------

MOUNTS = """\
sysfs /sys sysfs rw 0 0
/dev/sda1 / ext4 rw,relatime 0 0
server:/export /mnt/shared nfs4 rw,vers=4.2 0 0
/dev/sdb1 /mnt/shared/local\\040disk xfs rw 0 0
tmpfs /tmp tmpfs rw 0 0
"""


def test_mount_type_is_that_of_the_longest_mount_point(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text(MOUNTS)
    assert runner.mount_type(Path("/mnt/shared/results/exp"), mounts) == "nfs4"
    assert runner.mount_type(Path("/mnt/shared/local disk/x"), mounts) == "xfs"  # "\040" is a space
    assert runner.mount_type(Path("/mnt/sharedness"), mounts) == "ext4"  # not under /mnt/shared
    assert runner.mount_type(Path("/home/me/results"), mounts) == "ext4"
    assert runner.mount_type(Path("/x"), tmp_path / "absent") is None


NODES = [{"NodeID": "a" * 56, "NodeManagerAddress": "10.0.0.1"}, {"NodeID": "b" * 56, "NodeManagerAddress": "10.0.0.2"}]


def test_a_folder_some_node_does_not_see_is_refused_with_one_line(tmp_path, monkeypatch):
    mounts = tmp_path / "mounts"
    mounts.write_text(MOUNTS)
    asked: list[Path] = []

    def unseen_on_the_second(folder, nodes, timeout=0):
        asked.append(folder)
        return ["10.0.0.2 (bbbbbbbb)"]

    monkeypatch.setattr(runner, "nodes_not_seeing", unseen_on_the_second)
    runner.check_shared_storage({"--storage x": Path("/home/me/results")}, NODES[:1], mounts)  # one node: fine
    runner.check_shared_storage({"--storage x": Path("/mnt/shared/results")}, NODES, mounts)  # NFS: fine
    assert asked == []  # neither needed a probe
    with pytest.raises(ExperimentError) as refused:
        runner.check_shared_storage({"--storage /home/me/results": Path("/home/me/results")}, NODES, mounts)
    line = str(refused.value)
    assert len(line.splitlines()) == 1 and "ext4" in line and "1 of the cluster's 2 nodes" in line
    assert "NFS path every node mounts" in line and "s3://" in line and "gs://" in line
    with pytest.raises(ExperimentError, match=r"cache_dir /tmp/c: .* --set cache_dir=/mnt/nfs"):
        runner.check_shared_storage({"cache_dir /tmp/c": Path("/tmp/c")}, NODES, mounts)


def test_sees_marker(tmp_path):
    marker = tmp_path / "marker"
    marker.write_text("token")
    assert sees_marker(str(marker), "token") and not sees_marker(str(marker), "other")
    assert not sees_marker(str(tmp_path / "absent"), "token")


def test_nodes_of_one_host_see_a_local_folder(tmp_path):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address, log_to_driver=False)
        cluster.wait_for_nodes()
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        assert len(nodes) == 2
        assert runner.nodes_not_seeing(tmp_path / "results", nodes, timeout=60) == []
        assert not list((tmp_path / "results").iterdir())  # the marker is gone
        runner.check_shared_storage({"--storage x": tmp_path / "results"}, nodes)  # passes
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_records_written_through_a_file_uri_are_the_local_files(tmp_path):
    run = location(f"file://{tmp_path}") / "exp"
    write_json(run / "run-001" / "t" / FINAL_FILE, {"phase": "done"})
    assert json.loads((tmp_path / "exp" / "run-001" / "t" / FINAL_FILE).read_text()) == {"phase": "done"}


def test_an_interrupted_trial_is_not_counted_finished():
    """A trial stopped by Ctrl-C ends in Tune's TERMINATED state without an error; only a last
    report of phase "done" makes it finished (the closing line once said "21 finished" of 20)."""
    from types import SimpleNamespace

    from sweep.ledger import Plan

    def result(key: str, phase: str, error: Exception | None = None) -> SimpleNamespace:
        return SimpleNamespace(config={"trial": {"key": key}}, metrics={"phase": phase}, error=error)

    grid = [result("a", "done"), result("b", "finetune"), result("c", "load", RuntimeError("boom"))]
    results = runner.SweepResults(run_dir=Path("."), plan=Plan(done={"old": None}), grids=[grid],
                                  ran=frozenset({"a", "b", "c"}))
    assert (results.finished, results.unfinished, len(results.errors)) == (2, 1, 1)
