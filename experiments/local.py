"""The paper's pipeline on this machine: e5-small on ../shared/data, small slices, CPU.

All three tasks x all realign methods (dico pairs of NTREX), one seed; plus the two other pair
sources once. Measured: 9 min 56 s on 2 CPUs from a cold cache.
The model folder comes from $E5_SMALL_PATH, else the provision tool's default location;
the data from $SWEEP_DATA_DIR, else ../shared/data.
"""

import os

LOCAL_MODEL = os.environ.get("E5_SMALL_PATH", "~/.cache/offline-models/multilingual-e5-small")
LOCAL_DATA = os.environ.get("SWEEP_DATA_DIR", "../shared/data")  # relative to where the sweep runs

EXPERIMENT = dict(
    name="local",
    description="e5-small on ../shared/data: every task and realign method on small slices",
    models={"e5-small": dict(source=LOCAL_MODEL, gpu=0.25, cpu=1)},
    settings=dict(
        data_dir=LOCAL_DATA,
        epochs=1,
        batch_size=16,
        micro_batch_size=16,
        train_subset=64,
        test_subset=24,
        parallel_subset=200,
        align_pairs=60,  # per language; three measurements a trial dominate its CPU time
        task_max_length=96,
    ),
    grids=[
        dict(model=["e5-small"], task=["udpos", "wikiann", "xnli"], realign=["none", "before", "joint"],
             pairs=["dico"], corpus=["ntrex"], seed=[0]),
        dict(model=["e5-small"], task=["udpos"], realign=["before"], pairs=["fastalign", "awesome"],
             corpus=["ntrex"], seed=[0], settings=dict(awesome_model=LOCAL_MODEL)),
    ],
)
