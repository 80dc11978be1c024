"""Long sentences: overflow windows at word boundaries, every word scored once, stitched back;
NLI's own length limit; realignment pairs lost to the length limit are counted."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForTokenClassification, BertModel

from trainables import data
from trainables.encoding import IGNORE_INDEX, encode_words, lone_prefix_ids
from trainables.finetuning import predict
from trainables.realignment import RealignmentBatch, realignment_step_loss
from trainables.settings import Settings
from trainables.tasks import TASKS


@pytest.fixture(scope="module")
def tokenizer(e5_small):
    return AutoTokenizer.from_pretrained(e5_small)


@pytest.fixture(scope="module")
def ar_test(shared_data):
    return data.read_conllu(Path(shared_data, "ud", "ar_padt-ud-test.conllu"))


@pytest.fixture(scope="module")
def longest_ar(ar_test, tokenizer):
    """The Arabic UD test sentence with the most subwords (363 with e5-small's tokenizer)."""
    lengths = [len(ids) for ids in tokenizer([e["words"] for e in ar_test], is_split_into_words=True)["input_ids"]]
    return ar_test[max(range(len(ar_test)), key=lengths.__getitem__)]


def tiny_tagger(tokenizer, n_labels: int) -> BertForTokenClassification:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=512, num_labels=n_labels,
                        pad_token_id=tokenizer.pad_token_id)
    return BertForTokenClassification(config).eval()


def pieces_without_lone(tokenizer, words: list[str]) -> list[list[int]]:
    """Each word's subword ids, lone "▁" deleted, in plain Python."""
    lone = set(lone_prefix_ids(tokenizer))
    encoding = tokenizer(words, is_split_into_words=True, add_special_tokens=False)
    pieces: list[list[int]] = [[] for _ in words]
    for token, word in zip(encoding["input_ids"], encoding.word_ids()):
        if token not in lone:
            pieces[word].append(token)
    return pieces


def room_taken(tokenizer, words: list[str], word_set: set[int]) -> int:
    """Subwords of these words, lone "▁" pieces included (the reference counts them in the window)."""
    return sum(w in word_set for w in tokenizer(words, is_split_into_words=True, add_special_tokens=False).word_ids())


@pytest.mark.parametrize("takes_room", [True, False])
def test_windows_cut_at_word_boundaries_and_lose_nothing(tokenizer, longest_ar, takes_room):
    words = longest_ar["words"]
    encoded = encode_words(tokenizer, [words], 128, windows=True, lone_prefix_takes_room=takes_room)
    ids, mask = encoded.inputs["input_ids"], encoded.inputs["attention_mask"].bool()
    assert len(ids) >= 3 and (encoded.sentence == 0).all()
    pieces = pieces_without_lone(tokenizer, words)
    content = []
    for row in range(len(ids)):
        row_ids = ids[row, mask[row]].tolist()
        row_words = set(encoded.token_word[row][encoded.token_word[row] >= 0].tolist())
        used = room_taken(tokenizer, words, row_words) if takes_room else len(row_ids) - 2
        assert used <= 126
        assert row_ids[0] == tokenizer.cls_token_id and row_ids[-1] == tokenizer.sep_token_id
        content.append(row_ids[1:-1])
        if row + 1 < len(ids):  # greedy: the next window's first word would not have fitted
            next_word = int(encoded.token_word[row + 1][encoded.token_word[row + 1] >= 0][0])
            needs = room_taken(tokenizer, words, {next_word}) if takes_room else len(pieces[next_word])
            assert used + needs > 126
    assert sum(content, []) == sum(pieces, [])  # every piece once, in order
    rows_per_word = torch.stack([(encoded.token_word == w).any(1) for w in range(len(words))]).sum(1)
    assert (rows_per_word == 1).all()  # no word split across windows
    assert encoded.word_mask.sum().item() == len(words)


def test_a_word_longer_than_a_window_is_alone_and_cut(tokenizer):
    words = ["a", "Donaudampfschifffahrtsgesellschaftskapitän", "b"]
    n_pieces = len(pieces_without_lone(tokenizer, words)[1])
    assert n_pieces > 4
    encoded = encode_words(tokenizer, [words], 6, windows=True)  # 4 word pieces per window
    assert encoded.token_word.tolist() == [[-1, 0, -1, -1, -1, -1], [-1, 1, 1, 1, 1, -1], [-1, 2, -1, -1, -1, -1]]
    assert encoded.word_mask.sum(0).tolist() == [1, 1, 1]


def test_long_sentence_is_scored_in_full_and_stitched(tokenizer, longest_ar, ar_test):
    task = TASKS["udpos"]
    examples = [ar_test[0], longest_ar, ar_test[1]]
    settings = Settings(eval_batch_size=2)
    features = task.featurize(tokenizer, examples, settings)
    assert features.n_examples == 3 and len(features) >= 5  # the windows are the rows trained on
    assert features.example.tolist() == sorted(features.example.tolist())
    assert features.lengths.max() <= 128
    model = tiny_tagger(tokenizer, len(task.labels))
    gold, predicted = predict(model, tokenizer, task, features, settings)
    assert gold == [e["labels"] for e in examples]
    assert [len(p) for p in predicted] == [len(e["words"]) for e in examples]
    # each window predicted alone, its labelled positions taken in order
    alone: list[list[str]] = [[] for _ in examples]
    with torch.no_grad():
        for row in range(len(features)):
            batch = features.collate([row])
            labels = batch.pop("labels")[0]
            argmax = model(**batch).logits.argmax(-1)[0]
            alone[int(features.example[row])] += [task.labels[j] for j in argmax[labels != IGNORE_INDEX].tolist()]
    assert predicted == alone

    truncated = task.featurize(tokenizer, examples, replace(settings, long_sentences="truncate"))
    assert len(truncated) == 3
    gold_truncated, _ = predict(model, tokenizer, task, truncated, settings)
    assert len(gold_truncated[1]) < len(longest_ar["words"]) and gold_truncated[0] == gold[0]


def test_no_word_of_the_arabic_test_set_is_unscored(tokenizer, ar_test):
    task = TASKS["udpos"]
    n_words = sum(len(e["words"]) for e in ar_test)
    for mode, lost in (("windows", False), ("truncate", True)):
        features = task.featurize(tokenizer, ar_test, Settings(long_sentences=mode))
        scored = int((features.labels != IGNORE_INDEX).sum())
        assert (scored < n_words) == lost and scored <= n_words


def test_nli_uses_its_own_length_limit(tokenizer, shared_data):
    examples = data.load_task_split("xnli", "test", "en", data_dir=shared_data, subset=data.Subset(20))
    features = TASKS["xnli"].featurize(tokenizer, examples, Settings(task_max_length=16, nli_max_length=40))
    assert 16 < features.lengths.max() <= 40
    whole = TASKS["xnli"].featurize(tokenizer, examples, Settings(task_max_length=16))
    assert whole.lengths.max() > 40  # nli_max_length's default, 256, cuts none of these


def test_realignment_counts_pairs_lost_to_the_length_limit(tokenizer):
    torch.manual_seed(0)
    encoder = BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1,
                                   num_attention_heads=2, intermediate_size=32)).eval()
    batch = RealignmentBatch(
        langs=["zh", "zh"],
        en_words=[["I", "love", "Beijing", "very", "much"], ["good", "day"]],
        x_words=[["我", "很", "爱", "北京"], ["你", "好"]],
        pairs=torch.tensor([[0, 0, 0], [0, 1, 2], [0, 2, 3], [1, 0, 1]]),
    )
    device = torch.device("cpu")
    counts: dict[str, int] = {}
    with torch.no_grad():
        realignment_step_loss(encoder, None, batch, tokenizer, Settings(), device, counts=counts)
        assert counts == {"pairs": 4, "pairs_dropped": 0}
        short = Settings(realign_max_length=5)  # 3 word pieces a sentence
        realignment_step_loss(encoder, None, batch, tokenizer, short, device, counts=counts)
    encoded = encode_words(tokenizer, batch.en_words + batch.x_words, 5)
    lost = sum(not (encoded.word_mask[i, s] and encoded.word_mask[2 + i, t]) for i, s, t in batch.pairs.tolist())
    assert lost > 0 and counts == {"pairs": 8, "pairs_dropped": lost}
