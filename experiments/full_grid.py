"""Both experiments of Gaschi et al. (2023), as one sweep.

Experiment 1 (§4-5): four models x three tasks x 5 seeds, no realignment, 5 epochs; alignment
measured before and after fine-tuning (on `dico` pairs of OPUS-100, the first of its grid).
Experiment 2 (§6, the controlled experiment): realignment `before` (sequential) and `joint`, with
the three pair sources and two corpora, for the three smaller models on POS and NER at 5 epochs
(their `none` baselines are Experiment 1's trials and deduplicate into them); for NLI at 2 epochs
with `dico` on OPUS-100, plus `none` baselines at 2 epochs for all four models.

Corpora (§3.3, App. B.2): `opus100` = OPUS-100's train split (Helsinki-NLP/opus-100), `multiun` =
the UN Parallel Corpus v1.0 (Ziemski et al. 2016; Helsinki-NLP/un_pc), each a seeded reservoir
sample of `parallel_sample` = 1,000,000 sentence pairs a language, as the reference's
realignment_with_multi_un.sh (OPUS-100's train splits hold at most 1M pairs: it comes whole).

Count: 60 (exp. 1) + 3 models x 2 methods x 3 sources x 2 corpora x 5 seeds x 2 tasks (360)
+ NLI 3 x 2 x 5 (30) + NLI baselines 4 x 5 (20) = 470 trials; the 30 POS/NER baselines listed in
experiment 2's grid are duplicates of experiment 1's.
"""

from trainables.models import PAPER_MODELS as PAPER_MODEL_LIST

PAPER_MODELS = [model.name for model in PAPER_MODEL_LIST]
REALIGNED_MODELS = [model.name for model in PAPER_MODEL_LIST if model.realigned]  # all but XLM-R large (App. B.5)
SEEDS = [0, 1, 2, 3, 4]

EXPERIMENT = dict(
    name="full_grid",
    description="Gaschi et al. 2023: experiment 1 (alignment vs CTL) and experiment 2 (realignment)",
    settings=dict(langs=["ar", "es", "fr", "ru", "zh"], epochs=5, parallel_sample=1_000_000),
    grids=[
        # Experiment 1.
        dict(model=PAPER_MODELS, task=["udpos", "wikiann", "xnli"], realign=["none"],
             pairs=["dico"], corpus=["opus100"], seed=SEEDS),
        # Experiment 2, POS and NER (baselines = experiment 1's `none` trials).
        dict(model=REALIGNED_MODELS, task=["udpos", "wikiann"], realign=["none", "before", "joint"],
             pairs=["dico", "fastalign", "awesome"], corpus=["opus100", "multiun"], seed=SEEDS),
        # Experiment 2, NLI at 2 epochs: realigned smaller models, baselines for all four.
        dict(model=REALIGNED_MODELS, task=["xnli"], realign=["before", "joint"],
             pairs=["dico"], corpus=["opus100"], seed=SEEDS, settings=dict(epochs=2)),
        dict(model=PAPER_MODELS, task=["xnli"], realign=["none"],
             pairs=["dico"], corpus=["opus100"], seed=SEEDS, settings=dict(epochs=2)),
    ],
)
