"""Data sources: task splits, parallel corpora and bilingual dictionaries, from local files or remote.

Every source is one entry of `DATA_SOURCES` (name -> `DataSource`): where its files lie under the
data dir, how to read them, and how to fetch the same data remotely (Hugging Face hub or a pinned
URL). Loading goes, in order:

1. the local file(s) under the data dir (setting `data_dir`, else `$SWEEP_DATA_DIR`), if present;
2. a previous download, cached (parsed) under the cache dir (setting `cache_dir`, else
   `$SWEEP_CACHE_DIR`, else `~/.cache/alignment-sweep`);
3. the remote source, unless offline (`$SWEEP_OFFLINE=1`, or the hub's `HF_HUB_OFFLINE=1` /
   `HF_DATASETS_OFFLINE=1`); the parsed result is cached atomically for the next trial.

When none works, one `DataSourceError` line names the file looked for, the layout expected and
why remote loading did not happen or failed. The local layout is that of `../shared/data`
(see docs/architecture.md, "Data dir").

Sources and the paper (Gaschi et al. 2023, §3.2 and App. B): POS = Universal Dependencies (English
EWT; Arabic PADT and Spanish/French/Russian/Chinese GSD test sets), NER = WikiANN (XTREME's PAN-X
split), NLI = MultiNLI (English training) and XNLI (test), realignment corpora = OPUS-100 and
multiUN, dictionaries = MUSE full dictionaries in both directions (the paper's code fetched en-X
twice by mistake, and read that copy as X-en: by default so do we, `muse_reverse_file`).
"""
from __future__ import annotations

import itertools
import logging
import os
import random
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

from trainables.cache import (
    cached,
    load_jsonl,
    load_string_pairs,
    save_jsonl,
    save_string_pairs,
)
from trainables.formats import (
    DataSourceError,
    iter_line_aligned,
    read_conllu,
    read_lines,
    read_muse,
    read_nli_tsv,
    read_token_tsv,
)
from trainables.registry import did_you_mean, lookup, unknown_name
from trainables.tasks import NLI_LABELS, UPOS_TAGS, WIKIANN_TAGS, Task, get_task

log = logging.getLogger(__name__)
T = TypeVar("T")

DATA_DIR_ENV = "SWEEP_DATA_DIR"
CACHE_DIR_ENV = "SWEEP_CACHE_DIR"
OFFLINE_ENV = "SWEEP_OFFLINE"
HUB_OFFLINE_ENVS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
DEFAULT_CACHE_DIR = Path("~/.cache/alignment-sweep")
DOWNLOAD_TIMEOUT_S = 60

# Pinned Universal Dependencies release: the treebanks' files at this git tag. UD 2.7 is what the
# reference code read through the hub's `universal_dependencies` loader (its configs en_ewt,
# ar_padt, es_gsd, fr_gsd, ru_gsd, zh_gsd; zh_gsd is UD_Chinese-GSD, the traditional-script
# treebank, not zh_gsdsimp): EWT 12,543 / 2,002 / 2,077 sentences, paper Table 1. Part of the
# cache names (the udpos source's `version`), so files of another release are never mixed in.
UD_RELEASE_TAG = "r2.7"
UD_URL = "https://raw.githubusercontent.com/UniversalDependencies/{repo}/{tag}/{code}-ud-{split}.conllu"
MUSE_URL = "https://dl.fbaipublicfiles.com/arrival/dictionaries/{src}-{tgt}.txt"
# NTREX-128 (the local stand-in corpus): WMT19 English news test set and its translations, read
# at one commit of github.com/MicrosoftTranslator/NTREX (2024-02-29), not the moving `main`. The
# six files read here are unchanged since the initial release (c9f006f, 2022) and byte-identical
# to ../shared/data/parallel/ntrex. Part of the downloads' cache names.
NTREX_REVISION = "8561f6a622db9edad1217683e5c83daefd8bb2bf"
NTREX_URL = "https://raw.githubusercontent.com/MicrosoftTranslator/NTREX/{revision}/NTREX-128/{name}.txt"
NTREX_LANG_CODES = {"en": "eng", "ar": "arb", "es": "spa", "fr": "fra", "ru": "rus", "zh": "zho-CN"}

WIKIANN_HUB = "unimelb-nlp/wikiann"
MNLI_HUB = "nyu-mll/multi_nli"
XNLI_HUB = "facebook/xnli"
OPUS100_HUB = "Helsinki-NLP/opus-100"
# The paper's "multiUN" is the UN Parallel Corpus v1.0 (Ziemski et al. 2016, the UNv1.0.* files of
# the reference's download_resources/multi_un.sh), on the hub as un_pc (configs "ar-en", "en-es"...),
# not the hub's Helsinki-NLP/multiun (Eisele & Chen 2010's MultiUN, another corpus: nothing reads it).
UN_PC_HUB = "Helsinki-NLP/un_pc"
# Both realignment corpora are reservoir-sampled to this many sentence pairs a language
# (realignment_with_multi_un.sh: reservoir_sampling.py --num_samples 1000000; OPUS-100's train
# splits hold at most 1M pairs, so it comes whole). The reference's sampler was unseeded; a fixed
# seed makes the sample reproducible.
PARALLEL_SAMPLE = 1_000_000
PARALLEL_SAMPLE_SEED = 0

# Hub datasets are read at one pinned commit of their repository, so that a later push to the
# hub cannot silently change a split. The revision is part of the source's `version`, hence of
# the downloads' cache names and of every cache key built from the source (featurised task data).
# A hub dataset not listed here (a plug-in's) is read at "main" (HUB_BRANCH): it follows the
# hub's default branch, and its cached copies cannot tell two states of it apart.
HUB_BRANCH = "main"
HUB_DATASET_REVISIONS: dict[str, str] = {
    MNLI_HUB: "da70db2af9d09693783c3320c4249840212ee221",
    XNLI_HUB: "b8dd5d7af51114dbda02c0e3f6133f332186418e",
    # the Parquet conversion (one folder per language, e.g. en/train-00000-of-00001.parquet)
    WIKIANN_HUB: "f0a3be6dc5564c0cc4150bb660144800a1f539d4",
    # "Update dataset card (#6)", main's head on the hub's tree page (805090d, 20 commits), after
    # "Convert dataset to Parquet (#5)": one folder a language pair ("en-es"...). The full sha is
    # the one `datasets` names its cache folders after when it resolves main (".../en-zh/0.0.0/805090dc...")
    OPUS100_HUB: "805090dc28bf78897da9641cdf08b61287580df9",
    # "Convert dataset to Parquet (#5)", squash-merged into main: the hub's tree pages show it as
    # the last commit of main's language-pair folders ("en-fr", "ru-zh": Parquet train shards)
    UN_PC_HUB: "99a0348ce711ec6b30d5f18d70c0d30c971011c7",
}


def hub_dataset_revision(dataset_id: str) -> str:
    """The pinned revision (commit sha or branch) at which a hub dataset is read."""
    return HUB_DATASET_REVISIONS.get(dataset_id, HUB_BRANCH)

SPLITS = ("train", "dev", "test")
LANGUAGES = ("en", "ar", "es", "fr", "ru", "zh")  # the paper's languages (English = source)

# A split's name on the hub, where it differs from ours.
HUB_SPLIT_NAMES = {"dev": "validation"}
MNLI_HUB_SPLITS = {"train": "train", "dev": "validation_matched"}


@dataclass(frozen=True)
class UdTreebank:
    code: str  # file prefix, e.g. "en_ewt"
    repo: str  # GitHub repository under UniversalDependencies
    splits: tuple[str, ...] = SPLITS


UD_TREEBANKS: dict[str, UdTreebank] = {
    "en": UdTreebank("en_ewt", "UD_English-EWT"),
    "ar": UdTreebank("ar_padt", "UD_Arabic-PADT"),
    "es": UdTreebank("es_gsd", "UD_Spanish-GSD"),
    "fr": UdTreebank("fr_gsd", "UD_French-GSD"),
    "ru": UdTreebank("ru_gsd", "UD_Russian-GSD"),
    "zh": UdTreebank("zh_gsd", "UD_Chinese-GSD"),
}
XNLI_LANGS = ("ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh")


# --- settings: directories and offline mode ----------------------------------------------------


def resolve_data_dir(data_dir: str | Path | None = None) -> Path | None:
    """The local data dir: the setting, else `$SWEEP_DATA_DIR`, else None (remote only)."""
    value = data_dir if data_dir not in (None, "") else os.environ.get(DATA_DIR_ENV) or None
    return Path(value).expanduser() if value is not None else None


def resolve_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """The cache dir: the setting, else `$SWEEP_CACHE_DIR`, else `~/.cache/alignment-sweep`."""
    value = cache_dir if cache_dir not in (None, "") else os.environ.get(CACHE_DIR_ENV) or None
    return Path(value).expanduser() if value is not None else DEFAULT_CACHE_DIR.expanduser()


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def is_offline() -> bool:
    """True when remote loading is disabled ($SWEEP_OFFLINE, or the hub's own offline flags)."""
    return any(_env_flag(name) for name in (OFFLINE_ENV, *HUB_OFFLINE_ENVS))


def hub_cache_allowed() -> bool:
    """True when hub datasets and models may still be read from the Hugging Face caches although
    `is_offline()`: the hub's own flags (HF_HUB_OFFLINE, HF_DATASETS_OFFLINE) make `datasets`
    and `transformers` read what their caches hold instead of the network, so a compute node
    without network runs on what a login node downloaded; only $SWEEP_OFFLINE forbids that too.
    URL downloads (UD, MUSE) are refused under any of the flags."""
    return not _env_flag(OFFLINE_ENV)


def hub_datasets_cache() -> Path:
    """Where `datasets` keeps prepared hub datasets ($HF_DATASETS_CACHE, else under $HF_HOME)."""
    if os.environ.get("HF_DATASETS_CACHE"):
        return Path(os.environ["HF_DATASETS_CACHE"]).expanduser()
    return Path(os.environ.get("HF_HOME") or "~/.cache/huggingface").expanduser() / "datasets"


def hub_dataset_cached(dataset_id: str) -> bool:
    """Whether the `datasets` cache holds a prepared copy of `dataset_id` (some config), which its
    offline mode reads: the folder `org___name` that `datasets` names after the repository."""
    from datasets.naming import camelcase_to_snakecase

    org, _, name = dataset_id.rpartition("/")
    folder = hub_datasets_cache() / "___".join(part for part in (org, camelcase_to_snakecase(name)) if part)
    return folder.is_dir() and any(folder.iterdir())


def _offline_reason() -> str:
    flags = [name for name in (OFFLINE_ENV, *HUB_OFFLINE_ENVS) if _env_flag(name)]
    return f"remote loading disabled ({', '.join(f'{f}=1' for f in flags)})"


# --- subsets -------------------------------------------------------------------------------------

SUBSET_MODES = ("first", "random")


@dataclass(frozen=True)
class Subset:
    """The first, or a seeded-random, `n` examples of a source (None: all), for quick runs.

    A random subset keeps the examples in their original order.
    """

    n: int | None = None
    mode: str = "first"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n is not None and (not isinstance(self.n, int) or self.n < 0):
            raise ValueError(f"subset size n={self.n!r}: expected a non-negative int or None")
        if self.mode not in SUBSET_MODES:
            raise ValueError(f"subset mode {self.mode!r}: valid are {', '.join(SUBSET_MODES)}")

    def apply(self, items: Sequence[T]) -> list[T]:
        if self.n is None or self.n >= len(items):
            return list(items)
        if self.mode == "first":
            return list(items[: self.n])
        chosen = sorted(random.Random(self.seed).sample(range(len(items)), self.n))
        return [items[index] for index in chosen]

    @property
    def first_only(self) -> int | None:
        """How many leading examples suffice (a remote stream can stop there), else None."""
        return self.n if (self.n is not None and self.mode == "first") else None

    @property
    def key(self) -> str:
        """Names the subset in cache file names."""
        if self.n is None:
            return "all"
        return f"first{self.n}" if self.mode == "first" else f"random{self.n}-seed{self.seed}"


def reservoir_sample(pairs: Iterable[T], n: int | None, seed: int) -> list[T]:
    """A uniform sample of `n` items of a stream of unknown length, in one pass, holding `n` items.

    Algorithm R as the reference ran it on multiUN (subscripts/reservoir_sampling.py): the first
    `n` items fill the reservoir; item i (from 0) then replaces slot `randrange(i + 1)` when that
    is below `n`. The sample is returned in slot order (the reference wrote its slots in order),
    so a stream of at most `n` items comes back whole and in its own order. The reference used
    Python's unseeded global generator; here `random.Random(seed)`, so a sample can be remade.
    `n=None`: the whole stream.
    """
    if n is None:
        return list(pairs)
    if n < 0:
        raise ValueError(f"reservoir sample size n={n!r}: expected a non-negative int or None")
    stream = iter(pairs)
    reservoir = list(itertools.islice(stream, n))
    if len(reservoir) < n:
        return reservoir
    draw = random.Random(seed).randrange
    for i, item in enumerate(stream, start=n):
        j = draw(i + 1)
        if j < n:
            reservoir[j] = item
    return reservoir


# --- remote fetchers -----------------------------------------------------------------------------


def _download(url: str, dest: Path) -> None:
    """Fetch `url` into `dest` (a temporary file of the caller)."""
    log.info("downloading %s", url)
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(dest, "wb") as out:
        while chunk := response.read(1 << 20):
            out.write(chunk)


def _download_and_read(url: str, read: Callable[[Path], T], suffix: str) -> T:
    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp) / f"download{suffix}"
        _download(url, dest)
        return read(dest)


def _hub_rows(dataset_id: str, config: str | None, split: str, limit: int | None) -> Iterable[dict]:
    """Rows of a hub dataset split at its pinned revision (`hub_dataset_revision`); streams and
    stops after `limit` rows when given. Under the hub's offline flags `datasets` reads its cache,
    which holds prepared splits, not streams: the split is then read from there and cut."""
    from datasets import load_dataset

    revision = hub_dataset_revision(dataset_id)
    log.info("loading %s (%s, %s) at revision %s from the hub", dataset_id, config, split, revision)
    if limit is not None and not is_offline():
        stream = load_dataset(dataset_id, config, split=split, streaming=True, revision=revision)
        return list(itertools.islice(stream, limit))
    rows = load_dataset(dataset_id, config, split=split, revision=revision)
    return rows if limit is None else rows.select(range(min(limit, len(rows))))


def _reads_hub(dataset_id: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Marks a fetcher as reading the hub dataset `dataset_id` (`DataSource.hub_dataset`): its
    downloads are named after the pinned revision, and the hub's offline flags let it read the
    `datasets` cache."""

    def mark(fetch: Callable[..., T]) -> Callable[..., T]:
        fetch.hub_dataset = dataset_id  # type: ignore[attr-defined]
        return fetch

    return mark


def _label_names(rows: Any, column: str, labels: Sequence[str], where: str) -> list[str]:
    """ClassLabel names of a column when the dataset declares them, else `labels` (the reading
    task's label set, which tasks.py keeps in the hub's ClassLabel order); names outside `labels`
    are an error, as a local file's would be."""
    features = getattr(rows, "features", None) or {}
    feature = features.get(column)
    names = getattr(feature, "names", None) or getattr(getattr(feature, "feature", None), "names", None)
    unknown = [name for name in names or () if name not in labels]
    if unknown:
        raise DataSourceError(f"{where}: label {unknown[0]!r} is not one of {' '.join(labels)}")
    return list(names) if names else list(labels)


def _ud_url(split: str, lang: str) -> str:
    treebank = UD_TREEBANKS[lang]
    return UD_URL.format(repo=treebank.repo, tag=UD_RELEASE_TAG, code=treebank.code, split=split)


def _fetch_udpos(limit: int | None, split: str, lang: str, labels: Sequence[str] = UPOS_TAGS) -> list[dict]:
    return _download_and_read(_ud_url(split, lang), lambda path: read_conllu(path, labels, multiword_tokens=True),
                              ".conllu")


@_reads_hub(WIKIANN_HUB)
def _fetch_wikiann(limit: int | None, split: str, lang: str, labels: Sequence[str] = WIKIANN_TAGS) -> list[dict]:
    rows = _hub_rows(WIKIANN_HUB, lang, HUB_SPLIT_NAMES.get(split, split), None)
    tags = _label_names(rows, "ner_tags", labels, f"hub {WIKIANN_HUB} ({lang})")
    return [{"words": list(r["tokens"]), "labels": [tags[t] for t in r["ner_tags"]]} for r in rows]


def _nli_rows(rows: Any, labels: Sequence[str], where: str) -> list[dict]:
    names = _label_names(rows, "label", labels, where)
    # MultiNLI marks examples without a gold label with -1: they are not usable.
    return [
        {"premise": r["premise"], "hypothesis": r["hypothesis"], "label": names[r["label"]]}
        for r in rows
        if r["label"] >= 0
    ]


@_reads_hub(MNLI_HUB)
def _fetch_mnli(limit: int | None, split: str, lang: str, labels: Sequence[str] = NLI_LABELS) -> list[dict]:
    return _nli_rows(_hub_rows(MNLI_HUB, None, MNLI_HUB_SPLITS[split], None), labels, f"hub {MNLI_HUB}")


@_reads_hub(XNLI_HUB)
def _fetch_xnli(limit: int | None, split: str, lang: str, labels: Sequence[str] = NLI_LABELS) -> list[dict]:
    return _nli_rows(_hub_rows(XNLI_HUB, lang, split, None), labels, f"hub {XNLI_HUB} ({lang})")


def _hub_pair_config(lang: str) -> str:
    """OPUS-100 and multiUN name their configs by the sorted language pair: "ar-en", "en-es"."""
    return "-".join(sorted(("en", lang)))


def _stream_hub_parallel(dataset_id: str, lang: str) -> Iterator[tuple[str, str]]:
    """(English, `lang`) pairs of a hub translation dataset's train split, streamed at its pinned
    revision: only the rows in flight are held, whatever the corpus' size."""
    from datasets import load_dataset

    revision = hub_dataset_revision(dataset_id)
    config = _hub_pair_config(lang)
    log.info("streaming %s (%s, train, revision %s) from the hub", dataset_id, config, revision)
    for row in load_dataset(dataset_id, config, split="train", streaming=True, revision=revision):
        translation = row["translation"]
        yield translation["en"], translation[lang]


def _fetch_hub_parallel(dataset_id: str) -> Callable[..., list[tuple[str, str]]]:
    def fetch(limit: int | None, lang: str, sample: int | None = PARALLEL_SAMPLE,
              seed: int = PARALLEL_SAMPLE_SEED) -> list[tuple[str, str]]:
        stream = _stream_hub_parallel(dataset_id, lang)
        if limit is not None:
            stream = itertools.islice(stream, limit)
        return reservoir_sample(stream, sample, seed)

    return fetch


def _hub_parallel_remote(dataset_id: str) -> Callable[[str], str]:
    return lambda lang: f"hub {dataset_id} ({_hub_pair_config(lang)}, train, revision {hub_dataset_revision(dataset_id)})"


def _hub_task_version(dataset_id: str, parsing: str = "1") -> str:
    """A hub task source's version: its parsing version and the revision read (12 hex digits of a
    commit, or the branch), so a new pin gives new download names and new feature cache keys."""
    return f"{parsing}.{hub_dataset_revision(dataset_id)[:12]}"


def _hub_parallel_version(dataset_id: str) -> str:
    """Names a cached hub sample: the revision read, the default sample size and the seed."""
    return f"{hub_dataset_revision(dataset_id)[:12]}-reservoir{PARALLEL_SAMPLE}-seed{PARALLEL_SAMPLE_SEED}"


def _ntrex_url(lang: str) -> str:
    """The pinned NTREX file of one language (`en`: the English source side)."""
    name = "newstest2019-src.eng" if lang == "en" else f"newstest2019-ref.{NTREX_LANG_CODES.get(lang, lang)}"
    return NTREX_URL.format(revision=NTREX_REVISION, name=name)


def _fetch_ntrex(limit: int | None, lang: str, sample: int | None = PARALLEL_SAMPLE,
                 seed: int = PARALLEL_SAMPLE_SEED) -> list[tuple[str, str]]:
    en = _download_and_read(_ntrex_url("en"), read_lines, ".txt")
    x = _download_and_read(_ntrex_url(lang), read_lines, ".txt")
    if len(en) != len(x):
        raise DataSourceError(f"NTREX en has {len(en)} lines but {lang} has {len(x)}")
    return reservoir_sample(list(zip(en, x))[:limit], sample, seed)


def _fetch_muse(limit: int | None, src: str, tgt: str) -> list[tuple[str, str]]:
    return _download_and_read(MUSE_URL.format(src=src, tgt=tgt), read_muse, ".txt")


# --- the registry ----------------------------------------------------------------------------------


def _check_lang(lang: str, langs: Iterable[str], what: str) -> None:
    langs = list(langs)
    if lang not in langs:
        raise ValueError(f"{what}: language {lang!r} not available{did_you_mean(lang, langs)}; known: {', '.join(langs)}")


def _check_split(split: str, splits: Iterable[str], what: str) -> None:
    splits = list(splits)
    if split not in splits:
        raise ValueError(f"{what}: split {split!r} not available{did_you_mean(split, splits)}; known: {', '.join(splits)}")


def _validate_udpos(split: str, lang: str) -> None:
    _check_lang(lang, UD_TREEBANKS, "udpos")
    _check_split(split, UD_TREEBANKS[lang].splits, f"udpos ({UD_TREEBANKS[lang].repo})")


def _validate_wikiann(split: str, lang: str) -> None:
    _check_split(split, SPLITS, "wikiann")


def _validate_mnli(split: str, lang: str) -> None:
    _check_split(split, MNLI_HUB_SPLITS, "mnli")
    _check_lang(lang, ["en"], "mnli (MultiNLI is English only)")


def _validate_xnli(split: str, lang: str) -> None:
    _check_split(split, ["test"], "xnli (XNLI test sets; training and dev data come from MultiNLI)")
    _check_lang(lang, XNLI_LANGS, "xnli")


def _validate_parallel(lang: str) -> None:
    if lang == "en" or not lang:
        raise ValueError(f"parallel corpora pair English with another language, got lang={lang!r}")


def _validate_ntrex(lang: str) -> None:
    _check_lang(lang, [code for code in NTREX_LANG_CODES if code != "en"], "ntrex")


def _validate_dictionary(src: str, tgt: str) -> None:
    if src == tgt:
        raise ValueError(f"a bilingual dictionary needs two languages, got {src}-{tgt}")


@dataclass(frozen=True)
class DataSource:
    """One data source: its local files (relative to the data dir) and its remote loader.

    `local_files(**key)` gives the relative paths (all must exist), `read_local(paths, **key)`
    parses them; `fetch(limit, **key)` loads the same data remotely (None: local only), stopping
    after `limit` examples when the remote can stream. A task source's `read_local` and `fetch`
    also take `labels=`, the label set of the task that reads it, which its examples must use.
    """

    name: str
    role: str  # "task" (list of example dicts), "parallel" or "dictionary" (list of (str, str))
    layout: str  # what the local files look like, for error messages
    local_files: Callable[..., list[str]]
    read_local: Callable[..., Any]
    validate: Callable[..., None]
    fetch: Callable[..., Any] | None = None
    remote: Callable[..., str] | None = None  # describes the remote (URL or hub id) for a key
    version: str = "1"  # part of cache names: change when the remote or the parsing changes

    def relative_paths(self, **key: str) -> list[str]:
        self.validate(**key)
        return self.local_files(**key)

    @property
    def hub_dataset(self) -> str | None:
        """The hub dataset its remote loader reads (None: a URL download, or local only)."""
        return getattr(self.fetch, "hub_dataset", None)

    @property
    def revision(self) -> str | None:
        """The pinned revision of its hub dataset (None when it reads no hub dataset)."""
        return hub_dataset_revision(self.hub_dataset) if self.hub_dataset else None


def _parallel_source(
    name: str,
    fetch: Callable[..., list[tuple[str, str]]] | None = None,
    remote: Callable[..., str] | None = None,
    version: str = "1",
    validate: Callable[..., None] = _validate_parallel,
) -> DataSource:
    return DataSource(
        name=name,
        role="parallel",
        layout=f"parallel/{name}/en-X.en and en-X.X, line-aligned UTF-8 text, one sentence a line",
        local_files=lambda lang: [f"parallel/{name}/en-{lang}.en", f"parallel/{name}/en-{lang}.{lang}"],
        # Read line by line into the default sample: checking a corpus of any size (preflight)
        # holds at most PARALLEL_SAMPLE pairs.
        read_local=lambda paths, lang: reservoir_sample(iter_line_aligned(*paths), PARALLEL_SAMPLE,
                                                        PARALLEL_SAMPLE_SEED),
        validate=validate,
        fetch=fetch,
        remote=remote,
        version=version,
    )


DATA_SOURCES: dict[str, DataSource] = {
    "udpos": DataSource(
        name="udpos",
        role="task",
        layout="ud/{treebank}-ud-{split}.conllu, CoNLL-U (e.g. ud/en_ewt-ud-train.conllu)",
        local_files=lambda split, lang: [f"ud/{UD_TREEBANKS[lang].code}-ud-{split}.conllu"],
        read_local=lambda paths, split, lang, **labels: read_conllu(paths[0], **labels, multiword_tokens=True),
        validate=_validate_udpos,
        fetch=_fetch_udpos,
        remote=_ud_url,
        version=f"{UD_RELEASE_TAG}-all-lines",  # cached downloads keep ranges and empty nodes, marked
    ),
    "wikiann": DataSource(
        name="wikiann",
        role="task",
        layout="wikiann/{split}-{lang}.tsv, 'token<TAB>IOB2 tag' lines, blank line between sentences",
        local_files=lambda split, lang: [f"wikiann/{split}-{lang}.tsv"],
        read_local=lambda paths, split, lang, **labels: read_token_tsv(paths[0], lang, **labels),
        validate=_validate_wikiann,
        fetch=_fetch_wikiann,
        remote=lambda split, lang: f"hub {WIKIANN_HUB} ({lang}, {HUB_SPLIT_NAMES.get(split, split)})",
        version=_hub_task_version(WIKIANN_HUB),
    ),
    "mnli": DataSource(
        name="mnli",
        role="task",
        layout="mnli/{train,dev}.tsv, 'premise<TAB>hypothesis<TAB>label' lines",
        local_files=lambda split, lang: [f"mnli/{split}.tsv"],
        read_local=lambda paths, split, lang, **labels: read_nli_tsv(paths[0], **labels),
        validate=_validate_mnli,
        fetch=_fetch_mnli,
        remote=lambda split, lang: f"hub {MNLI_HUB} ({MNLI_HUB_SPLITS[split]})",
        version=_hub_task_version(MNLI_HUB),
    ),
    "xnli": DataSource(
        name="xnli",
        role="task",
        layout="xnli/test-{lang}.tsv, 'premise<TAB>hypothesis<TAB>label' lines",
        local_files=lambda split, lang: [f"xnli/test-{lang}.tsv"],
        read_local=lambda paths, split, lang, **labels: read_nli_tsv(paths[0], **labels),
        validate=_validate_xnli,
        fetch=_fetch_xnli,
        remote=lambda split, lang: f"hub {XNLI_HUB} ({lang}, test)",
        version=_hub_task_version(XNLI_HUB),
    ),
    # OPUS-100's train split (Zhang et al. 2020), as the reference's download_resources/opus100.sh.
    "opus100": _parallel_source(
        "opus100",
        _fetch_hub_parallel(OPUS100_HUB),
        _hub_parallel_remote(OPUS100_HUB),
        version=_hub_parallel_version(OPUS100_HUB),
    ),
    # The UN Parallel Corpus v1.0 (the paper's "multiUN"; see UN_PC_HUB).
    "multiun": _parallel_source(
        "multiun",
        _fetch_hub_parallel(UN_PC_HUB),
        _hub_parallel_remote(UN_PC_HUB),
        version=_hub_parallel_version(UN_PC_HUB),
    ),
    "ntrex": _parallel_source(
        "ntrex",
        _fetch_ntrex,
        _ntrex_url,
        version=NTREX_REVISION[:12],  # the commit read names the cached download
        validate=_validate_ntrex,
    ),
    "muse": DataSource(
        name="muse",
        role="dictionary",
        layout="muse/{src}-{tgt}.txt, 'source<TAB or space>target' lines (MUSE full dictionaries)",
        local_files=lambda src, tgt: [f"muse/{src}-{tgt}.txt"],
        read_local=lambda paths, src, tgt: read_muse(paths[0]),
        validate=_validate_dictionary,
        fetch=_fetch_muse,
        remote=lambda src, tgt: MUSE_URL.format(src=src, tgt=tgt),
    ),
}

PARALLEL_CORPORA = tuple(name for name, source in DATA_SOURCES.items() if source.role == "parallel")


def get_source(name: str) -> DataSource:
    return lookup(DATA_SOURCES, name, "data source")


def task_source(task: str | Task, split: str) -> DataSource:
    """The data source that holds `split` of `task` (the task entry's `sources`)."""
    task = get_task(task)
    _check_split(split, task.sources, task.name)
    return get_source(task.sources[split])


def _reader_options(labels: Sequence[str] | None) -> dict[str, tuple[str, ...]]:
    """Keyword arguments that pass a task's label set to a task source's reader and fetcher;
    none for other sources (and for a direct read, which checks the format's own tag set)."""
    return {} if labels is None else {"labels": tuple(labels)}


# --- the generic loader ------------------------------------------------------------------------------

# How each role's parsed data is cached after a download: suffix, save, load.
_SERIALISERS: dict[str, tuple[str, Callable[[Any, Path], None], Callable[[Path], Any]]] = {
    "task": (".jsonl", save_jsonl, load_jsonl),
    "parallel": (".parquet", save_string_pairs, load_string_pairs),
    "dictionary": (".parquet", save_string_pairs, load_string_pairs),
}


def _remote_cache_path(source: DataSource, key: dict[str, str], cache_root: Path, limit: int | None) -> Path:
    suffix = _SERIALISERS[source.role][0]
    name = "-".join(key[k] for k in sorted(key)) + (f"-first{limit}" if limit is not None else "")
    # A hub source's version names the revision it reads: another commit, another file.
    return cache_root / "data" / source.name / f"{name}-v{source.version}{suffix}"


def _one_line(error: BaseException) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())


def _missing_message(source: DataSource, key: dict[str, str], data_root: Path | None, reason: str) -> str:
    relative = source.relative_paths(**key)
    if data_root is None:
        looked = f"{', '.join(relative)} (no data dir: set data_dir or ${DATA_DIR_ENV})"
    else:
        absent = [str(data_root / r) for r in relative if not (data_root / r).is_file()]
        looked = f"{', '.join(absent)} not found"
    what = " ".join(f"{k}={v}" for k, v in key.items())
    return f"{source.name} ({what}): {looked}; expected layout: {source.layout}; {reason}"


def _read_local(
    source: DataSource, key: dict[str, str], paths: list[Path], labels: Sequence[str] | None = None
) -> Any:
    """The local files parsed by the source's reader (checking `labels`, a task's label set); a
    file with no example is an error (a trial would otherwise train or score on nothing), naming
    the file and the language."""
    examples = source.read_local(paths, **key, **_reader_options(labels))
    if not examples:
        what = " ".join(f"{k}={v}" for k, v in key.items())
        files = " and ".join(str(p) for p in paths)
        raise DataSourceError(f"{files}: no {_EXAMPLE_NAMES[source.role]} in it ({source.name} {what})")
    return examples


_EXAMPLE_NAMES = {"task": "example", "parallel": "sentence pair", "dictionary": "dictionary entry"}


def load_source(
    source: DataSource,
    key: dict[str, str],
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    limit: int | None = None,
    labels: Sequence[str] | None = None,
) -> Any:
    """Load one source for `key`: local files first, then a cached download, then the remote.

    `limit` (a number of leading examples) only bounds what a streaming remote fetches; local
    files are read whole. `labels`: the label set of the task that reads a task source (its
    reader and fetcher reject other labels); None for other sources.
    """
    relative = source.relative_paths(**key)
    data_root = resolve_data_dir(data_dir)
    if data_root is not None and all((data_root / r).is_file() for r in relative):
        return _read_local(source, key, [data_root / r for r in relative], labels)
    if source.fetch is None:
        raise DataSourceError(_missing_message(source, key, data_root, "no remote source for it"))
    extension, save, load = _SERIALISERS[source.role]
    path = _remote_cache_path(source, key, resolve_cache_dir(cache_dir), limit)
    if path.is_file():
        return load(path)
    if is_offline() and not (source.hub_dataset and hub_cache_allowed()):
        raise DataSourceError(_missing_message(source, key, data_root, _offline_reason()))

    def fetch() -> Any:
        try:
            return source.fetch(limit, **key, **_reader_options(labels))
        except DataSourceError:
            raise
        except Exception as error:  # network, hub or format errors: one line naming both places
            remote = source.remote(**key) if source.remote else "remote"
            reason = f"loading {remote} failed: {_one_line(error)}"
            if is_offline():  # only the hub caches could be read
                reason += f" ({_offline_reason()}: read from the datasets cache {hub_datasets_cache()})"
            raise DataSourceError(_missing_message(source, key, data_root, reason)) from error

    return cached(path, fetch, save, load)


def local_source_files(source: DataSource, key: dict[str, str], data_dir: str | Path | None = None) -> list[Path]:
    """The local files `load_source` reads for `key`, resolved; empty when it would use a download
    (whose cache name carries the source's version). Cache keys hash these files' content."""
    relative = source.relative_paths(**key)
    data_root = resolve_data_dir(data_dir)
    if data_root is None or not all((data_root / r).is_file() for r in relative):
        return []
    return [(data_root / r).resolve() for r in relative]


# --- public loaders ------------------------------------------------------------------------------


def load_task_split(
    task: str | Task,
    split: str,
    lang: str,
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    subset: Subset | None = None,
) -> list[dict]:
    """Examples of one task split in one language, from the source the task names for `split`,
    every label checked against the task's label set.

    udpos / wikiann: {"words": [...], "labels": [...]} (UPOS tags / IOB2 PER, ORG, LOC tags);
    xnli: {"premise", "hypothesis", "label"} with label entailment | neutral | contradiction.
    For xnli, "train" and "dev" are MultiNLI's (English), "test" is XNLI's test set in `lang`.
    """
    task = get_task(task)
    source = task_source(task, split)
    subset = subset or Subset()
    examples = load_source(source, {"split": split, "lang": lang}, data_dir, cache_dir, labels=task.labels)
    return subset.apply(examples)


def parallel_source(corpus: str, data_dir: str | Path | None = None) -> DataSource:
    """The registered corpus `corpus`, or a local-only one if parallel/`corpus` exists."""
    if corpus in PARALLEL_CORPORA:
        return DATA_SOURCES[corpus]
    data_root = resolve_data_dir(data_dir)
    local_dir = data_root / "parallel" / corpus if data_root is not None else None
    if local_dir is not None and local_dir.is_dir():
        return _parallel_source(corpus)
    registered = list(PARALLEL_CORPORA)
    local_root = data_root / "parallel" if data_root is not None else None
    local = sorted(p.name for p in local_root.iterdir()) if local_root is not None and local_root.is_dir() else []
    where = str(local_dir) if local_dir is not None else f"parallel/{corpus} (no data dir: set data_dir or ${DATA_DIR_ENV})"
    raise DataSourceError(
        f"unknown parallel corpus {corpus!r}{did_you_mean(corpus, registered + local)}: not registered "
        f"({', '.join(registered)}) and no local directory {where}; expected layout: "
        f"parallel/{corpus}/en-X.en and en-X.X, line-aligned"
    )



def parallel_sample_path(source: DataSource, lang: str, cache_dir: str | Path | None, sample: int | None,
                         seed: int) -> Path:
    """Where a hub corpus' sample is cached: named by the source's version (the revision read,
    the default size and seed), plus the size and seed when they differ from the default."""
    path = _remote_cache_path(source, {"lang": lang}, resolve_cache_dir(cache_dir), None)
    if (sample, seed) == (PARALLEL_SAMPLE, PARALLEL_SAMPLE_SEED):
        return path
    size = "all" if sample is None else str(sample)
    return path.with_name(f"{path.stem}-sample{size}-seed{seed}{path.suffix}")


def load_parallel(
    corpus: str,
    lang: str,
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    subset: Subset | None = None,
    sample: int | None = PARALLEL_SAMPLE,
    seed: int = PARALLEL_SAMPLE_SEED,
) -> list[tuple[str, str]]:
    """(English line, `lang` line) pairs of a parallel corpus, raw text: a reservoir sample of
    `sample` pairs (None: all) with `seed` (`reservoir_sample`), then `subset` of that sample.

    A local directory parallel/`corpus` is used when present, even for opus100 / multiun, read
    line by line; otherwise registered corpora stream from the hub at their pinned revision
    (OPUS-100: Helsinki-NLP/opus-100; multiUN: the UN Parallel Corpus, Helsinki-NLP/un_pc;
    configs named by the sorted pair, e.g. "ar-en", "en-es"; train split), and the sample is
    cached. Memory is bounded by the sample, not the corpus. A subset is taken from the sample,
    so even a small one streams the whole corpus once (then the cached sample serves it).
    """
    subset = subset or Subset()
    source = parallel_source(corpus, data_dir)
    key = {"lang": lang}
    relative = source.relative_paths(**key)
    data_root = resolve_data_dir(data_dir)
    if data_root is not None and all((data_root / r).is_file() for r in relative):
        paths = [data_root / r for r in relative]
        pairs = reservoir_sample(iter_line_aligned(*paths), sample, seed)
        if not pairs:
            raise DataSourceError(f"{paths[0]} and {paths[1]}: no sentence pair in it ({source.name} lang={lang})")
        return subset.apply(pairs)
    if source.fetch is None:
        raise DataSourceError(_missing_message(source, key, data_root, "no remote source for it"))
    path = parallel_sample_path(source, lang, cache_dir, sample, seed)
    if path.is_file():
        return subset.apply(load_string_pairs(path))
    if is_offline():
        raise DataSourceError(_missing_message(source, key, data_root, _offline_reason()))

    def fetch() -> list[tuple[str, str]]:
        try:
            return source.fetch(None, lang=lang, sample=sample, seed=seed)
        except DataSourceError:
            raise
        except Exception as error:  # network, hub or format errors: one line naming both places
            remote = source.remote(lang=lang) if source.remote else "remote"
            reason = f"loading {remote} failed: {_one_line(error)}"
            raise DataSourceError(_missing_message(source, key, data_root, reason)) from error

    return subset.apply(cached(path, fetch, save_string_pairs, load_string_pairs))


MUSE_REVERSE_FILES = ("en-x-copy", "x-en")
# The reference's pipeline (docs/protocol.md, MUSE X-en file): the one default of the setting
# `muse_reverse_file`, for trials (Settings, PairContext) and direct calls alike.
MUSE_REVERSE_FILE_DEFAULT = "en-x-copy"


def muse_file_key(src: str, tgt: str, reverse_file: str = MUSE_REVERSE_FILE_DEFAULT) -> dict[str, str]:
    """The MUSE file read for the `src`-`tgt` direction.

    "x-en": the real X-en file. "en-x-copy": the en-X file stands in for X-en, as in the
    reference: its `download_resources/muse_dictionaries.sh` saved en-X under the X-en name, and
    `data.get_dicos` read that copy as X-en, so its maps hold the en-X entries both ways round
    (docs/protocol.md, MUSE X-en file).
    """
    if reverse_file not in MUSE_REVERSE_FILES:
        raise ValueError(f"setting muse_reverse_file={reverse_file!r} must be one of {MUSE_REVERSE_FILES}")
    if reverse_file == "en-x-copy" and tgt == "en":
        return {"src": "en", "tgt": src}
    return {"src": src, "tgt": tgt}


def load_dictionary(
    src: str,
    tgt: str,
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    reverse_file: str = MUSE_REVERSE_FILE_DEFAULT,
) -> dict[str, frozenset[str]]:
    """`src` word -> its `tgt` translations, from both MUSE files: src-tgt and (inverted) tgt-src.

    `reverse_file` says which file is read for the X-en direction (`muse_file_key`): the real one
    ("x-en"), or the en-X file in its place ("en-x-copy", the reference's pipeline, whose maps
    then hold each en-X entry in both directions, keyed by words of both languages). Words are as
    in the files (MUSE is lowercase).
    """
    muse = get_source("muse")
    forward = load_source(muse, muse_file_key(src, tgt, reverse_file), data_dir, cache_dir)
    backward = load_source(muse, muse_file_key(tgt, src, reverse_file), data_dir, cache_dir)
    translations: dict[str, set[str]] = {}
    for word, translation in itertools.chain(forward, ((b, a) for a, b in backward)):
        translations.setdefault(word, set()).add(translation)
    return {word: frozenset(words) for word, words in translations.items()}


# --- checking before a sweep ----------------------------------------------------------------------

REQUIREMENT_KINDS = ("task", "parallel", "dictionary")


@dataclass(frozen=True)
class Requirement:
    """One data file set a sweep will read: a source and its key (split/lang, lang, src/tgt), and
    for a task's split the task's label set, which its reader checks."""

    source: DataSource
    key: tuple[tuple[str, str], ...]
    labels: tuple[str, ...] | None = None

    @property
    def key_dict(self) -> dict[str, str]:
        return dict(self.key)

    @property
    def label(self) -> str:
        return f"{self.source.name} " + " ".join(f"{k}={v}" for k, v in self.key)


def required_data(
    kind: str, name: str, langs: Iterable[str], data_dir: str | Path | None = None,
    muse_reverse_file: str = MUSE_REVERSE_FILE_DEFAULT,
) -> list[Requirement]:
    """What trials over target `langs` read for one need:
    kind "task" (name = a task of trainables.tasks.TASKS): the splits the task names
    (`Task.data_needs`: for the paper's tasks English train and dev sets, test sets in English
    and every target language); kind "parallel" (name = corpus): en-X for every target language;
    kind "dictionary" (name = muse): for every target language the files `load_dictionary`
    reads with the setting `muse_reverse_file` (`muse_file_key`): en-X and X-en ("x-en"), or
    en-X alone ("en-x-copy", the reference's pipeline, which never reads an X-en file).
    Unknown names raise (ValueError / DataSourceError, with "did you mean").
    """
    targets = [lang for lang in langs if lang != "en"]
    needs: list[tuple[DataSource, dict[str, str]]] = []
    labels = None
    if kind == "task":
        task = get_task(name)
        labels = task.labels
        for split, lang in task.data_needs(targets):
            needs.append((task_source(task, split), {"split": split, "lang": lang}))
    elif kind == "parallel":
        source = parallel_source(name, data_dir)
        needs.extend((source, {"lang": lang}) for lang in targets)
    elif kind == "dictionary":
        source = get_source(name)
        if source.role != "dictionary":
            raise ValueError(f"data source {name!r} is not a dictionary")
        for lang in targets:
            forward = muse_file_key("en", lang, muse_reverse_file)
            backward = muse_file_key(lang, "en", muse_reverse_file)
            needs.extend((source, key) for key in ([forward] if backward == forward else [forward, backward]))
    else:
        raise ValueError(unknown_name("requirement kind", kind, REQUIREMENT_KINDS))
    for source, key in needs:
        source.validate(**key)
    return [Requirement(source, tuple(key.items()), labels) for source, key in needs]


def _availability(need: Requirement, data_root: Path | None, cache_root: Path) -> str:
    """"local", "cached", "hub-cache" (offline, in the datasets cache), "remote" (will be fetched)
    or "missing"."""
    key = need.key_dict
    relative = need.source.relative_paths(**key)
    if data_root is not None and all((data_root / r).is_file() for r in relative):
        return "local"
    if _remote_cache_path(need.source, key, cache_root, None).is_file():
        return "cached"
    if need.source.fetch is None:
        return "missing"
    if is_offline():  # a hub dataset that the datasets cache holds still loads
        hub = need.source.hub_dataset
        return "hub-cache" if hub and hub_cache_allowed() and hub_dataset_cached(hub) else "missing"
    return "remote"


def _unavailable_reason(source: DataSource) -> str:
    if source.fetch is None:
        return "no remote source for it"
    if source.hub_dataset and hub_cache_allowed():
        return (f"{_offline_reason()} and the datasets cache {hub_datasets_cache()} holds no copy of "
                f"{source.hub_dataset} (run `python -m trainables.data prefetch` where there is network)")
    return _offline_reason()


def describe_missing(
    kind: str,
    name: str,
    langs: Iterable[str],
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    muse_reverse_file: str = MUSE_REVERSE_FILE_DEFAULT,
) -> list[str]:
    """One line per required file that is neither local, nor downloaded already, nor fetchable
    (offline, or a local-only source); empty when everything can be read. Reads no network.
    `muse_reverse_file`: the setting, which decides the dictionary files read (`required_data`)."""
    try:
        needs = required_data(kind, name, langs, data_dir, muse_reverse_file)
    except ValueError as error:  # DataSourceError included: unknown corpus, unsupported language
        return [" ".join(str(error).split())]
    data_root, cache_root = resolve_data_dir(data_dir), resolve_cache_dir(cache_dir)
    lines = []
    for need in needs:
        if _availability(need, data_root, cache_root) == "missing":
            lines.append(_missing_message(need.source, need.key_dict, data_root, _unavailable_reason(need.source)))
    return lines


def describe_unreadable(
    kind: str,
    name: str,
    langs: Iterable[str],
    data_dir: str | Path | None = None,
    already_read: set[Path] | None = None,
    muse_reverse_file: str = MUSE_REVERSE_FILE_DEFAULT,
) -> list[str]:
    """One line per required local file that its reader rejects (bad column counts, labels,
    encoding, no example...): every local file is read whole, so that a bad file is found before
    the sweep rather than in its trials. Files in `already_read` are skipped and the files read
    are added to it. Names that `describe_missing` reports (unknown corpus...) give no line here.
    Nothing is cached. `muse_reverse_file` as in `describe_missing`."""
    try:
        needs = required_data(kind, name, langs, data_dir, muse_reverse_file)
    except ValueError:
        return []
    data_root = resolve_data_dir(data_dir)
    if data_root is None:
        return []
    done = already_read if already_read is not None else set()
    lines = []
    for need in needs:
        paths = [data_root / r for r in need.source.relative_paths(**need.key_dict)]
        if not all(p.is_file() for p in paths) or all(p in done for p in paths):
            continue
        done.update(paths)
        try:
            _read_local(need.source, need.key_dict, paths, need.labels)
        except ValueError as error:  # DataSourceError included
            lines.append(" ".join(str(error).split()))
    return lines


def check_available(
    kind: str,
    name: str,
    langs: Iterable[str],
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    muse_reverse_file: str = MUSE_REVERSE_FILE_DEFAULT,
) -> None:
    """Raise one `DataSourceError` naming every required file that cannot be had
    (`muse_reverse_file` as in `describe_missing`)."""
    missing = describe_missing(kind, name, langs, data_dir, cache_dir, muse_reverse_file)
    if missing:
        raise DataSourceError(f"{len(missing)} data file(s) unavailable: " + " | ".join(missing))


if __name__ == "__main__":  # python -m trainables.data prefetch --data-dir DIR EXPERIMENT.py
    from trainables.prefetch import main

    raise SystemExit(main())
