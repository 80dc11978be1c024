"""Hub sources: pinned revisions (models and datasets, in loads and cache names), offline mode
reading the Hugging Face caches, and the preflight's check of hub model ids. No network: the
hub's entry points are stood in for."""
from __future__ import annotations

import re
import sys
import types
from types import SimpleNamespace

import pytest
from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

from sweep.experiment import build_experiment
from sweep.preflight import hub_problems, preflight_problems
from trainables import data
from trainables.cache import TOKENIZER_PARTS, model_fingerprint
from trainables.data import DataSourceError, describe_missing, load_dictionary, load_task_split
from trainables.model_files import DEFAULT_HUB_REVISION, hub_model_problems, hub_revision, pretrained_kwargs
from trainables.models import HUB_MODEL_REVISIONS, PAPER_MODELS

SHA = re.compile(r"[0-9a-f]{40}")


def online(monkeypatch) -> None:
    for name in ("SWEEP_OFFLINE", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)


def hub_offline(monkeypatch) -> None:
    """A compute node: the hub's own flags, not the sweep's."""
    online(monkeypatch)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


# --- models -------------------------------------------------------------------------------------


def test_every_known_hub_model_is_pinned_to_a_commit():
    assert {m.name for m in PAPER_MODELS} | {"aneuraz/awesome-align-with-co"} == set(HUB_MODEL_REVISIONS)
    assert all(SHA.fullmatch(revision) for revision in HUB_MODEL_REVISIONS.values())


def test_hub_revision_of_ids_and_folders(tmp_path):
    xlmr = HUB_MODEL_REVISIONS["xlm-roberta-base"]
    assert hub_revision("xlm-roberta-base") == xlmr
    assert hub_revision("FacebookAI/xlm-roberta-base") == xlmr  # the legacy id's canonical home
    assert hub_revision("someone/xlm-roberta-base") == DEFAULT_HUB_REVISION  # a fork is another repository
    assert hub_revision("intfloat/multilingual-e5-small") == "main"
    assert hub_revision(str(tmp_path)) is None and hub_revision("./model") is None
    assert pretrained_kwargs("xlm-roberta-large") == {"revision": HUB_MODEL_REVISIONS["xlm-roberta-large"]}
    assert pretrained_kwargs(str(tmp_path)) == {}


def test_a_hub_models_cache_key_follows_its_pinned_revision(monkeypatch, tmp_path):
    pinned = model_fingerprint("xlm-roberta-base")
    assert pinned == model_fingerprint("xlm-roberta-base", revision=HUB_MODEL_REVISIONS["xlm-roberta-base"])
    assert pinned == model_fingerprint("xlm-roberta-base", TOKENIZER_PARTS)  # one commit holds both
    monkeypatch.setitem(HUB_MODEL_REVISIONS, "xlm-roberta-base", "0" * 40)  # the pin moves to another commit
    assert model_fingerprint("xlm-roberta-base") != pinned
    assert model_fingerprint("someone/model") == model_fingerprint("someone/model", revision=DEFAULT_HUB_REVISION)
    # a local folder is keyed by its files' content, whatever the pins say
    (tmp_path / "config.json").write_text("{}")
    local = model_fingerprint(tmp_path)
    monkeypatch.setitem(HUB_MODEL_REVISIONS, "xlm-roberta-base", "1" * 40)
    assert model_fingerprint(tmp_path) == local == model_fingerprint(tmp_path, revision="other")
    (tmp_path / "config.json").write_text('{"a": 1}')
    assert model_fingerprint(tmp_path) != local


class FakeApi:
    """`HfApi.model_info` for a hub of a few repositories."""

    def __init__(self, repos: dict[str, list[str]]):
        self.repos, self.calls = repos, []

    def model_info(self, model_id, revision=None):
        self.calls.append((model_id, revision))
        response = SimpleNamespace(headers={}, request=None)
        if model_id not in self.repos:
            raise RepositoryNotFoundError(f"404 Client Error: Repository Not Found for url: {model_id}",
                                          response=response)
        if revision not in ("main", HUB_MODEL_REVISIONS.get(model_id)):
            raise RevisionNotFoundError(f"404: revision {revision} not found", response=response)
        return SimpleNamespace(siblings=[SimpleNamespace(rfilename=name) for name in self.repos[model_id]])


GOOD_FILES = ["config.json", "tokenizer.json", "sentencepiece.bpe.model", "model.safetensors"]


def test_hub_model_check_asks_at_the_pinned_revision_and_suggests_known_names():
    api = FakeApi({"xlm-roberta-base": GOOD_FILES, "org/no-tokenizer": ["config.json", "pytorch_model.bin"]})
    problems = hub_model_problems({"xlm-roberta-base": "model 'xlmr'", "xlm-roberta-bsae": "model 'typo'",
                                   "org/no-tokenizer": "model 'bare'"}, api=api)
    assert ("xlm-roberta-base", HUB_MODEL_REVISIONS["xlm-roberta-base"]) in api.calls
    assert problems == [
        "model 'typo': hub model 'xlm-roberta-bsae' not found on the hub (did you mean 'xlm-roberta-base'?)",
        "model 'bare': hub model 'org/no-tokenizer' at revision main: no a tokenizer file "
        "(expected one of tokenizer.json, tokenizer_config.json, vocab.txt, sentencepiece.bpe.model, "
        "spiece.model, vocab.json)",
    ]


def test_hub_check_is_skipped_offline_with_a_note(monkeypatch, capsys):
    hub_offline(monkeypatch)
    api = FakeApi({})
    assert hub_problems({"xlm-roberta-bsae": "model 'typo'"}, api=api) == []
    assert api.calls == []
    assert "note: hub models not checked, remote loading disabled (HF_HUB_OFFLINE=1" in capsys.readouterr().err


def test_preflight_reports_a_hub_typo_in_one_line(tmp_path, monkeypatch):
    import huggingface_hub
    import toyworld as toy

    data_dir = toy.write_toy_data(tmp_path / "data", langs=("es",), n_train=8, n_test=4, n_parallel=8)
    experiment = build_experiment(dict(
        models={"typo": dict(source="distilbert-base-multilingual-casd")},
        settings=dict(data_dir=str(data_dir), langs=["es"]),
        grids=[dict(model=["typo"], task=["udpos"], realign=["none"], pairs=["dico"], corpus=["toy"], seed=[0])],
    ))
    online(monkeypatch)
    api = FakeApi({})
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda: api)
    assert preflight_problems(experiment) == [
        "model 'typo': hub model 'distilbert-base-multilingual-casd' not found on the hub "
        "(did you mean 'distilbert-base-multilingual-cased'?)"]
    assert api.calls == [("distilbert-base-multilingual-casd", "main")]


# --- datasets -----------------------------------------------------------------------------------


class FakeDatasets:
    """`datasets.load_dataset`, recording each call's arguments."""

    def __init__(self, rows):
        self.rows, self.calls = rows, []

    def load_dataset(self, dataset_id, config=None, split=None, streaming=False, revision=None):
        self.calls.append(dict(dataset_id=dataset_id, config=config, split=split, streaming=streaming,
                               revision=revision))
        rows = self.rows
        return iter(rows) if streaming else Rows(rows)


class Rows(list):
    def select(self, indices):
        return Rows(self[i] for i in indices)


@pytest.fixture
def fake_datasets(monkeypatch):
    rows = [{"premise": f"p{i}", "hypothesis": f"h{i}", "label": i % 3} for i in range(5)]
    fake = FakeDatasets(rows)
    module = types.ModuleType("datasets")
    module.load_dataset = fake.load_dataset
    monkeypatch.setitem(sys.modules, "datasets", module)
    return fake


def test_hub_datasets_are_loaded_at_their_pinned_revision(fake_datasets, monkeypatch, tmp_path):
    online(monkeypatch)
    examples = load_task_split("xnli", "test", "es", data_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert [e["label"] for e in examples] == ["entailment", "neutral", "contradiction", "entailment", "neutral"]
    assert fake_datasets.calls == [dict(dataset_id="facebook/xnli", config="es", split="test", streaming=False,
                                        revision=data.HUB_DATASET_REVISIONS["facebook/xnli"])]
    assert SHA.fullmatch(data.HUB_DATASET_REVISIONS["facebook/xnli"])
    list(data._hub_rows("unimelb-nlp/wikiann", "es", "train", 2))
    assert fake_datasets.calls[-1]["streaming"]
    assert fake_datasets.calls[-1]["revision"] == "f0a3be6dc5564c0cc4150bb660144800a1f539d4"


def test_download_cache_names_carry_the_revision():
    xnli = data._remote_cache_path(data.get_source("xnli"), {"split": "test", "lang": "es"}, data.Path("/c"), None)
    assert xnli.name == f"es-test-v1.{data.HUB_DATASET_REVISIONS['facebook/xnli'][:12]}.jsonl"
    wikiann = data._remote_cache_path(data.get_source("wikiann"), {"split": "dev", "lang": "es"}, data.Path("/c"), None)
    assert wikiann.name == "es-dev-v1.f0a3be6dc556.jsonl"
    opus = data.parallel_sample_path(data.get_source("opus100"), "es", data.Path("/c"), data.PARALLEL_SAMPLE,
                                     data.PARALLEL_SAMPLE_SEED)
    assert opus.name == "es-v805090dc28bf-reservoir1000000-seed0.parquet"
    ntrex = data._remote_cache_path(data.get_source("ntrex"), {"lang": "es"}, data.Path("/c"), None)
    assert ntrex.name == f"es-v{data.NTREX_REVISION[:12]}.parquet"
    muse = data._remote_cache_path(data.get_source("muse"), {"src": "en", "tgt": "es"}, data.Path("/c"), None)
    assert muse.name == "en-es-v1.parquet"  # a URL without revisions: its own version only


def test_every_hub_dataset_a_source_reads_is_pinned_at_a_commit():
    for dataset_id, revision in data.HUB_DATASET_REVISIONS.items():
        assert SHA.fullmatch(revision), dataset_id
    # every hub dataset a registered source reads is pinned: none follows the moving branch
    read = {source.hub_dataset for source in data.DATA_SOURCES.values() if source.hub_dataset}
    assert read and read <= set(data.HUB_DATASET_REVISIONS), read - set(data.HUB_DATASET_REVISIONS)
    assert data.hub_dataset_revision("someone/plugin-dataset") == data.HUB_BRANCH
    assert SHA.fullmatch(data.NTREX_REVISION)
    # every source read from the hub or GitHub names its pin in its version (cache names and keys)
    versions = {name: data.get_source(name).version for name in ("wikiann", "mnli", "xnli", "opus100", "multiun", "ntrex")}
    assert versions == {"wikiann": "1.f0a3be6dc556", "mnli": "1.da70db2af9d0", "xnli": "1.b8dd5d7af511",
                        "opus100": "805090dc28bf-reservoir1000000-seed0", "multiun": "99a0348ce711-reservoir1000000-seed0",
                        "ntrex": data.NTREX_REVISION[:12]}
    remote = data.get_source("ntrex").remote(lang="zh")
    assert remote == f"https://raw.githubusercontent.com/MicrosoftTranslator/NTREX/{data.NTREX_REVISION}/NTREX-128/newstest2019-ref.zho-CN.txt"


def test_ntrex_is_downloaded_at_its_pinned_commit(monkeypatch, tmp_path):
    online(monkeypatch)
    files = {"eng": ["One.", "Two."], "spa": ["Uno.", "Dos."]}
    urls = []

    def download(url, dest):
        urls.append(url)
        dest.write_text("\n".join(files[url.rsplit(".", 2)[-2]]) + "\n", encoding="utf-8")

    monkeypatch.setattr(data, "_download", download)
    pairs = data.load_parallel("ntrex", "es", data_dir=tmp_path / "none", cache_dir=tmp_path / "cache")
    assert sorted(pairs) == [("One.", "Uno."), ("Two.", "Dos.")]
    assert urls and all(f"/NTREX/{data.NTREX_REVISION}/NTREX-128/" in url for url in urls)
    assert (tmp_path / f"cache/data/ntrex/es-v{data.NTREX_REVISION[:12]}.parquet").is_file()


def test_hub_offline_flags_read_the_datasets_cache(fake_datasets, monkeypatch, tmp_path):
    hub_offline(monkeypatch)
    examples = load_task_split("xnli", "test", "es", data_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert len(examples) == 5 and fake_datasets.calls[-1]["revision"] == data.HUB_DATASET_REVISIONS["facebook/xnli"]
    # a streamed prefix is cut from the cached split: the cache holds no streams
    assert len(data._hub_rows("unimelb-nlp/wikiann", "es", "train", 2)) == 2
    assert not fake_datasets.calls[-1]["streaming"]
    # URL downloads are still refused, before any network access
    monkeypatch.setattr(data, "_download", lambda url, dest: pytest.fail("downloaded while offline"))
    with pytest.raises(DataSourceError, match="HF_HUB_OFFLINE=1"):
        load_dictionary("en", "es", data_dir=tmp_path, cache_dir=tmp_path / "cache")
    # the sweep's own flag forbids the hub caches too
    monkeypatch.setenv("SWEEP_OFFLINE", "1")
    with pytest.raises(DataSourceError, match="SWEEP_OFFLINE=1"):
        load_task_split("xnli", "test", "fr", data_dir=tmp_path, cache_dir=tmp_path / "cache2")


def test_preflight_offline_accepts_what_the_datasets_cache_holds(monkeypatch, tmp_path):
    hub_offline(monkeypatch)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    missing = describe_missing("task", "xnli", ["es"], data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")
    assert len(missing) == 4 and all("HF_HUB_OFFLINE=1" in line for line in missing)  # mnli train/dev, xnli en/es
    assert any(f"the datasets cache {tmp_path / 'hf'} holds no copy of facebook/xnli" in line for line in missing)
    (tmp_path / "hf/facebook___xnli/es/0.0.0" / data.HUB_DATASET_REVISIONS["facebook/xnli"]).mkdir(parents=True)
    (tmp_path / "hf/nyu-mll___multi_nli/default/0.0.0/x").mkdir(parents=True)
    assert describe_missing("task", "xnli", ["es"], data_dir=tmp_path / "data", cache_dir=tmp_path / "cache") == []
