"""Download everything an experiment needs, once, so that offline compute nodes can run it.

Clusters usually have network on a login node only. `python -m trainables.data prefetch
--data-dir DIR EXPERIMENT.py` (run there) writes every data file the experiment's trials read
into DIR in the local layout that `trainables.data`'s readers read (ud/, wikiann/, mnli/, xnli/,
parallel/, muse/: each source's `layout`), and puts every hub model the trials load (their
models, AWESOME's aligner when a trial extracts `awesome` pairs) into the Hugging Face hub cache
at its pinned revision (`trainables.model_files.hub_revision`). Compute nodes then run with
`data_dir=DIR` (or `$SWEEP_DATA_DIR=DIR`) and `HF_HUB_OFFLINE=1`: data files are read locally,
models from the hub cache (`$HF_HOME`, shared by the nodes).

What is already there is skipped: a data file set whose files all exist, a model whose pinned
snapshot the hub cache holds. Files are written atomically (a temporary file, then a rename), so
an interrupted prefetch leaves no partial file that a later run would take for a whole one.

What a trial reads is what the sweep's preflight checks (`trainables.data.required_data`): for
its task the English train and dev splits and the test split of English and each target
language, its parallel corpus for each target language, and for `dico` pairs the MUSE files
the trials' `muse_reverse_file` reads (en-X alone under the default "en-x-copy", the reference's
pipeline; en-X and X-en under "x-en"). Parallel corpora are written as the trials sample them
(`parallel_sample`).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from trainables import data, formats
from trainables.data import DataSource, DataSourceError, Requirement, required_data
from trainables.model_files import CONFIG_FILE, TOKENIZER_FILES, WEIGHT_FILES, hub_revision, is_local_model

log = logging.getLogger(__name__)

# Sources whose remote file is, byte for byte, the local file (the UD release's CoNLL-U, MUSE's
# dictionaries): downloaded as they are. The others are parsed remotely and written in the layout.
RAW_FILE_SOURCES = ("udpos", "muse")
# Files of a model snapshot that trials load: config, tokenizer, PyTorch weights (the
# safetensors weights alone when the repository has them, not its other frameworks' copies).
MODEL_FILE_PATTERNS = ("*.json", "*.txt", "*.model")


@dataclass(frozen=True)
class DataNeed:
    """One data file set to write under the data dir: a requirement and the settings that shape
    it (the parallel sample size)."""

    requirement: Requirement
    parallel_sample: int | None = None

    @property
    def label(self) -> str:
        return self.requirement.label


@dataclass(frozen=True)
class Plan:
    """What an experiment needs: data file sets and hub model ids (-> what names each)."""

    data: tuple[DataNeed, ...]
    models: dict[str, str]


def experiment_plan(path: str | os.PathLike, data_dir: str | os.PathLike) -> Plan:
    """Everything the trials of the experiment file at `path` read, for a data dir `data_dir`.

    The experiment is read with the sweep's own loader (sweep/experiment.py imports no Ray), so
    its grids, model aliases and presets are those the sweep runs."""
    from sweep.experiment import load_experiment, trial_settings

    experiment = load_experiment(path)
    settings = trial_settings(experiment)
    needs: dict[tuple, DataNeed] = {}
    models: dict[str, str] = {}
    for trial in experiment.trials:
        trial_set = settings[trial]
        source = experiment.models[trial.model].source
        if not is_local_model(source):
            models.setdefault(source, f"model {trial.model!r}")
        if trial.pairs == "awesome" and not is_local_model(trial_set.awesome_model):
            models.setdefault(trial_set.awesome_model, "setting awesome_model")
        kinds = [("task", trial.task), ("parallel", trial.corpus)]
        if trial.pairs == "dico":
            kinds.append(("dictionary", "muse"))
        for kind, name in kinds:
            # only the MUSE files the setting reads: "en-x-copy" never reads an X-en file
            for requirement in required_data(kind, name, trial_set.langs, data_dir,
                                             muse_reverse_file=trial_set.muse_reverse_file):
                sample = trial_set.parallel_sample if requirement.source.role == "parallel" else None
                needs.setdefault((requirement.source.name, requirement.key, sample), DataNeed(requirement, sample))
    return Plan(tuple(needs.values()), models)


# --- data -----------------------------------------------------------------------------------------


def _targets(need: DataNeed, data_dir: Path) -> list[Path]:
    requirement = need.requirement
    return [data_dir / r for r in requirement.source.relative_paths(**requirement.key_dict)]


def _atomic_write(paths: Sequence[Path], write: Callable[[Sequence[Path]], Any]) -> None:
    """`write(temporary paths)`, then each temporary file renamed to its path: no partial file
    is ever seen under the final name."""
    temporary = []
    try:
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
            os.close(handle)
            temporary.append(Path(name))
        write(temporary)
        for part, path in zip(temporary, paths):
            os.replace(part, path)
    finally:
        for part in temporary:
            part.unlink(missing_ok=True)


def _one_line_field(value: str) -> str:
    """A text field with the characters that would break a line or a column replaced by spaces
    (the readers split lines on "\\n" and columns on tabs); tokenizers read them as spaces too."""
    return value.replace("\t", " ").replace("\r", " ").replace("\n", " ")


def _write_nli(path: Path, examples: Iterable[dict[str, str]]) -> None:
    # Not formats.write_nli_tsv, which refuses empty fields: MultiNLI has a few empty hypotheses,
    # which the hub loader keeps and read_nli_tsv reads back as they are.
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        for example in examples:
            out.write(f"{_one_line_field(example['premise'])}\t{_one_line_field(example['hypothesis'])}"
                      f"\t{example['label']}\n")


def _write_parallel(en_path: Path, x_path: Path, pairs: Iterable[tuple[str, str]]) -> None:
    # Not formats.write_line_aligned, which refuses empty lines and tabs: corpora have both, and
    # read_line_aligned reads them back as they are.
    with open(en_path, "w", encoding="utf-8", newline="\n") as en, open(x_path, "w", encoding="utf-8", newline="\n") as x:
        for en_line, x_line in pairs:
            en.write(en_line.replace("\r", " ").replace("\n", " ") + "\n")
            x.write(x_line.replace("\r", " ").replace("\n", " ") + "\n")


def _fetch_examples(need: DataNeed, data_dir: Path, cache_dir: Path | None) -> Any:
    """The data of a need, from its remote (a hub dataset at its pinned revision)."""
    requirement = need.requirement
    source, key = requirement.source, requirement.key_dict
    if source.role == "parallel":
        # The public loader: the corpus's remote reader and its sample, as a trial without local
        # files would read it (data_dir lacks the files, so the remote is read).
        return data.load_parallel(source.name, key["lang"], data_dir=data_dir, cache_dir=cache_dir,
                                  sample=need.parallel_sample)
    if source.fetch is None:
        raise DataSourceError(f"{requirement.label}: no remote source for it; expected layout: {source.layout}")
    labels = {} if requirement.labels is None else {"labels": requirement.labels}
    return source.fetch(None, **key, **labels)


def _write_need(need: DataNeed, data_dir: Path, cache_dir: Path | None) -> None:
    requirement = need.requirement
    source, key = requirement.source, requirement.key_dict
    paths = _targets(need, data_dir)
    remote = source.remote(**key) if source.remote else source.name
    if data.is_offline() and not (source.hub_dataset and data.hub_cache_allowed()):
        raise DataSourceError(f"{requirement.label}: cannot download {remote}: {data._offline_reason()}")
    try:
        if source.name in RAW_FILE_SOURCES:
            _atomic_write(paths, lambda parts: data._download(remote, parts[0]))
        else:
            rows = _fetch_examples(need, data_dir, cache_dir)
            _atomic_write(paths, lambda parts: _serialise(source, parts, rows))
    except DataSourceError:
        raise
    except Exception as error:  # network, hub or format errors: one line naming both places
        raise DataSourceError(f"{requirement.label}: loading {remote} into {paths[0]} failed: "
                              f"{' '.join(f'{type(error).__name__}: {error}'.split())}") from error
    # Read back through the local reader: a file that a trial could not read fails here.
    data._read_local(source, key, paths, requirement.labels)


def _serialise(source: DataSource, paths: Sequence[Path], rows: Any) -> None:
    if source.role == "parallel":
        _write_parallel(paths[0], paths[1], rows)
    elif source.role == "dictionary":
        formats.write_muse(paths[0], rows)
    elif rows and "premise" in rows[0]:
        _write_nli(paths[0], rows)
    else:
        formats.write_token_tsv(paths[0], rows)


# --- models ---------------------------------------------------------------------------------------


def snapshot_download(repo_id: str, **kwargs: Any) -> str:
    """`huggingface_hub.snapshot_download` (one name to stand in for in tests)."""
    from huggingface_hub import snapshot_download as download

    return download(repo_id, **kwargs)


def _weight_patterns(model_id: str, revision: str) -> list[str]:
    """The weight files to fetch: safetensors when the repository has them, else PyTorch's."""
    from huggingface_hub import HfApi

    files = {s.rfilename for s in (HfApi().model_info(model_id, revision=revision).siblings or ())}
    if any(name.endswith(".safetensors") for name in files):
        return ["model.safetensors", "model.safetensors.index.json", "model-*.safetensors"]
    return ["pytorch_model.bin", "pytorch_model.bin.index.json", "pytorch_model-*.bin"]


def model_in_cache(model_id: str, revision: str) -> bool:
    """Whether the hub cache holds the pinned snapshot of `model_id` with a config, a tokenizer
    and weights (what `from_pretrained(model_id, revision=revision)` reads offline)."""
    try:
        folder = Path(snapshot_download(model_id, revision=revision, local_files_only=True))
    except Exception:  # not in the cache (LocalEntryNotFoundError and the like)
        return False
    present = {path.name for path in folder.iterdir()} if folder.is_dir() else set()
    return CONFIG_FILE in present and bool(present & set(TOKENIZER_FILES)) and bool(present & set(WEIGHT_FILES))


def fetch_model(model_id: str) -> Path:
    """Download the files a trial loads of `model_id`, at its pinned revision, into the hub cache."""
    revision = hub_revision(model_id) or "main"
    patterns = [*MODEL_FILE_PATTERNS, *_weight_patterns(model_id, revision)]
    return Path(snapshot_download(model_id, revision=revision, allow_patterns=patterns))


# --- the command ----------------------------------------------------------------------------------


@dataclass
class Outcome:
    fetched: list[str]
    present: list[str]
    failed: list[str]


def prefetch(plan: Plan, data_dir: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
             dry_run: bool = False, report: Callable[[str], None] = print) -> Outcome:
    """Write every data file set of `plan` that `data_dir` lacks, and every hub model the hub
    cache lacks; one `report` line per item fetched or failed. Failures do not stop the others."""
    root = Path(data_dir).expanduser()
    cache = Path(cache_dir).expanduser() if cache_dir is not None else None
    outcome = Outcome([], [], [])
    for need in plan.data:
        if all(path.is_file() for path in _targets(need, root)):
            outcome.present.append(need.label)
            continue
        if dry_run:
            report(f"would fetch {need.label} -> {_targets(need, root)[0]}")
            outcome.fetched.append(need.label)
            continue
        try:
            _write_need(need, root, cache)
        except ValueError as error:  # DataSourceError included
            outcome.failed.append(" ".join(str(error).split()))
            report(f"error: {outcome.failed[-1]}")
            continue
        outcome.fetched.append(need.label)
        report(f"fetched {need.label} -> {_targets(need, root)[0]}")
    for model_id, what in sorted(plan.models.items()):
        revision = hub_revision(model_id) or "main"
        label = f"model {model_id}@{revision}"
        if model_in_cache(model_id, revision):
            outcome.present.append(label)
            continue
        if dry_run:
            report(f"would fetch {label} ({what}) into the hub cache")
            outcome.fetched.append(label)
            continue
        try:
            fetch_model(model_id)
        except Exception as error:  # hub errors: one line, the other items still fetched
            outcome.failed.append(f"{what}: {label}: {' '.join(f'{type(error).__name__}: {error}'.split())}")
            report(f"error: {outcome.failed[-1]}")
            continue
        outcome.fetched.append(label)
        report(f"fetched {label} ({what}) into the hub cache")
    return outcome


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trainables.data",
        description="Download what an experiment needs into a data dir (and models into the hub cache).")
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("prefetch", help="download an experiment's data and models, skipping what is there")
    command.add_argument("experiment", help="an experiment file (experiments/*.py)")
    command.add_argument("--data-dir", required=True, help="where to write the data files (the local layout)")
    command.add_argument("--cache-dir", default=None, help="the sweep's download cache (default: as trials use)")
    command.add_argument("--dry-run", action="store_true", help="list what would be fetched; fetch nothing")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        plan = experiment_plan(args.experiment, args.data_dir)
    except ValueError as error:  # ExperimentError, unknown names, bad settings: one line
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    outcome = prefetch(plan, args.data_dir, args.cache_dir, dry_run=args.dry_run)
    verb = "to fetch" if args.dry_run else "fetched"
    print(f"{len(outcome.fetched)} {verb}, {len(outcome.present)} already there, {len(outcome.failed)} failed")
    return 1 if outcome.failed else 0
