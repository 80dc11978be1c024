"""The README's main job: every stage of the pipeline on a tiny model and tiny generated data.

`prepare` writes a synthetic five-language world (UD, WikiANN, XNLI/MultiNLI, MUSE and a
parallel corpus, in the same formats as the real data; `toyworld`) and a 2-layer BERT with its
own tokenizer, pre-trained once with masked language modelling on the toy languages (cached:
a second run reuses it). The languages differ in what they share with English (es many
cognates, fr fewer, ru/ar/zh other scripts), so the pre-trained model aligns es and fr to
different degrees and the others not at all until realignment, which gives the CTL-alignment
correlation something to find. Then: word pairs from a dictionary, FastAlign and
AWESOME-style extraction, `before` and `joint` realignment, the three tasks, alignment at every
layer, two seeds. Runs in a few minutes on 2 CPUs without a GPU.
"""

from toyworld import toy_cache_folder

# 600 steps: longer pre-training made the upper layers language-specific (es strong
# alignment at the last layer 0.165 after 600 steps, 0.075 after 1,200); a 1,000-word
# vocabulary splits most words, so cognates share their first subword with English.
TOY_PARAMETERS = dict(n_train=2000, pretrain_steps=600, vocab_size=1000)
# Generated and pre-trained once, reused afterwards: the folder is named by a content key of
# the parameters, the toy world's code and the library versions, so a changed world is rebuilt.
TOY = toy_cache_folder("~/.cache/alignment-sweep", **TOY_PARAMETERS)

EXPERIMENT = dict(
    name="demo",
    description="tiny end-to-end run of the whole pipeline on generated data",
    prepare=dict(call="toyworld:write_toy", out_dir=TOY, **TOY_PARAMETERS),
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
