"""Fine-tuning: schedule and accumulation, batching, featurisation, metrics, CTL, resuming, seeds,
sequential realignment, and a real-data smoke run with multilingual-e5-small."""
from __future__ import annotations

import math
import os
from dataclasses import replace

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from torch.optim.optimizer import register_optimizer_step_pre_hook
from transformers import AutoTokenizer, BertConfig, PreTrainedTokenizerFast

from trainables import data
from trainables.encoding import IGNORE_INDEX
from trainables.finetuning import (
    cross_lingual_transfer,
    evaluate,
    fine_tune,
    make_optimizer,
    make_scheduler,
    optimizer_batches,
    predict,
    realign_sequentially,
    schedule_steps,
    sequential_realign_steps,
)
from trainables.pairs import extract_pairs
from trainables.realignment import build_realigner
from trainables.settings import Settings
from trainables.tasks import TASKS, accuracy, entity_f1, get_task
from trainables.errors import NonFiniteLossError
from trainables.finetuning import decay_end_step
from trainables.settings import make_settings
from trainables.trial import run_trial

DATA_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
E5_SMALL_PATH = os.environ.get("E5_SMALL_PATH", os.path.expanduser("~/.cache/offline-models/multilingual-e5-small"))
CPU = torch.device("cpu")
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


class Interrupted(Exception):
    """Stands for a trial killed right after it saved a checkpoint."""


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(E5_SMALL_PATH)


@pytest.fixture(scope="module")
def ewt_train():
    return data.load_task_split("udpos", "train", "en", data_dir=DATA_DIR, subset=data.Subset(100))


@pytest.fixture(scope="module")
def es_pos_test():
    return data.load_task_split("udpos", "test", "es", data_dir=DATA_DIR, subset=data.Subset(30))


@pytest.fixture(scope="module")
def ntrex_es(tmp_path_factory):
    cache = tmp_path_factory.mktemp("pairs-cache")
    corpus = extract_pairs("ntrex", "es", "dico", data_dir=DATA_DIR, cache_dir=cache, subset=data.Subset(40))
    assert len(corpus.pairs) > 0
    return {"es": corpus}


@pytest.fixture(scope="module")
def small_tokenizer(ewt_train, ntrex_es):
    """A WordPiece tokenizer (1000 pieces) trained on the test's real text.

    Training steps of the tiny model are dominated by its embedding matrix; with e5's 250k
    vocabulary they are ~4x slower, so the many-step tests use this one (words still split into
    subwords, so first-subword labels are exercised).
    """
    texts = [" ".join(e["words"]) for e in ewt_train] + [" ".join(s) for s in ntrex_es["es"].x_words]
    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=False)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=1000, special_tokens=SPECIAL_TOKENS))
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", backend.token_to_id("[CLS]")), ("[SEP]", backend.token_to_id("[SEP]"))],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]",
    )
    assert len(tokenizer) <= 1000
    return tokenizer


def tiny_model(tokenizer, task: str = "udpos", seed: int = 0):
    """A random 2-layer BERT (hidden 32); dropout on, as in training."""
    torch.manual_seed(seed)
    spec = get_task(task)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=130, pad_token_id=tokenizer.pad_token_id,
        **spec.model_kwargs(),
    )
    return spec.model_class.from_config(config)


# --------------------------------------------------------------------------------------------
# Schedule


def test_schedule_counts_optimizer_steps_with_accumulation():
    settings = Settings(batch_size=32, micro_batch_size=8, epochs=5, warmup_ratio=0.1)
    assert schedule_steps(100, settings) == (4, 20, 2)  # last batch of 4 examples is a step
    assert schedule_steps(96, settings) == (3, 15, 2)  # ceil(1.5)
    assert schedule_steps(300, replace(settings, epochs=1)) == (10, 10, 1)
    assert schedule_steps(930, replace(settings, epochs=1)) == (30, 30, 3)  # 0.1 * 30 is not 3.0000...4
    with pytest.raises(ValueError, match="empty"):
        schedule_steps(0, settings)


def test_learning_rate_warms_up_then_decays_to_zero():
    settings = Settings(learning_rate=2e-5)
    parameter = torch.nn.Parameter(torch.zeros(2, 2))
    optimizer = make_optimizer([parameter], settings)
    scheduler = make_scheduler(optimizer, warmup=2, total=20)
    rates = []
    for _ in range(21):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert rates[0] == 0.0 and rates[1] == pytest.approx(1e-5) and rates[2] == pytest.approx(2e-5)
    assert rates[11] == pytest.approx(2e-5 * 9 / 18) and rates[19] == pytest.approx(2e-5 / 18)
    assert rates[20] == 0.0


def test_fine_tune_takes_20_accumulated_steps_on_100_examples(small_tokenizer, ewt_train):
    tokenizer = small_tokenizer
    # truncation: one row per example (windows would add rows for the longest sentences)
    settings = Settings(device="cpu", epochs=5, batch_size=32, micro_batch_size=8, learning_rate=2e-5,
                        long_sentences="truncate")
    model = tiny_model(tokenizer)
    micro_sizes = []
    model.register_forward_pre_hook(lambda module, args, kwargs: micro_sizes.append(kwargs["input_ids"].shape[0]), with_kwargs=True)
    steps = []
    state = fine_tune(model, tokenizer, "udpos", ewt_train, settings, seed=0, on_step=steps.append)
    assert [s["step"] for s in steps] == list(range(1, 21)) and state["step"] == 20 and state["epoch"] == 5
    lrs = [s["lr"] for s in steps]
    assert lrs[0] == 0.0 and lrs[2] == pytest.approx(2e-5) and lrs[19] == pytest.approx(2e-5 / 18)
    assert all(a > b for a, b in zip(lrs[2:], lrs[3:]))
    # per epoch: 3 steps of 4 micro-batches of 8, and one step of a single micro-batch of 4
    assert sorted(micro_sizes) == sorted(([8] * 12 + [4]) * 5)
    assert sum(s["tokens"] for s in steps[:4]) == sum(
        len(tokenizer(e["words"], is_split_into_words=True, truncation=True, max_length=128)["input_ids"]) for e in ewt_train
    )


def test_optimizer_batches_partition_each_epoch_sorted_within_batches():
    lengths = np.random.default_rng(0).integers(3, 90, size=250)
    settings = Settings(batch_size=32, micro_batch_size=8, length_group_factor=2)
    epoch0 = optimizer_batches(lengths, settings, seed=1, epoch=0)
    assert sorted(len(b) for b in epoch0) == [26] + [32] * 7
    assert sorted(np.concatenate(epoch0).tolist()) == list(range(250))
    assert all((np.diff(lengths[b]) <= 0).all() for b in epoch0)  # longest first within a batch
    again = optimizer_batches(lengths, settings, seed=1, epoch=0)
    assert all(np.array_equal(a, b) for a, b in zip(epoch0, again))
    epoch1 = optimizer_batches(lengths, settings, seed=1, epoch=1)
    assert any(not np.array_equal(a, b) for a, b in zip(epoch0, epoch1))
    # grouping pays: less padding than batches of randomly mixed lengths
    padded = sum(len(b) * lengths[b].max() for b in epoch0)
    shuffled = np.random.default_rng(1).permutation(250)
    random_padded = sum(len(b) * lengths[b].max() for b in np.array_split(shuffled, 8))
    assert padded < 0.85 * random_padded


# --------------------------------------------------------------------------------------------
# Featurisation and metrics


def test_wikiann_labels_land_on_exactly_one_token_per_word(tokenizer):
    examples = data.load_task_split("wikiann", "test", "es", data_dir=DATA_DIR, subset=data.Subset(50))
    task = TASKS["wikiann"]
    features = task.featurize(tokenizer, examples, Settings())
    split_words = 0
    for i, example in enumerate(examples):
        start, stop = features.offsets[i].item(), features.offsets[i + 1].item()
        labels = features.labels[start:stop]
        encoding = tokenizer(example["words"], is_split_into_words=True)
        # XLM-R's lone "▁" pieces are deleted from the input (keep_lone_prefix=False)
        kept = [j for j, token in enumerate(encoding["input_ids"]) if token != tokenizer.convert_tokens_to_ids("▁")]
        assert features.tokens["input_ids"][start:stop].tolist() == [encoding["input_ids"][j] for j in kept]
        word_ids = [encoding.word_ids()[j] for j in kept]
        labelled = (labels != IGNORE_INDEX).nonzero().squeeze(1).tolist()
        # one labelled token per word, in word order, each the first token of its word
        assert [word_ids[p] for p in labelled] == list(range(len(example["words"])))
        assert all(word_ids[p - 1] != word_ids[p] for p in labelled)
        assert [task.labels[j] for j in labels[labelled].tolist()] == example["labels"]
        split_words += len(kept) - 2 - len(example["words"])
    assert split_words > 20  # the sample does exercise multi-subword words


def test_nli_pairs_are_tokenised_together(tokenizer):
    examples = data.load_task_split("xnli", "test", "en", data_dir=DATA_DIR, subset=data.Subset(10))
    task = TASKS["xnli"]
    features = task.featurize(tokenizer, examples, Settings(nli_max_length=40))
    batch = features.collate([3, 7])
    for row, i in enumerate((3, 7)):
        expected = tokenizer(examples[i]["premise"], examples[i]["hypothesis"], truncation=True, max_length=40)["input_ids"]
        length = int(batch["attention_mask"][row].sum())
        assert batch["input_ids"][row, :length].tolist() == expected and length <= 40
        assert (batch["input_ids"][row, length:] == tokenizer.pad_token_id).all()
        assert task.labels[int(batch["labels"][row])] == examples[i]["label"]


def test_featurize_names_a_bad_label(tokenizer):
    with pytest.raises(ValueError, match=r"udpos example 1: label 'NOUNS' is not a udpos label"):
        TASKS["udpos"].featurize(
            tokenizer,
            [{"words": ["a"], "labels": ["DET"]}, {"words": ["cats"], "labels": ["NOUNS"]}],
            Settings(),
        )
    with pytest.raises(ValueError, match="did you mean 'udpos'"):
        get_task("udpo")


def test_metrics_by_hand():
    assert accuracy([["A", "B", "C"], ["D"]], [["A", "X", "C"], ["D"]]) == 0.75
    # one of two gold entities found, no false positive: P = 1, R = 1/2, F1 = 2/3
    assert entity_f1([["B-PER", "I-PER", "O", "B-LOC"]], [["B-PER", "I-PER", "O", "O"]]) == pytest.approx(2 / 3)
    # seqeval default (conlleval) mode: an I- tag after O opens an entity
    assert entity_f1([["O", "B-LOC", "I-LOC"]], [["O", "I-LOC", "I-LOC"]]) == 1.0
    # wrong type: 0 true positives
    assert entity_f1([["B-ORG"]], [["B-PER"]]) == 0.0


def test_cross_lingual_transfer_by_hand():
    ctl = cross_lingual_transfer({"en": 0.8, "es": 0.6, "ar": 0.4, "fr": 0.8})
    assert ctl == pytest.approx({"es": -0.25, "ar": -0.5, "fr": 0.0})
    with pytest.raises(ValueError, match="'en'"):
        cross_lingual_transfer({"es": 0.5})
    undefined = cross_lingual_transfer({"en": 0.0, "es": 0.5})  # nothing learned in English
    assert list(undefined) == ["es"] and math.isnan(undefined["es"])


def test_predict_returns_gold_labels_in_example_order(small_tokenizer, es_pos_test):
    model = tiny_model(small_tokenizer)
    gold, predicted = predict(model, small_tokenizer, "udpos", es_pos_test, Settings(eval_batch_size=7))
    assert gold == [e["labels"] for e in es_pos_test]
    assert [len(p) for p in predicted] == [len(e["labels"]) for e in es_pos_test]
    assert model.training  # eval mode was temporary


def test_nli_fine_tunes_and_scores_one_label_per_example(small_tokenizer):
    train = data.load_task_split("xnli", "train", "en", data_dir=DATA_DIR, subset=data.Subset(24))
    test = data.load_task_split("xnli", "test", "es", data_dir=DATA_DIR, subset=data.Subset(20))
    settings = Settings(device="cpu", epochs=1, batch_size=8, micro_batch_size=8, nli_max_length=64)
    model = tiny_model(small_tokenizer, task="xnli")
    steps = []
    fine_tune(model, small_tokenizer, "xnli", train, settings, seed=0, on_step=steps.append)
    assert len(steps) == 3
    gold, predicted = predict(model, small_tokenizer, "xnli", test, settings)
    assert gold == [[e["label"]] for e in test] and all(len(p) == 1 and p[0] in TASKS["xnli"].labels for p in predicted)
    score = evaluate(model, small_tokenizer, "xnli", test, settings)
    assert score == sum(g == p for g, p in zip(gold, predicted)) / len(test)


# --------------------------------------------------------------------------------------------
# Resuming and seeds (tiny model, joint realignment with a projection head)


TINY = Settings(
    device="cpu", epochs=2, batch_size=16, micro_batch_size=8, learning_rate=1e-3, task_max_length=64,
    realign_batch_size=4, realign_projection=True, realign_projection_dim=8, length_group_factor=2,
)


def joint_run(tokenizer, train, corpora, seed, state=None, stop_after_epoch=None, checkpoint=None, init_seed=0):
    model = tiny_model(tokenizer, seed=init_seed)
    realigner = build_realigner(model, tokenizer, corpora, TINY, seed, CPU)
    losses = []

    def on_epoch_end(epoch_state):
        if epoch_state["epoch"] == stop_after_epoch:
            torch.save(epoch_state, checkpoint)
            raise Interrupted

    fine_tune(
        model, tokenizer, "udpos", train, TINY, state, seed=seed, realign=realigner,
        on_step=lambda info: losses.append((float(info["task_loss"]), float(info["realign_loss"]))),
        on_epoch_end=on_epoch_end,
    )
    return model, realigner, losses


@pytest.fixture(scope="module")
def uninterrupted(small_tokenizer, ewt_train, ntrex_es):
    return joint_run(small_tokenizer, ewt_train[:40], ntrex_es, seed=7)


def test_joint_stream_restarts_each_epoch_or_continues(small_tokenizer, ewt_train, ntrex_es):
    batches_read = {}
    for mode in ("restart", "continue"):
        model = tiny_model(small_tokenizer, seed=0)
        settings = replace(TINY, joint_realign_stream=mode)
        realigner = build_realigner(model, small_tokenizer, ntrex_es, settings, 7, CPU)
        read = []
        original = type(realigner.batches).__next__

        class Recording(type(realigner.batches)):  # the same stream, its batches recorded
            def __next__(self):
                batch = original(self)
                read.append(tuple(map(tuple, batch.x_words)))
                return batch

        realigner.batches.__class__ = Recording
        fine_tune(model, small_tokenizer, "udpos", ewt_train[:40], settings, seed=7, realign=realigner)
        batches_read[mode] = read
    restart, continued = batches_read["restart"], batches_read["continue"]
    assert len(restart) == len(continued) == 6  # 3 optimizer steps an epoch, 2 epochs
    assert restart[3:] == restart[:3] and continued[3:] != continued[:3] and continued[:3] == restart[:3]


def test_resuming_from_an_epoch_checkpoint_equals_an_uninterrupted_run(small_tokenizer, ewt_train, ntrex_es, uninterrupted, tmp_path):
    tokenizer = small_tokenizer
    model, realigner, losses = uninterrupted
    checkpoint = tmp_path / "epoch1.pt"
    with pytest.raises(Interrupted):
        joint_run(tokenizer, ewt_train[:40], ntrex_es, seed=7, stop_after_epoch=1, checkpoint=checkpoint)
    state = torch.load(checkpoint, weights_only=True)  # plain tensors and Python objects only
    assert state["epoch"] == 1 and state["step"] == 3 and state["realigner"]["batches"]["drawn"] == 12
    resumed_model, resumed_realigner, resumed_losses = joint_run(
        tokenizer, ewt_train[:40], ntrex_es, seed=7, state=state, init_seed=123  # other init: state must win
    )
    assert resumed_losses == losses[3:]
    expected = model.state_dict()
    assert all(torch.equal(value, expected[name]) for name, value in resumed_model.state_dict().items())
    assert all(torch.equal(a, b) for a, b in zip(resumed_realigner.parameters(), realigner.parameters()))
    # the stream starts over at each epoch (joint_realign_stream="restart"): one epoch of draws
    assert resumed_realigner.batches.drawn == realigner.batches.drawn == 12


def test_same_seed_same_numbers_other_seed_other_numbers(small_tokenizer, ewt_train, ntrex_es, es_pos_test, uninterrupted):
    tokenizer = small_tokenizer
    model, _, losses = uninterrupted
    twin, _, twin_losses = joint_run(tokenizer, ewt_train[:40], ntrex_es, seed=7)
    assert twin_losses == losses and len(losses) == 6
    assert all(math.isfinite(t) and math.isfinite(r) for t, r in losses)
    assert evaluate(twin, tokenizer, "udpos", es_pos_test, TINY) == evaluate(model, tokenizer, "udpos", es_pos_test, TINY)
    _, _, other_losses = joint_run(tokenizer, ewt_train[:40], ntrex_es, seed=8)
    assert other_losses != losses


def test_sequential_realignment_follows_the_schedule_and_resumes(small_tokenizer, ntrex_es, tmp_path):
    tokenizer = small_tokenizer
    settings = replace(TINY, realign_steps=6)
    assert sequential_realign_steps(1000, settings) == 6
    assert sequential_realign_steps(100, replace(settings, realign_steps=None)) == 14  # ceil(100/16) * 2 epochs

    def run(state=None, stop_at=None, init_seed=0):
        model = tiny_model(tokenizer, seed=init_seed)
        classifier = model.classifier.weight.detach().clone()
        realigner = build_realigner(model, tokenizer, ntrex_es, settings, 3, CPU)
        steps = []

        def on_checkpoint(checkpoint_state):
            if checkpoint_state["step"] == stop_at:
                torch.save(checkpoint_state, tmp_path / "realign.pt")
                raise Interrupted

        realign_sequentially(model, realigner, 6, settings, state, seed=3, on_step=steps.append,
                             on_checkpoint=on_checkpoint, checkpoint_every=3)
        return model, steps, classifier

    model, steps, classifier = run()
    assert torch.equal(model.classifier.weight, classifier)  # only the encoder (and head) are realigned
    lrs = [s["lr"] for s in steps]  # warm-up ceil(0.6) = 1 step, then linear decay over 5
    assert lrs == pytest.approx([0.0, 1e-3, 8e-4, 6e-4, 4e-4, 2e-4])
    with pytest.raises(Interrupted):
        run(stop_at=3)
    state = torch.load(tmp_path / "realign.pt", weights_only=True)
    resumed, resumed_steps, _ = run(state=state, init_seed=5)
    assert [float(s["loss"]) for s in resumed_steps] == [float(s["loss"]) for s in steps[3:]]
    expected = model.state_dict()
    assert all(torch.equal(value, expected[name]) for name, value in resumed.state_dict().items())


# --------------------------------------------------------------------------------------------
# Real data, real model


def test_e5_small_joint_realignment_smoke(tokenizer, ewt_train, es_pos_test, ntrex_es):
    # realignment batches of 8 sentence pairs (not 16), 64 subwords at most: NTREX news sentences are long
    settings = Settings(device="cpu", epochs=1, batch_size=32, micro_batch_size=16, realign_batch_size=8, realign_max_length=64)
    model = TASKS["udpos"].load_model(E5_SMALL_PATH)
    # Speed only: the 96M-parameter word-embedding matrix (250k x 384) is frozen, which skips its
    # gradient and AdamW update on 2 CPUs; the loop, the realignment and the rest of the model run as in a trial.
    model.base_model.embeddings.word_embeddings.weight.requires_grad_(False)
    before = model.base_model.encoder.layer[-1].output.dense.weight.detach().clone()
    realigner = build_realigner(model, tokenizer, ntrex_es, settings, seed=0, device=CPU)
    steps = []
    state = fine_tune(model, tokenizer, "udpos", ewt_train[:64], settings, seed=0, realign=realigner, on_step=steps.append)
    assert len(steps) == 2 and state["epoch"] == 1
    assert all(math.isfinite(float(s["task_loss"])) and float(s["realign_loss"]) > 0 for s in steps)
    assert not torch.equal(model.base_model.encoder.layer[-1].output.dense.weight, before)
    score = evaluate(model, tokenizer, "udpos", es_pos_test, settings)
    assert 0.0 <= score <= 1.0


# --------------------------------------------------------------------------------------------
# Protocol choices (docs/protocol.md): divergence, the reference code's schedule and preset,
# clipping, CTL's English split, the UD release


@pytest.mark.parametrize("joint", [False, True])
def test_a_diverging_fine_tuning_fails_at_once_naming_its_step(small_tokenizer, ewt_train, ntrex_es, joint):
    settings = replace(TINY, learning_rate=1e6, epochs=10)
    model = tiny_model(small_tokenizer)
    realigner = build_realigner(model, small_tokenizer, ntrex_es, settings, 0, CPU) if joint else None
    steps, applied = [], []
    hook = register_optimizer_step_pre_hook(lambda *args: applied.append(1))  # every optimizer.step()
    try:
        with pytest.raises(NonFiniteLossError, match=r"^fine-tuning, optimizer step (\d+) of \d+ \(epoch \d+ of 10\):"
                                                     r" the loss is (nan|inf|-inf)") as failure:
            fine_tune(model, small_tokenizer, "udpos", ewt_train[:32], settings, seed=0, realign=realigner,
                      on_step=steps.append)
    finally:
        hook.remove()
    message = str(failure.value)
    assert len(steps) < 10, "not within a few steps"
    # the failing step is the one after the last reported, and the optimizer never applied it
    assert f"optimizer step {len(steps) + 1} of" in message and len(applied) == len(steps)
    assert ("realignment loss" in message) == joint and "\n" not in message
    # a normal learning rate on the same data runs to the end
    normal = fine_tune(tiny_model(small_tokenizer), small_tokenizer, "udpos", ewt_train[:32], TINY, seed=0)
    assert normal["epoch"] == TINY.epochs


def test_a_diverging_sequential_realignment_fails_at_once(small_tokenizer, ntrex_es):
    settings = replace(TINY, learning_rate=1e6, realign_schedule="constant")
    model = tiny_model(small_tokenizer)
    realigner = build_realigner(model, small_tokenizer, ntrex_es, settings, 0, CPU)
    steps = []
    with pytest.raises(NonFiniteLossError, match=r"^sequential realignment, optimizer step (\d+) of 30: the loss is"
                                                 r" (nan|inf|-inf)") as failure:
        realign_sequentially(model, realigner, 30, settings, seed=0, on_step=steps.append)
    assert len(steps) < 10 and f"step {len(steps) + 1} of 30" in str(failure.value)


def test_constant_realign_schedule_keeps_the_learning_rate(small_tokenizer, ntrex_es):
    settings = replace(TINY, realign_schedule="constant", learning_rate=3e-4)
    model = tiny_model(small_tokenizer)
    realigner = build_realigner(model, small_tokenizer, ntrex_es, settings, 0, CPU)
    steps = []
    state = realign_sequentially(model, realigner, 5, settings, seed=0, on_step=steps.append)
    assert [s["lr"] for s in steps] == [3e-4] * 5  # no warm-up, no decay
    assert [g["lr"] for g in state["optimizer"]["param_groups"]] == [3e-4, 3e-4]  # still after the last step
    with pytest.raises(ValueError, match="checkpoint schedule"):  # a linear run cannot resume a constant one
        realign_sequentially(model, realigner, 5, replace(settings, realign_schedule="linear"), state, seed=0)


def test_code_schedule_counts_micro_batches_over_five_epochs(small_tokenizer, ewt_train):
    settings = Settings(batch_size=32, micro_batch_size=32, epochs=5, schedule_micro_batch_size=8)
    # 100 examples: 13 micro-batches of 8 an epoch (the reference's DataLoader), warm-up
    # int(0.1 * 13 * 5) = 6 optimizer steps, zero at 65; the run itself is 4 x 5 = 20 steps
    assert schedule_steps(100, settings) == (4, 20, 6) and decay_end_step(100, settings) == 65
    no_accumulation = replace(settings, schedule_micro_batch_size=32)
    assert schedule_steps(100, no_accumulation) == (4, 20, 2) and decay_end_step(100, no_accumulation) == 20
    two_epochs = replace(no_accumulation, epochs=2)  # the reference still decays over 5 epochs
    assert schedule_steps(100, two_epochs) == (4, 8, 2) and decay_end_step(100, two_epochs) == 20
    assert decay_end_step(100, replace(two_epochs, schedule_micro_batch_size=None)) == 8  # ours: the last step
    with pytest.raises(ValueError, match="schedule_micro_batch_size=64"):
        schedule_steps(100, replace(settings, schedule_micro_batch_size=64))
    # in fine_tune: the learning rate each optimizer step uses
    tiny = replace(TINY, batch_size=16, micro_batch_size=16, schedule_micro_batch_size=4)
    features = TASKS["udpos"].featurize(small_tokenizer, ewt_train[:40], tiny)
    _, total, warmup = schedule_steps(len(features), tiny)
    end = decay_end_step(len(features), tiny)
    assert warmup == int(0.1 * math.ceil(len(features) / 4) * 5) and end == 5 * math.ceil(len(features) / 4)
    steps = []
    fine_tune(tiny_model(small_tokenizer), small_tokenizer, "udpos", features, tiny, seed=0, on_step=steps.append)
    expected = [1e-3 * (s / warmup if s < warmup else (end - s) / (end - warmup)) for s in range(total)]
    assert [s["lr"] for s in steps] == pytest.approx(expected)
    assert steps[-1]["lr"] > 0.5e-3  # 2 epochs of 4x accumulation: the reference never decayed far


def test_acl2023_code_preset_gives_each_choice_of_the_code():
    paper = make_settings({}, model="xlm-roberta-large")
    assert (paper.realign_layer, paper.joint_weight, paper.realign_projection, paper.learning_rate,
            paper.realign_schedule, paper.schedule_micro_batch_size, paper.length_group_factor, paper.precision,
            paper.max_grad_norm) == (-1, 1.0, True, 2e-5, "linear", None, 1, "tf32", None)
    code = make_settings({"preset": "acl2023-code"}, model="xlm-roberta-large")
    assert code.realign_layer == -2 and code.joint_weight == 0.1 and code.realign_projection
    assert code.learning_rate == 7.5e-6 and code.realign_schedule == "constant"
    assert code.schedule_micro_batch_size == 8 and code.length_group_factor == 1 and code.precision == "tf32"
    # what the code shares with the paper's text stays
    assert (code.batch_size, code.epochs, code.warmup_ratio, code.weight_decay, code.max_grad_norm,
            code.realign_batch_size, code.realign_max_length, code.realign_temperature) == (32, 5, 0.1, 0.0, None, 16, 96, 0.1)
    mbert = make_settings({"preset": "acl2023-code"}, model="bert-base-multilingual-cased")
    assert mbert.learning_rate == 2e-5 and mbert.schedule_micro_batch_size == 32
    assert make_settings({"preset": "acl2023-code"}, model="xlm-roberta-base").learning_rate == 7.5e-6
    # the reference's optimizer is torch's Adam (betas 0.9/0.999, eps 1e-8): ours, AdamW without
    # weight decay, takes exactly the same steps
    ours = torch.nn.Parameter(torch.tensor([[1.0, -2.0], [0.5, 3.0]]))
    theirs = torch.nn.Parameter(ours.detach().clone())
    adamw, adam = make_optimizer([ours], code), torch.optim.Adam([theirs], lr=code.learning_rate, betas=(0.9, 0.999), eps=1e-8)
    for _ in range(3):
        for parameter, optimizer in ((ours, adamw), (theirs, adam)):
            optimizer.zero_grad()
            (parameter ** 3).sum().backward()
            optimizer.step()
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-9) and not torch.equal(ours.detach(), torch.tensor([[1.0, -2.0], [0.5, 3.0]]))


def test_no_gradient_clipping_unless_max_grad_norm(small_tokenizer, ntrex_es, monkeypatch):
    calls = []
    clip = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda *a, **k: calls.append(a[1]) or clip(*a, **k))
    for max_grad_norm in (None, 0.5):
        settings = replace(TINY, max_grad_norm=max_grad_norm)
        model = tiny_model(small_tokenizer)
        realigner = build_realigner(model, small_tokenizer, ntrex_es, settings, 0, CPU)
        realign_sequentially(model, realigner, 2, settings, seed=0)
    assert Settings().max_grad_norm is None and calls == [0.5, 0.5]


def test_cross_lingual_transfer_against_another_english_score():
    scores = {"en": 0.8, "es": 0.6}
    assert cross_lingual_transfer(scores) == {"es": pytest.approx(-0.25)}
    assert cross_lingual_transfer(scores, reference=0.75) == {"es": pytest.approx(-0.2)}


def test_ctl_reference_split_dev_scores_the_english_dev_set(toy_assets, tmp_path):
    data_dir, model_dir = toy_assets

    def trial(split):
        settings = dict(data_dir=str(data_dir), cache_dir=str(tmp_path), langs=["es"], epochs=2, batch_size=16,
                        micro_batch_size=16, learning_rate=1e-3, train_subset=64, test_subset=30, parallel_subset=40,
                        align_pairs=20, num_threads=1, ctl_reference_split=split)
        config = dict(model="toy", model_source=str(model_dir), task="udpos", realign="none", pairs="dico",
                      corpus="toy", seed=0, settings=settings)
        return run_trial(config, None, lambda metrics, state: None)

    on_test, on_dev = trial("test"), trial("dev")
    assert set(on_test["score"]) == {"en", "es"} and set(on_dev["score"]) == {"en", "es", "en_dev"}
    assert list((tmp_path / "features").glob("udpos-dev-en-*.pt")), "the English dev split was not read"
    # same training and test sets: same test scores; only m_en changes
    assert on_dev["score"]["en"] == on_test["score"]["en"] and on_dev["score"]["es"] == on_test["score"]["es"]
    en, en_dev, es = on_dev["score"]["en"], on_dev["score"]["en_dev"], on_dev["score"]["es"]
    assert set(on_dev["ctl"]) == {"es"} and on_dev["ctl"]["es"] == pytest.approx((es - en_dev) / en_dev)
    assert on_test["ctl"]["es"] == pytest.approx((es - en) / en)


def test_ud_is_read_remotely_at_release_2_7():
    source = data.get_source("udpos")
    base = "https://raw.githubusercontent.com/UniversalDependencies"
    assert source.remote(split="train", lang="en") == f"{base}/UD_English-EWT/r2.7/en_ewt-ud-train.conllu"
    # the hub's universal_dependencies `zh_gsd` config, which the reference loaded: traditional script
    assert source.remote(split="test", lang="zh") == f"{base}/UD_Chinese-GSD/r2.7/zh_gsd-ud-test.conllu"
    assert all("/r2.7/" in source.remote(split="test", lang=lang) for lang in data.LANGUAGES)
    cached = data._remote_cache_path(source, {"split": "test", "lang": "zh"}, data.Path("/cache"), None)
    assert cached.name == "zh-test-vr2.7-all-lines.jsonl"  # another release is another cache file
