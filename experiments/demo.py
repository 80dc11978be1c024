"""The README's main job: every stage of the pipeline on a tiny model and tiny generated data.

`prepare` writes a synthetic five-language world (UD, WikiANN, XNLI/MultiNLI, MUSE and a
parallel corpus, in the same formats as the real data; `toyworld`) and a 2-layer BERT with its
own tokenizer, pre-trained once with masked language modelling on mixed-language text (cached:
a second run reuses it). The languages differ in what they share with English (es and fr
cognates, ru/ar/zh other scripts, ar another clause order), so the pre-trained model aligns them
to different degrees (strong alignment about 0.4 for es down to 0.15 for ar and zh), which gives
the CTL-alignment correlation something to find. Then: word pairs from a dictionary, FastAlign
and AWESOME-style extraction, `before` and `joint` realignment, the three tasks, alignment at
every layer, two seeds. Runs in a few minutes on 2 CPUs without a GPU.
"""

from toyworld import toy_cache_folder

# 3,000 steps of mixed-language MLM (toyworld.model); 5,000 pieces keep nearly every word whole:
# with 1,000 the pieces are shared by many words and strong alignment stays near 0 outside es.
TOY_PARAMETERS = dict(n_train=2000, pretrain_steps=3000, vocab_size=5000)
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
