"""One trial of the sweep, as one linear function in named phases (no Ray here).

    load -> measure pretrained alignment -> realign (`before`) -> fine-tune (with `joint`)
         -> measure fine-tuned alignment and scores

Everything resumable lives in one dict, the checkpoint (`state`): which phases are done, their
metrics, and the live training state of the phase in progress (model, optimizer, scheduler,
RNG, realignment stream position). `report(metrics, state)` hands progress out; with a state,
the caller stores it as the checkpoint. Given back that state, `run_trial` continues where it
stopped: a finished phase is never run again. A finished trial's last checkpoint is its small
final state (`final_state`: metrics, no tensors), so no weights outlive it unless asked for
(`config["model_dir"]`, the sweep's `--keep-models`).

Work shared between trials (word pairs, featurised task data, the pre-trained model's alignment)
is cached on disk under `cache_dir` (atomic and without locks: one process claims an entry and
computes it, the others wait for its file), so concurrent trials compute it once.
"""
from __future__ import annotations

import functools
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import pandas as pd
import torch
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from trainables.alignment import MEASUREMENT_VERSION, alignment_metrics, before_finetuning, measure_alignment
from trainables.cache import (
    MODEL_PARTS,
    TOKENIZER_PARTS,
    cache_key,
    cached,
    file_fingerprint,
    model_fingerprint,
    settings_parts,
)
from trainables.data import Subset, load_task_split, local_source_files, resolve_cache_dir, task_source
from trainables.finetuning import (
    cross_lingual_transfer,
    evaluate,
    fine_tune,
    realign_sequentially,
    schedule_steps,
    sequential_realign_steps,
)
from trainables.model_files import pretrained_kwargs
from trainables.models import model_family
from trainables.pairs import AlignedCorpus, PairContext, extract_pairs, release_encoders
from trainables.realignment import RealignMethod, get_realign_method, input_language
from trainables.runtime import configure_threads, resolve_device, reuse_freed_memory, seed_everything
from trainables.segmentation import segmentation_id
from trainables.settings import Settings, make_settings
from trainables.shuffle import items_read
from trainables.tasks import FEATURES_VERSION, Features, Task, get_task

Reporter = Callable[[Mapping[str, Any], "Mapping[str, Any] | None"], None]
STATE_VERSION = 1
SOURCE_LANG = "en"
SOURCE_DEV = f"{SOURCE_LANG}_dev"  # key of the English dev set among the evaluated sets (score/en_dev)
REPORT_EVERY_STEPS = 25  # training progress reports (loss, step, epoch) between checkpoints
REALIGN_CHECKPOINT_EVERY = 500  # sequential realignment can be long (XNLI: ~24.5k steps)
# Pair extraction and alignment measurement report units done of total at most this often: each
# report is a Tune result (callbacks, loggers, the driver's view), and they can last hours.
PROGRESS_REPORT_SECONDS = 5.0
# (what is being done, e.g. "pairs es 3/5"; units done; units total, 0: unknown)
PhaseProgress = Callable[[str, int, int], None]


@dataclass
class TrialInputs:
    """What the `load` phase produces: everything read from disk, nothing trained."""

    settings: Settings
    task: Task
    tokenizer: PreTrainedTokenizerBase
    train: Features
    test: dict[str, Features]  # by language, English first
    corpora: dict[str, AlignedCorpus]  # by target language


def new_state(config: Mapping[str, Any]) -> dict[str, Any]:
    return {"version": STATE_VERSION, "config": dict(config), "done": [], "metrics": {}, "starts": 0}


# What a finished trial's checkpoint keeps: enough to report its metrics again, no tensors.
FINAL_STATE_KEYS: tuple[str, ...] = ("version", "config", "done", "metrics", "starts")


def final_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """The checkpoint of a finished trial: its done phases, metrics and starts, without the model,
    optimizer and scheduler state of the last phase (about 12 bytes a parameter). Reported as the
    last checkpoint, it makes Tune (CheckpointConfig num_to_keep) delete the big one."""
    return {**{key: state[key] for key in FINAL_STATE_KEYS}, "in_progress": None}


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, folder: str | Path) -> Path:
    """The fine-tuned model as safetensors (weights only, no optimizer) with its tokenizer, so
    that `from_pretrained(folder)` loads it. Written beside and renamed into place: a folder that
    exists is whole."""
    folder = Path(folder)
    partial = folder.with_name(f"{folder.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)  # safetensors: the default since transformers 4.35, the only format in 5
    tokenizer.save_pretrained(partial)
    shutil.rmtree(folder, ignore_errors=True)  # a start that died after saving, then ran again
    partial.rename(folder)
    return folder


# --- phase: load ---------------------------------------------------------------------------------

# The alignment sample takes at most align_pairs sentences (each holds a pair), and draws its
# shuffled sentences in rounds: 4x leaves room for both (alignment._sample_sentences).
ALIGN_SAMPLE_MARGIN = 4


def paired_sentences_read(method: RealignMethod, n_train: int, settings: Settings) -> int:
    """How many paired sentences of each language's corpus a trial may read, from the head of the
    corpus: its streams are buffer-shuffled (shuffle.items_read), so D draws come from the first
    D + 10,000. The realignment stream draws realign_batch_size sentence pairs a step, languages in
    turn, for the sequential steps, or for one epoch of joint training when its stream restarts
    each epoch (all epochs otherwise); the alignment sample at most ALIGN_SAMPLE_MARGIN x align_pairs."""
    per_epoch, total, _ = schedule_steps(n_train, settings)
    if method.sequential:
        steps = sequential_realign_steps(n_train, settings)
    elif method.joint:
        steps = per_epoch if settings.joint_realign_stream == "restart" else total
    else:
        steps = 0
    per_language = math.ceil(steps * settings.realign_batch_size / len(settings.langs))
    return items_read(max(per_language, ALIGN_SAMPLE_MARGIN * settings.align_pairs))



def load_inputs(config: Mapping[str, Any], settings: Settings, on_progress: PhaseProgress | None = None) -> TrialInputs:
    """Task data and word pairs. `on_progress(part, done, total)` follows pair extraction, the
    long part: `part` names the language ("pairs es 3/5"), done/total are the pair source's units.
    A pair source that extracts only what trials read (AWESOME) extracts the head of the corpus
    this trial reads (`paired_sentences_read`)."""
    task = get_task(config["task"])
    tokenizer = load_tokenizer(config["model_source"])
    subset = lambda n: Subset(n, settings.subset_mode, settings.subset_seed)  # noqa: E731
    train = featurize_cached(task, tokenizer, config, settings, "train", SOURCE_LANG, subset(settings.train_subset))
    test = {
        lang: featurize_cached(task, tokenizer, config, settings, "test", lang, subset(settings.test_subset))
        for lang in (SOURCE_LANG, *settings.langs)
    }
    if settings.ctl_reference_split == "dev":  # Eq. 1's m_en: the English development set
        test[SOURCE_DEV] = featurize_cached(task, tokenizer, config, settings, "dev", SOURCE_LANG,
                                            subset(settings.test_subset))
    context = PairContext.from_settings(settings)
    min_paired = paired_sentences_read(get_realign_method(config["realign"]), len(train), settings)
    corpora = {}
    for number, lang in enumerate(settings.langs, start=1):
        part = f"pairs {lang} {number}/{len(settings.langs)}"
        if on_progress is not None:
            on_progress(part, 0, 0)  # the language is known before the pair source counts its units
        corpora[lang] = extract_pairs(config["corpus"], lang, config["pairs"], subset=subset(settings.parallel_subset),
                                      context=context, min_paired=min_paired,
                                      on_progress=None if on_progress is None else functools.partial(on_progress, part))
    release_encoders()  # an aligner's encoder (awesome) is not needed past extraction
    return TrialInputs(settings, task, tokenizer, train, test, corpora)


@functools.lru_cache(maxsize=4)
def load_tokenizer(source: str) -> PreTrainedTokenizerBase:
    """A model's tokenizer, read once per process: XLM-R's takes ~3 s to load, and Ray workers
    (like a plain loop) run trial after trial."""
    return AutoTokenizer.from_pretrained(source, **pretrained_kwargs(source))  # a hub id at its pinned revision


# Every setting that changes featurised task data (the subset comes as its own argument). Training
# settings stay out, so trials that differ only in them share their features.
FEATURE_SETTINGS: tuple[str, ...] = ("task_max_length", "nli_max_length", "long_sentences", "keep_lone_prefix",
                                     "lone_prefix_takes_room", "ner_zh_words", "ud_multiword_tokens")


def featurize_cached(
    task: Task, tokenizer: PreTrainedTokenizerBase, config: Mapping[str, Any], settings: Settings,
    split: str, lang: str, subset: Subset,
) -> Features:
    """Tokenised task data, shared by every trial with the same tokenizer files, task slice
    (its input files' content) and featurisation settings."""
    source = task_source(task, split)
    files = local_source_files(source, {"split": split, "lang": lang}, settings.data_dir)
    key = cache_key(tokenizer=model_fingerprint(config["model_source"], TOKENIZER_PARTS), task=task.feature_key(),
                    split=split, lang=lang, subset=subset.key, data=file_fingerprint(files),
                    source=f"{source.name}-v{source.version}", settings=settings_parts(settings, FEATURE_SETTINGS),
                    segmentation=segmentation_id(lang), version=FEATURES_VERSION)
    path = resolve_cache_dir(settings.cache_dir) / "features" / f"{task.name}-{split}-{lang}-{key}.pt"

    def compute() -> Features:
        examples = load_task_split(task, split, lang, settings.data_dir, settings.cache_dir, subset)
        if task.preprocess is not None:  # after subsetting, as the reference (token_classification.py)
            examples = task.preprocess(examples, lang, settings)
        return task.featurize(tokenizer, examples, settings)

    return cached(path, compute, lambda value, p: torch.save(value, p),
                  lambda p: torch.load(p, weights_only=False))


def load_model(config: Mapping[str, Any], inputs: TrialInputs) -> PreTrainedModel:
    model = inputs.task.load_model(config["model_source"], **pretrained_kwargs(config["model_source"]))
    return model.to(resolve_device(inputs.settings))


# --- phase: measure ------------------------------------------------------------------------------


def measure(model: PreTrainedModel, inputs: TrialInputs, finetuned: bool,
            on_progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Alignment at every layer, strong and weak, both directions: {kind: {direction: {lang: {layer}}}}.
    Before fine-tuning (`finetuned=False`) at the reference's length limit for it
    (`alignment.before_finetuning`). `on_progress(done, total)`: sentences encoded (`measure_alignment`)."""
    settings = inputs.settings if finetuned else before_finetuning(inputs.settings)
    table = measure_alignment(model, inputs.tokenizer, inputs.corpora, settings, on_progress=on_progress)
    return alignment_metrics(table)


# Every setting that changes the measured alignment besides the model and the corpora's content.
ALIGNMENT_SETTINGS: tuple[str, ...] = ("align_pairs", "align_seed", "align_pooling", "align_sampling",
                                       "align_max_length", "align_max_length_before", "keep_lone_prefix",
                                       "lone_prefix_takes_room", "langs", "parallel_subset",
                                       "subset_mode", "subset_seed", "precision")


def pretrained_alignment(config: Mapping[str, Any], model: PreTrainedModel, inputs: TrialInputs,
                         on_progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """The pre-trained model's alignment, shared by all trials of that model (its files' content)
    and evaluation pairs (their content), whatever the task: the task head does not change the
    encoder's hidden states. `on_progress` as in `measure` (not called when it is cached)."""
    s = before_finetuning(inputs.settings)
    # the corpora's content keys come from their extraction (pairs.AlignedCorpus.fingerprint): no
    # hashing of a 1M-line corpus, no sampling, on a cache hit
    key = cache_key(model=model_fingerprint(config["model_source"], MODEL_PARTS), corpus=config["corpus"],
                    pairs=config["pairs"], corpora={lang: c.fingerprint for lang, c in inputs.corpora.items()},
                    settings=settings_parts(s, ALIGNMENT_SETTINGS), device=resolve_device(s).type,
                    version=MEASUREMENT_VERSION)
    path = resolve_cache_dir(s.cache_dir) / "alignment" / f"pretrained-{key}.parquet"
    table = cached(path, lambda: measure_alignment(model, inputs.tokenizer, inputs.corpora, s, on_progress=on_progress),
                   lambda value, p: value.to_parquet(p, index=False), pd.read_parquet)
    return alignment_metrics(table)


def scores_and_transfer(model: PreTrainedModel, inputs: TrialInputs) -> dict[str, Any]:
    """Scores on every evaluated set and CTL (Eq. 1) against `ctl_reference_split`'s English score:
    the test set (the reference code, `score/en`) or the dev set (the paper's text, `score/en_dev`)."""
    scores = {}
    for name, features in inputs.test.items():
        # a model whose outputs depend on the input's language (realign="linear") is told it
        with input_language(model, name if name in inputs.settings.langs else None):
            scores[name] = evaluate(model, inputs.tokenizer, inputs.task, features, inputs.settings)
    languages = {lang: scores[lang] for lang in (SOURCE_LANG, *inputs.settings.langs)}
    reference = scores[SOURCE_DEV] if inputs.settings.ctl_reference_split == "dev" else scores[SOURCE_LANG]
    return {"score": scores, "ctl": cross_lingual_transfer(languages, SOURCE_LANG, reference=reference)}


# --- the trial -----------------------------------------------------------------------------------


class ThrottledProgress:
    """A long phase's progress, handed to `send(phase, part, done, total)` at most once every
    `every` seconds of wall time. A new phase, part or total is sent at once: the live view then
    shows what is being done and of how many units as soon as it is known."""

    def __init__(self, send: Callable[[str, str, int, int], None], every: float = PROGRESS_REPORT_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.send, self.every, self.clock = send, every, clock
        self.last: tuple[str, str, int, int] | None = None
        self.sent_at = float("-inf")

    def __call__(self, phase: str, part: str, done: int, total: int) -> None:
        now = self.clock()
        last = self.last
        news = last is None or (phase, part, total) != (last[0], last[1], last[3])
        if news or (done != last[2] and now - self.sent_at >= self.every):
            self.last, self.sent_at = (phase, part, done, total), now
            self.send(phase, part, done, total)

    def phase(self, phase: str) -> Callable[[int, int], None]:
        """The `on_progress(done, total)` of one phase without parts (alignment measurement)."""
        return lambda done, total: self(phase, "", done, total)


def run_trial(config: Mapping[str, Any], checkpoint: Mapping[str, Any] | None, report: Reporter) -> dict[str, Any]:
    """Run (or continue) one trial; returns its final metrics (also the last `report`, with
    `final_state` as its checkpoint). `config["model_dir"]`, if given: where the fine-tuned model
    is saved (`save_model`); it changes no number."""
    settings = make_settings(config.get("settings", {}), model=config["model"])
    configure_threads(settings)
    reuse_freed_memory()  # no page faults for the large blocks of every step (trainables.runtime)
    method = get_realign_method(config["realign"])
    seed = int(config["seed"])
    state = dict(checkpoint) if checkpoint else new_state(config)
    state["starts"] += 1
    metrics = state["metrics"]
    started = time.monotonic()

    def progress_row(phase: str, step: int = 0, epoch: int = 0, loss: float = float("nan"),
                     total: int = 0, part: str = "") -> dict[str, Any]:
        # every report has the same progress columns, so Tune's CSV and TensorBoard logs keep them;
        # `total` (0: unknown) lets the live view show step/total and a phase's own ETA; `part`
        # ("": none) what the phase is working on, e.g. "pairs es 3/5" while loading
        return {"phase": phase, "step": step, "epoch": epoch, "loss": loss, "total": total, "part": part}

    def progress(info: Mapping[str, Any]) -> None:
        if info["step"] % REPORT_EVERY_STEPS == 0:
            report(progress_row(info["phase"], info["step"], info.get("epoch", 0), float(info["loss"]),
                                info.get("total", 0)), None)

    def checkpoint_now(phase: str, phase_state: Mapping[str, Any]) -> None:
        state["in_progress"] = {"phase": phase, "state": phase_state}
        if phase == "finetune":  # the fine-tuning state holds the weights from now on
            state.pop("realigned_model", None)
        report(progress_row(phase, phase_state.get("step", 0), phase_state.get("epoch", 0)), state)

    def finish() -> dict[str, Any]:
        final = {**metrics, **progress_row("done", metrics["finetune_steps"], settings.epochs),
                 "trial_starts": state["starts"], "seconds_this_start": time.monotonic() - started}
        report(final, final_state(state))
        return final

    if "finetuned" in state["done"]:  # restored from its final checkpoint: nothing left to run
        return finish()

    # pair extraction and alignment measurement: units done of total, rate-limited
    units = ThrottledProgress(lambda phase, part, done, total: report(
        progress_row(phase, done, total=total, part=part), None), every=PROGRESS_REPORT_SECONDS)

    # load (pair extraction, AWESOME included: reported language by language, in sentence pairs)
    report(progress_row("load"), None)
    inputs = load_inputs(config, settings, on_progress=functools.partial(units, "load"))
    seed_everything(seed)
    model = load_model(config, inputs)
    method.prepare_model(model, settings)  # before any checkpoint is loaded into it
    metrics["num_layers"] = model_family(model).num_layers(model.config)

    # measure: the pre-trained model
    if "pretrained" not in state["done"]:
        report(progress_row("measure-pretrained"), None)
        metrics.setdefault("align", {})["pretrained"] = pretrained_alignment(
            config, model, inputs, on_progress=units.phase("measure-pretrained"))
        state["done"].append("pretrained")
        report(progress_row("pretrained"), None)

    in_progress = state.get("in_progress") or {}
    if in_progress:  # continuing from a checkpoint taken inside a phase
        metrics["resumed_at"] = f"{in_progress['phase']}:{in_progress['state'].get('epoch', in_progress['state'].get('step'))}"
    # realign: the method's objective alone, before fine-tuning
    if method.sequential and "realigned" not in state["done"]:
        realigner = method.build_realigner(model, inputs.tokenizer, inputs.corpora, settings, seed,
                                           resolve_device(settings))
        steps = sequential_realign_steps(len(inputs.train), settings)
        resume = in_progress.get("state") if in_progress.get("phase") == "realign" else None

        def realign_checkpoint(phase_state: Mapping[str, Any]) -> None:
            if phase_state["step"] < steps:  # the final state is checkpointed below, with its metrics
                checkpoint_now("realign", phase_state)

        realign_sequentially(model, realigner, steps, settings, resume, seed=seed, on_step=progress,
                             on_checkpoint=realign_checkpoint, checkpoint_every=REALIGN_CHECKPOINT_EVERY)
        report(progress_row("measure-realigned"), None)
        metrics["align"]["realigned"] = measure(model, inputs, finetuned=False,
                                                on_progress=units.phase("measure-realigned"))
        state["done"].append("realigned")
        state["realigned_model"] = model.state_dict()
        state["in_progress"] = None
        report(progress_row("realigned"), state)
        in_progress = {}
    elif method.sequential and state.get("realigned_model") is not None:
        model.load_state_dict(state["realigned_model"])

    # fine-tune (joint realignment adds its objective's loss at every optimizer step)
    if "finetuned" not in state["done"]:
        realigner = (method.build_realigner(model, inputs.tokenizer, inputs.corpora, settings, seed,
                                            resolve_device(settings)) if method.joint else None)
        resume = in_progress.get("state") if in_progress.get("phase") == "finetune" else None
        trained = fine_tune(model, inputs.tokenizer, inputs.task, inputs.train, settings, resume, seed=seed,
                            realign=realigner, on_step=progress, on_epoch_end=lambda s: checkpoint_now("finetune", s))
        metrics["finetune_steps"] = trained["step"]
        state["in_progress"] = None
        # measure: the fine-tuned model
        report(progress_row("measure-finetuned"), None)
        metrics["align"]["finetuned"] = measure(model, inputs, finetuned=True,
                                                on_progress=units.phase("measure-finetuned"))
        metrics.update(scores_and_transfer(model, inputs))
        state["done"].append("finetuned")
        if config.get("model_dir"):  # --keep-models: the only copy of the weights that outlives the trial
            save_model(model, inputs.tokenizer, config["model_dir"])

    return finish()
