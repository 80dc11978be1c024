"""The README's main job: every stage of the pipeline on a tiny model and tiny generated data.

`prepare` writes a synthetic five-language world (UD, WikiANN, XNLI/MultiNLI, MUSE and a
parallel corpus, in the same formats as the real data) and a 2-layer BERT with its own
tokenizer, offline. Then: word pairs from a dictionary, FastAlign and AWESOME-style extraction,
`before` and `joint` realignment, the three tasks, alignment at every layer, two seeds.
Runs in a few minutes on 2 CPUs without a GPU.
"""

TOY = "~/.cache/alignment-sweep/toy-2000"  # generated once, reused afterwards

EXPERIMENT = dict(
    name="demo",
    description="tiny end-to-end run of the whole pipeline on generated data",
    prepare=dict(call="trainables.toy:write_toy", out_dir=TOY, n_train=2000),
    models={"toy-bert": dict(source=TOY + "/model", gpu=0.1, cpu=1)},
    settings=dict(
        data_dir=TOY + "/data",
        epochs=4,
        batch_size=16,
        micro_batch_size=16,
        learning_rate=1e-3,
        align_pairs=200,
        eval_batch_size=64,
        awesome_model=TOY + "/model",
        awesome_layer=1,
        num_threads=1,  # a 2-layer model: one thread per trial beats contention between two
        ner_zh_words=False,  # the toy "zh" is written in words, not one character a token
    ),
    grids=[
        dict(model=["toy-bert"], task=["udpos", "wikiann", "xnli"], realign=["none", "before", "joint"],
             pairs=["dico"], corpus=["toy"], seed=[0, 1]),
        dict(model=["toy-bert"], task=["udpos"], realign=["before"], pairs=["fastalign", "awesome"],
             corpus=["toy"], seed=[0, 1]),
    ],
)
