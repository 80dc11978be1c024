"""`python -m trainables.data prefetch`: an experiment's data written in the local layout, its hub
models in the hub cache, once. No network: the download functions are stood in for."""
from __future__ import annotations

import ast
import runpy
import sys
from pathlib import Path

import pytest

from trainables import data, prefetch
from trainables.data import load_dictionary, load_parallel, load_task_split
from trainables.models import HUB_MODEL_REVISIONS

ROOT = Path(__file__).resolve().parents[1]

EXPERIMENT = '''
EXPERIMENT = dict(
    name="tiny",
    models={"xlmr": dict(source="xlm-roberta-base")},
    settings=dict(langs=["es"]),
    grids=[dict(model=["xlmr"], task=["udpos", "wikiann", "xnli"], realign=["none"], pairs=["dico"],
                corpus=["opus100"], seed=[0]),
           dict(model=["xlmr"], task=["udpos"], realign=["before"], pairs=["awesome"], corpus=["opus100"],
                seed=[0])],
)
'''

CONLLU = "1\tHola\thola\tINTJ\t_\t_\t0\troot\t_\t_\n2-3\tdel\t_\t_\t_\t_\t_\t_\t_\t_\n2\tde\tde\tADP\t_\t_\t1\tcase\t_\t_\n" \
         "3\tel\tel\tDET\t_\t_\t1\tdet\t_\t_\n\n"


class FakeRemote:
    """The URL downloads, the hub dataset loads and the hub snapshots, recorded."""

    def __init__(self, hub_cache: Path):
        self.downloads, self.hub, self.snapshots, self.hub_cache = [], [], [], hub_cache

    def download(self, url: str, dest: Path) -> None:
        self.downloads.append(url)
        dest.write_text(CONLLU if url.endswith(".conllu") else "cat\tgato\ndog\tperro\n", encoding="utf-8")

    def hub_rows(self, dataset_id, config, split, limit):
        self.hub.append((dataset_id, config, split))
        if dataset_id == data.WIKIANN_HUB:
            return [{"tokens": ["Ana", "vive"], "ner_tags": [1, 0]}]
        return [{"premise": "a\tb", "hypothesis": "", "label": 0}, {"premise": "c", "hypothesis": "d", "label": 2}]

    def load_parallel(self, corpus, lang, data_dir=None, cache_dir=None, sample=None):
        self.hub.append((corpus, lang, sample))
        return [("the cat", "el gato"), ("a\tdog", "un\nperro")]

    def snapshot_download(self, repo_id, revision=None, local_files_only=False, allow_patterns=None):
        folder = self.hub_cache / repo_id.replace("/", "--") / revision
        if local_files_only:
            if not folder.is_dir():
                raise FileNotFoundError(folder)
            return str(folder)
        self.snapshots.append((repo_id, revision))
        folder.mkdir(parents=True)
        for name in ("config.json", "tokenizer.json", "model.safetensors"):
            (folder / name).write_text("{}", encoding="utf-8")
        return str(folder)


@pytest.fixture
def remote(monkeypatch, tmp_path) -> FakeRemote:
    for name in ("SWEEP_OFFLINE", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "SWEEP_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SWEEP_CACHE_DIR", str(tmp_path / "cache"))
    fake = FakeRemote(tmp_path / "hub")
    monkeypatch.setattr(data, "_download", fake.download)
    monkeypatch.setattr(data, "_hub_rows", fake.hub_rows)
    monkeypatch.setattr(data, "load_parallel", fake.load_parallel)
    monkeypatch.setattr(prefetch, "snapshot_download", fake.snapshot_download)
    monkeypatch.setattr(prefetch, "_weight_patterns", lambda model_id, revision: ["model.safetensors"])
    return fake


def test_prefetch_writes_the_layout_once(remote, tmp_path, monkeypatch, capsys):
    experiment = tmp_path / "tiny.py"
    experiment.write_text(EXPERIMENT, encoding="utf-8")
    out = tmp_path / "data"
    assert prefetch.main(["prefetch", "--data-dir", str(out), str(experiment)]) == 0
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == [
        # muse/en-es.txt alone: the default muse_reverse_file ("en-x-copy") never reads es-en.txt
        "mnli/dev.tsv", "mnli/train.tsv", "muse/en-es.txt",
        "parallel/opus100/en-es.en", "parallel/opus100/en-es.es",
        "ud/en_ewt-ud-dev.conllu", "ud/en_ewt-ud-test.conllu", "ud/en_ewt-ud-train.conllu", "ud/es_gsd-ud-test.conllu",
        "wikiann/dev-en.tsv", "wikiann/test-en.tsv", "wikiann/test-es.tsv", "wikiann/train-en.tsv",
        "xnli/test-en.tsv", "xnli/test-es.tsv",
    ]
    assert "https://raw.githubusercontent.com/UniversalDependencies/UD_Spanish-GSD/r2.7/es_gsd-ud-test.conllu" \
        in remote.downloads
    assert ("opus100", "es", 1_000_000) in remote.hub  # the trials' parallel_sample
    # both the experiment's model and AWESOME's aligner, each at its pinned commit
    assert sorted(remote.snapshots) == sorted([("xlm-roberta-base", HUB_MODEL_REVISIONS["xlm-roberta-base"]),
                                               ("aneuraz/awesome-align-with-co",
                                                HUB_MODEL_REVISIONS["aneuraz/awesome-align-with-co"])])
    assert capsys.readouterr().out.strip().endswith("16 fetched, 0 already there, 0 failed")

    # a compute node: the sweep's readers find everything locally, offline
    monkeypatch.setenv("SWEEP_OFFLINE", "1")
    assert load_task_split("wikiann", "test", "es", data_dir=out) == [{"words": ["Ana", "vive"], "labels": ["B-PER", "O"]}]
    assert load_task_split("xnli", "test", "es", data_dir=out) == [
        {"premise": "a b", "hypothesis": "", "label": "entailment"},
        {"premise": "c", "hypothesis": "d", "label": "contradiction"}]
    assert load_task_split("udpos", "test", "es", data_dir=out)[0]["words"] == ["Hola", "del", "de", "el"]
    monkeypatch.undo()  # the real load_parallel reads the local files
    monkeypatch.setenv("SWEEP_OFFLINE", "1")
    assert load_parallel("opus100", "es", data_dir=out) == [("the cat", "el gato"), ("a\tdog", "un perro")]
    # read as a trial reads it (the default muse_reverse_file: en-X alone)
    assert load_dictionary("en", "es", data_dir=out)["cat"] == frozenset({"gato"})


def test_a_second_prefetch_downloads_nothing(remote, tmp_path, capsys):
    experiment = tmp_path / "tiny.py"
    experiment.write_text(EXPERIMENT, encoding="utf-8")
    out = tmp_path / "data"
    assert prefetch.main(["prefetch", "--data-dir", str(out), str(experiment)]) == 0
    before = (len(remote.downloads), len(remote.hub), len(remote.snapshots))
    capsys.readouterr()
    assert prefetch.main(["prefetch", "--data-dir", str(out), str(experiment)]) == 0
    assert (len(remote.downloads), len(remote.hub), len(remote.snapshots)) == before
    assert capsys.readouterr().out.strip() == "0 fetched, 16 already there, 0 failed"
    assert not list(out.rglob("*.part"))  # no temporary file left behind


def test_dry_run_fetches_nothing_and_errors_are_one_line(remote, tmp_path, capsys, monkeypatch):
    experiment = tmp_path / "tiny.py"
    experiment.write_text(EXPERIMENT, encoding="utf-8")
    out = tmp_path / "data"
    assert prefetch.main(["prefetch", "--dry-run", "--data-dir", str(out), str(experiment)]) == 0
    assert not out.exists() and remote.downloads == remote.hub == remote.snapshots == []
    assert "would fetch udpos split=test lang=es -> " in capsys.readouterr().out

    def unreachable(url, dest):
        raise OSError("no route to host")

    monkeypatch.setattr(data, "_download", unreachable)
    assert prefetch.main(["prefetch", "--data-dir", str(out), str(experiment)]) == 1
    lines = capsys.readouterr().out.splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 5  # 4 UD files, 1 MUSE file
    assert any("es_gsd-ud-test.conllu failed: OSError: no route to host" in line for line in errors)
    assert not (out / "ud").exists() or not list((out / "ud").iterdir())  # nothing partial


# runpy's warning: this process imported trainables.data already (a shell's `python -m` has not)
@pytest.mark.filterwarnings("ignore:'trainables.data' found in sys.modules")
def test_the_command_is_data_s_main_and_imports_no_ray(tmp_path, monkeypatch, capsys):
    experiment = tmp_path / "bad.py"
    experiment.write_text("EXPERIMENT = dict(grids=[dict(model=['nope'])])\n", encoding="utf-8")
    monkeypatch.setattr(sys, "argv", ["trainables.data", "prefetch", "--data-dir", str(tmp_path / "d"), str(experiment)])
    with pytest.raises(SystemExit) as stopped:
        runpy.run_module("trainables.data", run_name="__main__")
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and len(error.strip().splitlines()) == 1
    # trainables never imports Ray: neither the command nor the sweep's experiment loader it reads with
    for module in ("trainables/prefetch.py", "sweep/experiment.py", "sweep/models.py"):
        tree = ast.parse((ROOT / module).read_text(encoding="utf-8"))
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert "ray" not in imported, module


def test_the_plan_lists_only_the_muse_files_the_setting_reads(tmp_path):
    """`muse_reverse_file="en-x-copy"` (the reference's pipeline) never reads an X-en file, so a
    prefetch for it does not fetch one."""
    def muse_keys(reverse_file: str) -> list[dict[str, str]]:
        experiment = tmp_path / f"exp-{reverse_file}.py"
        experiment.write_text(EXPERIMENT.replace('settings=dict(langs=["es"])',
                                                 f'settings=dict(langs=["es"], muse_reverse_file={reverse_file!r})'),
                              encoding="utf-8")
        plan = prefetch.experiment_plan(experiment, tmp_path / "data")
        return [need.requirement.key_dict for need in plan.data if need.requirement.source.name == "muse"]

    both, copy = muse_keys("x-en"), muse_keys("en-x-copy")
    assert len(both) == 2 and len(copy) == 1 and copy[0] in both
