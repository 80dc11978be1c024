"""A synthetic tidy trials table with the contract's columns (see :mod:`analysis.results`), for
trying the analysis end to end without a sweep (tests, demos). Numbers are made up but shaped
like the paper's: bigger models and closer languages align and transfer better, alignment rises
with depth and drops after fine-tuning on POS, realignment with dictionary pairs helps."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.results import PAPER_MODELS, PAPER_TARGET_LANGUAGES, PAPER_TASKS
from trainables.models import PAPER_MODELS as PAPER_MODEL_LIST


@dataclass(frozen=True)
class SyntheticGrid:
    """Which cells to generate. Realigned trials cover ``realigned_models`` x realign methods x
    pair sources x corpora; baselines cover every model and task."""

    models: dict[str, int] | None = None  # model -> number of layers
    tasks: tuple[str, ...] = PAPER_TASKS
    languages: tuple[str, ...] = PAPER_TARGET_LANGUAGES
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    realigned_models: tuple[str, ...] = tuple(model.name for model in PAPER_MODEL_LIST if model.realigned)
    methods: tuple[str, ...] = ("before", "joint")
    pairs: tuple[str, ...] = ("fastalign", "awesome", "dico")
    corpora: tuple[str, ...] = ("opus100", "multiun")
    random_seed: int = 0


# Small layer counts keep the default table quick; the paper's models have 6, 12, 12 and 24.
DEFAULT_MODELS: dict[str, int] = dict(zip(PAPER_MODELS, (3, 4, 4, 5)))
MODEL_QUALITY = np.linspace(0.3, 0.8, num=4)  # ordered like DEFAULT_MODELS
LANGUAGE_DISTANCE = {"ar": 0.45, "es": 0.12, "fr": 0.10, "ru": 0.18, "zh": 0.35}
TASK_ENGLISH_SCORE = {"udpos": 0.96, "wikiann": 0.83, "xnli": 0.80}
NOISE = 0.01
REALIGN_GAIN = {"dico": 0.05, "awesome": 0.02, "fastalign": 0.015}


def synthetic_trials(grid: SyntheticGrid = SyntheticGrid()) -> pd.DataFrame:
    """The tidy table of a synthetic sweep over ``grid``."""
    rng = np.random.default_rng(grid.random_seed)
    models = grid.models or DEFAULT_MODELS
    rows = []
    model_quality = {m: MODEL_QUALITY[min(i, len(MODEL_QUALITY) - 1)] for i, m in enumerate(models)}
    cells = [(m, t, "none", "dico", grid.corpora[0], s) for m in models for t in grid.tasks for s in grid.seeds]
    cells += [
        (m, t, r, p, c, s)
        for m, t, r, p, c, s in itertools.product(
            [m for m in grid.realigned_models if m in models], grid.tasks, grid.methods, grid.pairs, grid.corpora, grid.seeds
        )
    ]
    for model, task, realign, pairs, corpus, seed in cells:
        layers = models[model]
        quality = model_quality[model]
        gain = 0.0 if realign == "none" else REALIGN_GAIN.get(pairs, 0.01)
        english = TASK_ENGLISH_SCORE.get(task, 0.85) + rng.normal(0, NOISE / 2)
        row: dict[str, object] = dict(model=model, task=task, realign=realign, pairs=pairs, corpus=corpus, seed=seed,
                                      num_layers=layers, **{"score/en": min(english, 1.0)})
        for lang in grid.languages:
            distance = LANGUAGE_DISTANCE.get(lang, 0.3)
            transfer = (1 - quality) * distance - gain * distance + rng.normal(0, NOISE)
            score = float(np.clip(english * (1 - transfer), 0, 1))
            row[f"score/{lang}"] = score
            row[f"ctl/{lang}"] = (score - row["score/en"]) / row["score/en"]
            base = quality * (1 - distance)
            for layer in range(layers + 1):
                depth_profile = np.sin(np.pi * (layer + 1) / (layers + 2))
                pretrained = float(np.clip(base * depth_profile + rng.normal(0, NOISE), 0, 1))
                drop = 0.5 if task == "udpos" else -0.2
                finetuned = float(np.clip(pretrained * (1 - drop * layer / layers) + gain + rng.normal(0, NOISE), 0, 1))
                for kind, factor in (("strong", 1.0), ("weak", 1.2)):
                    for direction, shift in (("en-x", 0.0), ("x-en", 0.01)):
                        row[f"align/pretrained/{kind}/{direction}/{lang}/{layer}"] = min(pretrained * factor + shift, 1.0)
                        row[f"align/finetuned/{kind}/{direction}/{lang}/{layer}"] = min(finetuned * factor + shift, 1.0)
        rows.append(row)
    return pd.DataFrame(rows)
