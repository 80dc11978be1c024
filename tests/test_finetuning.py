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
    settings = Settings(device="cpu", epochs=5, batch_size=32, micro_batch_size=8, learning_rate=2e-5)
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
        encoding = tokenizer(example["words"], is_split_into_words=True, truncation=True, max_length=128)
        assert features.tokens["input_ids"][start:stop].tolist() == encoding["input_ids"]
        word_ids = encoding.word_ids()
        labelled = (labels != IGNORE_INDEX).nonzero().squeeze(1).tolist()
        # one labelled token per word, in word order, each the first token of its word
        assert [word_ids[p] for p in labelled] == list(range(len(example["words"])))
        assert all(word_ids[p - 1] != word_ids[p] or tokenizer.convert_ids_to_tokens(encoding["input_ids"][p - 1]) == "▁" for p in labelled)
        assert [task.labels[j] for j in labels[labelled].tolist()] == example["labels"]
        split_words += len(encoding["input_ids"]) - 2 - len(example["words"])
    assert split_words > 20  # the sample does exercise multi-subword words


def test_nli_pairs_are_tokenised_together(tokenizer):
    examples = data.load_task_split("xnli", "test", "en", data_dir=DATA_DIR, subset=data.Subset(10))
    task = TASKS["xnli"]
    features = task.featurize(tokenizer, examples, Settings(task_max_length=40))
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
    settings = Settings(device="cpu", epochs=1, batch_size=8, micro_batch_size=8, task_max_length=64)
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
    assert resumed_realigner.batches.drawn == realigner.batches.drawn == 24


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
