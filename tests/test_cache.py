"""Content-keyed caches (trainables/cache.py, the keys of trial.py and pairs.py) and
`python -m sweep cache list|prune` (sweep/cache_command.py), on tiny hand-made files."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np
import pandas as pd
import pytest

from sweep import cache_command
from trainables import cache as cache_module
from trainables import trial
from trainables.alignment import RESULT_COLUMNS
from trainables.cache import (
    TOKENIZER_PARTS,
    file_fingerprint,
    folder_fingerprint,
    model_fingerprint,
    prune_cache,
    scan_cache,
)
from trainables.data import Subset, get_source
from trainables.pairs import PAIR_COLUMNS, AlignedCorpus, extract_pairs
from trainables.settings import Settings
from trainables.tasks import get_task

REPO = Path(__file__).resolve().parents[1]
WORDS = ["the", "a", "cat", "dog", "sat", "ran", "el", "gato", "perro", "se", "sentó", "corrió", "."]
DAY = 86_400


# --- fingerprints ---------------------------------------------------------------------------------


def test_file_fingerprint_follows_content_not_path_and_reads_a_file_once(tmp_path, monkeypatch):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("one")
    b.write_text("one")
    first = file_fingerprint([a])
    assert file_fingerprint([b]) == first  # same bytes elsewhere: same key
    assert file_fingerprint([a, b]) != first and file_fingerprint([]) != first
    real_open = open
    reads = []
    monkeypatch.setattr(cache_module, "open", lambda *args, **kw: reads.append(args[0]) or real_open(*args, **kw),
                        raising=False)
    assert file_fingerprint([a]) == first and reads == []  # memoised: unchanged file not read again
    a.write_text("two")  # same path, same size, new content (a new mtime)
    stat = a.stat()
    os.utime(a, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert file_fingerprint([a]) != first and reads == [a]
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        file_fingerprint([tmp_path / "missing.txt"])


def test_file_digests_are_remembered_across_processes_until_the_file_changes(tmp_path, monkeypatch):
    memo = tmp_path / "memo"
    monkeypatch.setenv(cache_module.DIGEST_MEMO_ENV, str(memo))
    monkeypatch.setattr(cache_module, "DIGEST_MEMO_SETTLE_NS", 0)
    a = tmp_path / "weights.bin"
    a.write_bytes(b"x" * 1000)
    first = file_fingerprint([a])
    assert len(list(memo.iterdir())) == 1
    real_open = open
    reads = []
    monkeypatch.setattr(cache_module, "open", lambda *args, **kw: reads.append(args[0]) or real_open(*args, **kw),
                        raising=False)
    monkeypatch.setattr(cache_module, "_digests", {})  # a new process: nothing in memory
    assert file_fingerprint([a]) == first and reads == []  # from the node's memo, not the bytes
    a.write_bytes(b"y" * 1000)  # same path and size, new content: a new ctime
    stat = a.stat()  # a clock that ticks in milliseconds may give the rewrite the same times: move them on
    os.utime(a, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    monkeypatch.setattr(cache_module, "_digests", {})
    assert file_fingerprint([a]) != first and reads == [a]
    # An entry is the stat it was made for: one that does not match it is not believed.
    monkeypatch.setattr(cache_module, "_digests", {})
    for entry in memo.iterdir():
        lines = entry.read_text().split("\n")
        entry.write_text("other\0stat\n" + lines[1] + "\n")
    assert file_fingerprint([a]) != first and reads == [a, a]


def test_a_file_changed_just_now_is_not_remembered_across_processes(tmp_path, monkeypatch):
    memo = tmp_path / "memo"
    monkeypatch.setenv(cache_module.DIGEST_MEMO_ENV, str(memo))
    a = tmp_path / "config.json"
    a.write_text("{}")
    file_fingerprint([a])  # written within the settling time: a later write may keep its mtime
    assert not memo.exists() or not list(memo.iterdir())
    monkeypatch.setenv(cache_module.DIGEST_MEMO_ENV, "off")
    monkeypatch.setattr(cache_module, "DIGEST_MEMO_SETTLE_NS", 0)
    monkeypatch.setattr(cache_module, "_digests", {})
    file_fingerprint([a])
    assert cache_module.digest_memo_dir() is None and not memo.exists()


def write_tiny_bert(folder: Path, seed: int = 0) -> Path:
    """A randomly initialised 1-layer BERT with a WordPiece tokenizer over WORDS."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=False, model_max_length=64)
    tokenizer.save_pretrained(folder)
    config = BertConfig(vocab_size=len(vocab), hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=16, max_position_embeddings=64)
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


def test_model_fingerprint_covers_config_tokenizer_and_weights(tiny_bert, tmp_path):
    import shutil

    copy = Path(shutil.copytree(tiny_bert, tmp_path / "elsewhere"))
    full, tokenizer = model_fingerprint(copy), model_fingerprint(copy, TOKENIZER_PARTS)
    assert full == model_fingerprint(tiny_bert) and tokenizer == model_fingerprint(tiny_bert, TOKENIZER_PARTS)
    (copy / "README.md").write_text("notes")  # not a model file
    assert model_fingerprint(copy) == full
    write_tiny_bert(copy, seed=1)  # new weights in place
    assert model_fingerprint(copy) != full and model_fingerprint(copy, TOKENIZER_PARTS) == tokenizer
    with open(copy / "vocab.txt", "a", encoding="utf-8") as handle:
        handle.write("perro\n")
    assert model_fingerprint(copy, TOKENIZER_PARTS) != tokenizer
    # A hub id (no such folder) is keyed by its id and revision.
    assert model_fingerprint("org/model") != model_fingerprint("org/other")
    assert model_fingerprint("org/model", revision="abc") != model_fingerprint("org/model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no config/tokenizer/weights files"):
        folder_fingerprint(tmp_path / "empty")


# --- features -------------------------------------------------------------------------------------

CONLLU_SENTENCE = "".join(f"{i}\t{word}\t{word}\t{tag}\t_\t_\t{head}\t_\t_\t_\n"
                          for i, word, tag, head in ((1, "the", "DET", 2), (2, "cat", "NOUN", 3), (3, "sat", "VERB", 0)))
CONLLU_SENTENCE += "\n"


def features(tiny_bert: Path, data: Path, cache: Path, **settings):
    task = get_task("udpos")
    tokenizer = trial.load_tokenizer(str(tiny_bert))
    values = Settings(data_dir=str(data), cache_dir=str(cache), **settings)
    return trial.featurize_cached(task, tokenizer, {"model_source": str(tiny_bert)}, values, "test", "en", Subset())


def test_features_follow_the_data_file_content_and_failures_are_not_cached(tiny_bert, tmp_path):
    data, cache = tmp_path / "data", tmp_path / "cache"
    test_file = data / "ud" / "en_ewt-ud-test.conllu"
    test_file.parent.mkdir(parents=True)
    test_file.write_text("")  # an empty file: whatever it gives must not outlive the fix
    try:
        empty = features(tiny_bert, data, cache)
        assert empty.n_examples == 0
    except ValueError:
        assert not list((cache / "features").glob("*.pt"))  # a failure leaves no entry
    test_file.write_text(CONLLU_SENTENCE)
    assert features(tiny_bert, data, cache).n_examples == 1
    test_file.write_text(CONLLU_SENTENCE * 3)  # same path, new content
    assert features(tiny_bert, data, cache).n_examples == 3
    assert features(tiny_bert, data, cache, learning_rate=1e-3).n_examples == 3  # read from the cache
    assert scan_cache(cache).foreign == []  # every file written is one the cache owns


# A valid other value for every setting the keys list (the tests below check the lists match).
OTHER_VALUES = dict(task_max_length=64, nli_max_length=128, long_sentences="truncate", keep_lone_prefix=True,
                    lone_prefix_takes_room=False, align_max_length_before=64, ner_zh_words=False, ud_multiword_tokens="skip", align_pairs=500, align_seed=1, align_pooling="mean",
                    align_sampling="uniform", align_max_length=64, langs=("es", "fr"), parallel_subset=100,
                    subset_mode="random", subset_seed=1, precision="bf16")
TRAINING_ONLY = dict(learning_rate=1e-3, epochs=2, batch_size=64, micro_batch_size=16, joint_weight=0.5,
                     realign_layer=-2)


def captured_paths(monkeypatch) -> list[Path]:
    """Cache paths the trial asks for, without computing anything."""
    paths: list[Path] = []

    def fake_cached(path, compute, save, load):
        paths.append(Path(path))
        return pd.DataFrame(columns=list(RESULT_COLUMNS))

    monkeypatch.setattr(trial, "cached", fake_cached)
    return paths


def test_every_featurisation_setting_is_in_the_features_key_and_training_settings_are_not(
        tiny_bert, tmp_path, monkeypatch):
    data = tmp_path / "data"
    (data / "ud").mkdir(parents=True)
    (data / "ud" / "en_ewt-ud-test.conllu").write_text(CONLLU_SENTENCE)
    paths = captured_paths(monkeypatch)
    task, tokenizer = get_task("udpos"), trial.load_tokenizer(str(tiny_bert))

    def key_path(subset: Subset = Subset(), **settings) -> Path:
        values = Settings(data_dir=str(data), cache_dir=str(tmp_path / "cache"), **settings)
        trial.featurize_cached(task, tokenizer, {"model_source": str(tiny_bert)}, values, "test", "en", subset)
        return paths[-1]

    assert {"task_max_length", "nli_max_length", "long_sentences", "keep_lone_prefix", "ner_zh_words"} <= set(
        trial.FEATURE_SETTINGS)  # what featurisation reads (tasks.py, encoding.py, ner.py)
    base = key_path()
    for name in trial.FEATURE_SETTINGS:
        assert key_path(**{name: OTHER_VALUES[name]}) != base, name
    for name, value in TRAINING_ONLY.items():
        assert key_path(**{name: value}) == base, name
    assert key_path(Subset(1)) != base
    assert key_path(Subset(1, "random", 0)) != key_path(Subset(1, "random", 1)) != key_path(Subset(1))


# --- pre-trained alignment ----------------------------------------------------------------------------


def tiny_corpus(lang: str = "es", repeats: int = 6) -> AlignedCorpus:
    en_words = [["the", "cat", "sat"], ["a", "dog", "ran"]] * repeats
    x_words = [["el", "gato", "se", "sentó"], ["el", "perro", "corrió"]] * repeats
    rows = []
    for s in range(len(en_words)):
        links = [(1, 1), (2, 3)] if s % 2 == 0 else [(1, 1), (2, 2)]
        rows += [(s, i, j, en_words[s][i], x_words[s][j]) for i, j in links]
    pairs = pd.DataFrame(rows, columns=list(PAIR_COLUMNS)).astype({c: np.int64 for c in PAIR_COLUMNS[:3]})
    return AlignedCorpus(lang, en_words, x_words, pairs)


def alignment_inputs(model_dir: Path, cache: Path, corpus: AlignedCorpus | None = None, **settings):
    values = Settings(**{"cache_dir": str(cache), "langs": ("es",), "align_pairs": 10, "device": "cpu", **settings})
    return SimpleNamespace(settings=values, tokenizer=trial.load_tokenizer(str(model_dir)),
                           corpora={"es": corpus or tiny_corpus()})


def test_every_alignment_setting_and_the_pairs_are_in_the_alignment_key(tiny_bert, tmp_path, monkeypatch):
    paths = captured_paths(monkeypatch)
    config = {"model_source": str(tiny_bert), "corpus": "tiny", "pairs": "dico"}

    def key_path(corpus: AlignedCorpus | None = None, **settings) -> Path:
        trial.pretrained_alignment(config, None, alignment_inputs(tiny_bert, tmp_path, corpus, **settings))
        return paths[-1]

    assert {"align_pairs", "align_seed", "align_pooling", "align_sampling", "align_max_length", "keep_lone_prefix",
            "langs", "parallel_subset", "subset_mode"} <= set(trial.ALIGNMENT_SETTINGS)  # what measurement reads
    base = key_path()
    for name in trial.ALIGNMENT_SETTINGS:
        if name != "align_max_length":
            assert key_path(**{name: OTHER_VALUES[name]}) != base, name
    # the pre-trained model is measured at align_max_length_before (the reference's 128), not at the
    # limit after fine-tuning
    assert key_path(align_max_length=64) == base
    for name, value in {**TRAINING_ONLY, "task_max_length": 64}.items():
        assert key_path(**{name: value}) == base, name
    assert key_path(tiny_corpus(repeats=5)) != base  # other sentences and pairs
    changed = tiny_corpus()
    changed.pairs.loc[0, "tgt_index"] = 2
    assert key_path(AlignedCorpus("es", changed.en_words, changed.x_words, changed.pairs)) != base
    assert set(OTHER_VALUES) == set(trial.FEATURE_SETTINGS) | set(trial.ALIGNMENT_SETTINGS)


def test_pretrained_alignment_follows_the_model_weights_in_place(tmp_path):
    from transformers import AutoModel

    model_dir, cache = write_tiny_bert(tmp_path / "model", seed=0), tmp_path / "cache"
    config = {"model_source": str(model_dir), "corpus": "tiny", "pairs": "dico"}
    inputs = alignment_inputs(model_dir, cache)
    first = trial.pretrained_alignment(config, AutoModel.from_pretrained(model_dir), inputs)
    assert trial.pretrained_alignment(config, None, inputs) == first  # a hit: the model is not used
    write_tiny_bert(model_dir, seed=1)  # same folder, new weights
    second = trial.pretrained_alignment(config, AutoModel.from_pretrained(model_dir), inputs)
    assert len(list((cache / "alignment").glob("pretrained-*.parquet"))) == 2
    assert set(first) == set(second) == {"strong", "weak"}
    scan = scan_cache(cache)
    assert scan.foreign == [] and {f.kind for f in scan.files} == {"alignment"}


# --- ownership, listing and pruning ------------------------------------------------------------------


def test_names_the_writers_make_are_the_cache_s_own(tmp_path):
    data, cache = tmp_path / "data", tmp_path / "cache"
    for name, text in {"parallel/tiny/en-es.en": "the cat\n", "parallel/tiny/en-es.es": "el gato\n",
                       "muse/en-es.txt": "cat gato\n", "muse/es-en.txt": "gato cat\n"}.items():
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        (data / name).write_text(text, encoding="utf-8")
    assert len(extract_pairs("tiny", "es", "dico", data_dir=data, cache_dir=cache).pairs) == 1
    from trainables.data import _remote_cache_path

    from trainables.data import parallel_sample_path

    download = _remote_cache_path(get_source("muse"), {"src": "en", "tgt": "es"}, cache, None)
    download.parent.mkdir(parents=True)
    download.write_bytes(b"x")
    for sample, seed in ((1_000_000, 0), (500, 1), (None, 0)):  # a hub corpus' default sample, and others
        path = parallel_sample_path(get_source("opus100"), "es", cache, sample, seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    scan = scan_cache(cache)
    assert scan.foreign == []
    assert sorted({(f.kind, f.role) for f in scan.files}) == [("downloads", "entry"), ("pairs", "entry")]  # no locks
    assert sum(f.kind == "downloads" for f in scan.files) == 4


def make_cache(root: Path) -> dict[str, Path]:
    """A cache with old and new entries, a lock file an earlier version left, an old temporary of a
    killed writer, a young one (a write in progress) and foreign files."""
    files = {
        "old": root / "features" / "udpos-test-en-0123456789abcdef.pt",
        "old_lock": root / "features" / "udpos-test-en-0123456789abcdef.pt.lock",
        "writing": root / "features" / ".udpos-test-es-00112233445566bb.tmp-7-cafebabe.pt",
        "new": root / "pairs" / "ntrex-en-es-all-dico-fedcba9876543210.parquet",
        "old_tmp": root / "alignment" / ".pretrained-00112233445566aa.tmp-123-deadbeef.parquet",
        "old_download": root / "data" / "muse" / "en-es-v1.parquet",
        "foreign_root": root / "notes.txt",
        "foreign_kind": root / "features" / "my-model.pt",  # no key in its name
        "foreign_folder": root / "benchmarks-toy" / "model.safetensors",
    }
    for path in files.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"0123456789")
    old = time.time() - 10 * DAY
    for name in ("old", "old_lock", "old_tmp", "old_download", "foreign_root", "foreign_kind"):
        os.utime(files[name], (old, old))
    return files


def test_prune_deletes_only_old_own_files_and_never_a_write_in_progress(tmp_path):
    files = make_cache(tmp_path)
    dry = prune_cache(tmp_path, 1 * DAY, dry_run=True)
    assert all(path.exists() for path in files.values())
    result = prune_cache(tmp_path, 1 * DAY)
    assert sorted(f.path for f in result.deleted) == sorted(f.path for f in dry.deleted)
    gone = {"old", "old_lock", "old_tmp", "old_download"}
    assert {f.path for f in result.deleted} == {files[name] for name in gone}
    assert {name for name, path in files.items() if not path.exists()} == gone
    assert {f.path for f in result.busy} == {files["writing"]}
    assert set(result.foreign) == {files[n] for n in ("foreign_root", "foreign_kind", "foreign_folder")}
    everything = prune_cache(tmp_path, None)
    assert files["writing"].exists() and not files["new"].exists()  # --all too keeps a young temporary
    assert all(files[n].exists() for n in ("foreign_root", "foreign_kind", "foreign_folder"))
    assert {f.path for f in everything.deleted} == {files["new"]}
    stale = time.time() - cache_module.TEMPORARY_GRACE_S - 60  # its writer died hours ago
    os.utime(files["writing"], (stale, stale))
    assert {f.path for f in prune_cache(tmp_path, None).deleted} == {files["writing"]}
    assert not (tmp_path / "data").exists()  # emptied cache folders go too; foreign ones stay
    assert (tmp_path / "benchmarks-toy").is_dir()


# --- publishing without locks ----------------------------------------------------------------------


def write_text(value: str, path: Path) -> None:
    path.write_text(value)


def test_first_writer_wins_and_a_second_writer_changes_nothing(tmp_path):
    target = tmp_path / "features" / "x-0123456789abcdef.pt"
    assert cache_module.atomic_save("first", target, write_text, overwrite=False) is True
    assert cache_module.atomic_save("second", target, write_text, overwrite=False) is False
    assert target.read_text() == "first"
    assert cache_module.atomic_save("third", target, write_text) is True and target.read_text() == "third"
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # no temporary, no lock


def test_a_trial_that_loses_the_race_uses_the_winner_s_value(tmp_path):
    target = tmp_path / "entry.txt"
    computed: list[str] = []

    def compute_while_another_publishes() -> str:
        computed.append("mine")
        cache_module.atomic_save("theirs", target, write_text, overwrite=False)  # the other trial finished first
        return "mine"

    assert cache_module.cached(target, compute_while_another_publishes, write_text, Path.read_text) == "theirs"
    assert computed == ["mine"] and target.read_text() == "theirs"
    assert cache_module.cached(target, lambda: pytest.fail("a hit computes nothing"), write_text,
                               Path.read_text) == "theirs"


def test_publishing_where_hard_links_are_not_supported(tmp_path, monkeypatch):
    def no_links(source, target):
        raise PermissionError(1, "Operation not permitted")  # e.g. an SMB mount

    monkeypatch.setattr(cache_module.os, "link", no_links)
    target = tmp_path / "entry.txt"
    assert cache_module.atomic_save("first", target, write_text, overwrite=False) is True
    assert cache_module.atomic_save("second", target, write_text, overwrite=False) is False
    assert target.read_text() == "first" and [p.name for p in tmp_path.iterdir()] == ["entry.txt"]


def test_an_entry_pruned_between_the_check_and_the_read_is_computed_again(tmp_path):
    target = tmp_path / "entry.txt"
    target.write_text("old")

    def vanished(path: Path) -> str:
        if path.read_text() == "old":
            path.unlink()  # a prune --all got there first
            raise FileNotFoundError(path)
        return path.read_text()

    assert cache_module.cached(target, lambda: "recomputed", write_text, vanished) == "recomputed"
    assert target.read_text() == "recomputed"


# --- computing an entry once for the cluster: claims ---------------------------------------------

# A trial process: imports the cache, says it is ready, waits for the start signal (so that all
# miss the entry together), then asks for it. Its computation logs its pid first.
CLAIM_WORKER = r"""
import os, sys, time
from pathlib import Path
from trainables import cache

target, log, ready, go, mode = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]), sys.argv[5]
cache.CLAIM_POLL_MAX_S = 0.1
ready.touch()
while not go.exists():
    time.sleep(0.01)

def compute():
    with open(log, "a") as handle:
        handle.write(f"{os.getpid()}\n")
    time.sleep(60 if mode == "hang" else 1)
    if mode == "raise":
        raise RuntimeError("boom")
    return f"value of {os.getpid()}"

print(cache.cached(target, compute, lambda v, p: p.write_text(v), Path.read_text), flush=True)
"""


class Trials:
    """Real processes calling `cached` on one entry (fixture `trials`)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.target = folder / "cache" / "pairs" / "x-0123456789abcdef.parquet"
        self.claim = self.target.with_name(self.target.name + cache_module.CLAIM_SUFFIX)
        self.log = folder / "computed.log"
        self.script = folder / "worker.py"
        self.script.write_text(CLAIM_WORKER)
        self.started: list[subprocess.Popen] = []

    def start(self, n: int = 1, mode: str = "ok") -> list[subprocess.Popen]:
        """`n` processes that miss the entry at the same moment."""
        go = self.folder / f"go-{len(self.started)}"
        ready = [self.folder / f"ready-{len(self.started) + i}" for i in range(n)]
        workers = [subprocess.Popen([sys.executable, str(self.script), str(self.target), str(self.log), str(r),
                                     str(go), mode], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    env={**os.environ, "PYTHONPATH": str(REPO)}) for r in ready]
        self.started += workers
        wait_until(lambda: all(r.exists() for r in ready), "workers ready")
        go.touch()
        return workers

    def computed(self) -> list[int]:
        return [int(line) for line in self.log.read_text().split()] if self.log.exists() else []

    def leftovers(self) -> list[str]:
        return sorted(p.name for p in self.target.parent.iterdir() if p != self.target)


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def finish(worker: subprocess.Popen) -> str:
    out, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    return out.strip()


@pytest.fixture
def trials(tmp_path):
    made = Trials(tmp_path)
    yield made
    for worker in made.started:  # a failed assertion leaves no process behind
        if worker.poll() is None:
            worker.kill()
            worker.communicate()


def foreign_claim(host: str = "node-7", pid: int = 4242) -> str:
    return cache_module.Claim(host, pid, time.time(), "f" * 32).to_json()


def test_processes_that_miss_together_compute_once_and_all_get_the_value(trials):
    workers = trials.start(4)
    values = [finish(worker) for worker in workers]
    (holder,) = trials.computed()  # one computation, not one per process
    assert values == [f"value of {holder}"] * 4 and trials.target.read_text() == values[0]
    assert trials.leftovers() == []  # the claim and every temporary are gone


def test_a_holder_killed_mid_computation_is_taken_over_by_a_waiter(trials):
    (holder,) = trials.start(mode="hang")
    wait_until(lambda: trials.computed() == [holder.pid], "the holder's computation")
    (waiter,) = trials.start()
    time.sleep(0.5)  # the waiter finds a live holder and waits
    assert waiter.poll() is None and trials.computed() == [holder.pid]
    holder.kill()  # SIGKILL: no clean-up; same host, dead pid
    holder.wait()
    assert finish(waiter) == f"value of {waiter.pid}"
    assert trials.computed() == [holder.pid, waiter.pid] and trials.leftovers() == []


def test_a_holder_whose_computation_fails_removes_its_claim_and_a_waiter_computes(trials):
    (holder,) = trials.start(mode="raise")
    wait_until(lambda: trials.computed() == [holder.pid], "the holder's computation")
    (waiter,) = trials.start()
    _, err = holder.communicate(timeout=60)
    assert holder.returncode != 0 and "RuntimeError: boom" in err
    assert finish(waiter) == f"value of {waiter.pid}"
    assert trials.computed() == [holder.pid, waiter.pid] and trials.leftovers() == []


def test_a_claim_of_another_host_not_refreshed_is_taken_over_by_exactly_one_process(trials):
    trials.claim.parent.mkdir(parents=True)
    trials.claim.write_text(foreign_claim())
    old = time.time() - cache_module.CLAIM_STALE_S - 60  # its node died minutes ago
    os.utime(trials.claim, (old, old))
    values = [finish(worker) for worker in trials.start(3)]  # all three judge it stale at once
    (holder,) = trials.computed()
    assert values == [f"value of {holder}"] * 3 and trials.leftovers() == []


def test_a_live_claim_of_another_host_is_waited_for_and_left_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_module, "CLAIM_POLL_MAX_S", 0.05)
    target = tmp_path / "entry.txt"
    claim = tmp_path / "entry.txt.claim"
    claim.write_text(theirs := foreign_claim())  # another host's pid: never probed here
    waits: list[tuple[str, float]] = []

    def other_host_publishes(holder, waited_s: float) -> None:
        waits.append((holder.host, waited_s))
        if len(waits) == 3:
            cache_module.atomic_save("theirs", target, write_text, overwrite=False)

    value = cache_module.cached(target, lambda: pytest.fail("the holder computes it"), write_text, Path.read_text,
                                other_host_publishes)
    assert value == "theirs" and [host for host, _ in waits] == ["node-7"] * 3
    assert waits[0][1] <= waits[1][1] <= waits[2][1]
    assert claim.read_text() == theirs  # not ours: never removed


def test_the_holder_refreshes_its_claim_and_removes_only_its_own(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_module, "CLAIM_HEARTBEAT_S", 0.02)
    target, claim = tmp_path / "entry.txt", tmp_path / "entry.txt.claim"
    seen: dict[str, object] = {}

    def compute() -> str:
        seen["holder"] = cache_module.Claim.parse(claim.read_text())
        old = time.time() - 1000
        os.utime(claim, (old, old))
        wait_until(lambda: claim.stat().st_mtime > old + 500, "a heartbeat", timeout_s=10)
        return "mine"

    assert cache_module.cached(target, compute, write_text, Path.read_text) == "mine"
    holder = seen["holder"]
    assert (holder.host, holder.pid) == (socket.gethostname(), os.getpid()) and not claim.exists()

    other_claim = tmp_path / "other.txt.claim"

    def taken_over_meanwhile() -> str:  # e.g. after a stall longer than CLAIM_STALE_S
        other_claim.write_text(foreign_claim())
        return "mine"

    assert cache_module.cached(tmp_path / "other.txt", taken_over_meanwhile, write_text, Path.read_text) == "mine"
    assert cache_module.Claim.parse(other_claim.read_text()).host == "node-7"  # the new holder's: kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry.txt", "other.txt", "other.txt.claim"]


def test_a_claim_that_races_a_take_over_is_restored(tmp_path):
    claim = tmp_path / "entry.txt.claim"
    claim.write_text(foreign_claim())
    judged = os.stat(claim)
    claim.unlink()  # another waiter took the stale claim over...
    claim.write_text(cache_module._new_claim().to_json())  # ...and claimed the entry anew
    os.utime(claim, ns=(judged.st_atime_ns, judged.st_mtime_ns + 1))
    live = claim.read_text()
    assert cache_module._take_over(claim, judged) is True
    assert claim.read_text() == live and [p.name for p in tmp_path.iterdir()] == ["entry.txt.claim"]
    assert cache_module._take_over(claim, os.stat(claim)) is True  # the one judged: removed
    assert list(tmp_path.iterdir()) == []
    assert cache_module._take_over(claim, judged) is False  # another waiter was first: nothing moved


def test_claims_of_this_host_are_stale_when_their_process_is_gone(tmp_path):
    here = socket.gethostname()
    fresh = os.stat(tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    assert not cache_module._is_stale(cache_module.Claim(here, os.getpid(), 0, "t"), fresh)
    assert cache_module._is_stale(cache_module.Claim(here, int(dead.stdout), 0, "t"), fresh)
    assert not cache_module._is_stale(cache_module.Claim("node-7", int(dead.stdout), 0, "t"), fresh)
    assert not cache_module._is_stale(None, fresh)  # a claim still being written
    old = time.time() - cache_module.CLAIM_STALE_S - 1
    os.utime(tmp_path, (old, old))
    assert cache_module._is_stale(cache_module.Claim(here, os.getpid(), 0, "t"), os.stat(tmp_path))  # pid recycled
    assert cache_module.Claim.parse('{"host": "a"') is None and cache_module.Claim.parse("[]") is None


def test_where_no_hard_links_exist_an_exclusive_create_claims(tmp_path, monkeypatch):
    def no_links(source, target):
        raise PermissionError(1, "Operation not permitted")  # e.g. an SMB mount

    monkeypatch.setattr(cache_module.os, "link", no_links)
    claim = tmp_path / "entry.txt.claim"
    mine = cache_module._try_claim(claim)
    assert mine is not None and cache_module._read_claim(claim)[0] == mine
    assert cache_module._try_claim(claim) is None
    cache_module._release(claim, mine)
    assert cache_module.cached(tmp_path / "entry.txt", lambda: "v", write_text, Path.read_text) == "v"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry.txt"]


def run_command(args: list[str], capsys) -> tuple[int, str, str]:
    code = cache_command.main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cache_command_lists_prunes_and_reports_bad_folders(tmp_path, capsys):
    files = make_cache(tmp_path / "results" / "cache")
    code, out, _ = run_command(["list", "--storage", str(tmp_path / "results")], capsys)
    assert code == 0
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    assert rows["features"][1:3] == ["1", "3"] and rows["alignment"][1:3] == ["0", "1"]
    assert rows["total"][1:3] == ["3", "6"] and "not listed: 3 file(s)" in out

    code, out, _ = run_command(["prune", "--cache-dir", str(tmp_path / "results" / "cache"), "--older-than", "1",
                                "--dry-run"], capsys)
    assert code == 0 and out.startswith("would delete 2 entries (4 files") and files["old"].exists()
    assert "features/udpos-test-en-0123456789abcdef.pt" in out and "left alone: 3 file(s)" in out
    code, out, _ = run_command(["prune", "--storage", f"file://{tmp_path / 'results'}", "--all"], capsys)
    assert code == 0 and out.startswith("deleted 3 entries (5 files")
    assert "kept 1 temporary file(s) younger than 6 h (writes in progress) of: features/udpos-test-es-" in out
    assert files["foreign_kind"].exists() and files["writing"].exists() and not files["new"].exists()

    (tmp_path / "file").write_text("x")
    for args, message in ((["list", "--storage", str(tmp_path / "nowhere")], "no cache at"),
                          (["list", "--storage", str(tmp_path / "file")], "is a file, not a results folder"),
                          (["list", "--cache-dir", str(tmp_path / "file")], "is a file, not a folder"),
                          (["prune", "--storage", str(tmp_path / "results"), "--older-than", "-1"], "days >= 0"),
                          (["list", "--storage", "s3://bucket/results"], "pass it as --cache-dir")):
        code, out, err = run_command(args, capsys)
        assert code == 2 and out == "" and message in err and len(err.strip().splitlines()) == 1, args


def test_python_m_sweep_dispatches_cache(tmp_path):
    (tmp_path / "cache").mkdir()
    done = subprocess.run([sys.executable, "-m", "sweep", "cache", "list", "--storage", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].split()[:3] == ["total", "0", "0"]


def test_cache_folder_is_where_the_sweep_puts_it():
    from sweep.runner import CACHE_FOLDER

    assert cache_command.CACHE_FOLDER == CACHE_FOLDER
