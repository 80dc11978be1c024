"""The paper in miniature: e5-small on ../shared/data, every task learned, CPU, 3 seeds.

Experiment 1 (`none`: fine-tune in English, measure CTL and alignment before and after) for the
three tasks, and experiment 2's two realignment methods (`before`, `joint`) with dictionary
pairs of NTREX for POS and NER, each for seeds 0, 1, 2: 21 trials.

The slices are sized so that every task really learns in English (a CTL or a correlation means
nothing otherwise): 2,000 English training sentences for POS and NER and 4,000 MultiNLI pairs
for NLI, 2 epochs, batch 16, learning rate 1e-4 (5e-5 for NLI), 200 test examples a language.
Alignment is the paper's protocol at full size (1,000 pairs a language, sentence-clustered
sample); realignment reads NTREX's 1,997 sentence pairs a language. The report of one run of
this file is in docs/local-report/ (with the time it took).

The model folder comes from $E5_SMALL_PATH, else the provision tool's default location;
the data from $SWEEP_DATA_DIR, else ../shared/data.
"""

import os

LOCAL_MODEL = os.environ.get("E5_SMALL_PATH", "~/.cache/offline-models/multilingual-e5-small")
LOCAL_DATA = os.environ.get("SWEEP_DATA_DIR", "../shared/data")  # relative to where the sweep runs
SEEDS = [0, 1, 2]
TOKEN_TASKS = dict(train_subset=2000, learning_rate=1e-4)
NLI = dict(train_subset=4000, learning_rate=5e-5)

EXPERIMENT = dict(
    name="local",
    description="e5-small on ../shared/data: the paper's two experiments in miniature (every task learns)",
    models={"e5-small": dict(source=LOCAL_MODEL, gpu=0.25, cpu=1)},
    settings=dict(
        data_dir=LOCAL_DATA,
        epochs=2,
        batch_size=16,
        micro_batch_size=16,
        test_subset=200,
    ),
    # One seed after the other (Tune starts trials in this order): a run cut short still holds
    # every trial of its first seeds.
    grids=[grid for seed in SEEDS for grid in (
        dict(model=["e5-small"], task=["udpos", "wikiann"], realign=["none", "before", "joint"],
             pairs=["dico"], corpus=["ntrex"], seed=[seed], settings=TOKEN_TASKS),
        dict(model=["e5-small"], task=["xnli"], realign=["none"],
             pairs=["dico"], corpus=["ntrex"], seed=[seed], settings=NLI),
    )],
)
