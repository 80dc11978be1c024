"""A task is one registry entry: new tasks registered here, in the test file only, run through
the data checks, featurisation, fine-tuning, evaluation and a whole trial without any other
module knowing them.

- `chunk`: a token task with its own label set (noun and verb chunks, IOB2) over its own data
  source, in a tiny hand-made world (files, parallel corpus, dictionary, a 2-layer BERT).
- `nli-hypothesis`: a one-sentence task over the existing MultiNLI / XNLI files (the hypothesis
  alone, NLI's labels), on real text with a small WordPiece tokenizer trained on it (e5-small's
  takes seconds to load; the task does not depend on the tokenizer).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, BertConfig, BertModel, PreTrainedTokenizerFast

from trainables import data
from trainables.data import DataSource, DataSourceError, Subset
from trainables.encoding import IGNORE_INDEX
from trainables.finetuning import evaluate, fine_tune, predict
from trainables.settings import Settings
from trainables.tasks import (
    NLI_LABELS,
    TASKS,
    SentenceClassification,
    TokenTagging,
    accuracy,
    entity_f1,
    get_task,
)
from trainables.trial import featurize_cached, load_tokenizer, run_trial

CHUNK_TAGS = ("O", "B-NP", "I-NP", "B-VP", "I-VP")
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# word -> (its chunk tag when it opens the chunk, its translation); a sentence is NP VP.
DETERMINERS = {"the": "el", "a": "un"}
NOUNS = {"cat": "gato", "dog": "perro", "bird": "pájaro"}
VERBS = {"sat": "descansó", "ran": "corrió", "sang": "cantó"}
ADVERB = ("fast", "rápido")


def chunk_sentences(lang: str) -> list[dict[str, list[str]]]:
    """Every determiner-noun-verb(-adverb) sentence: each word's tag follows from the word alone."""
    sentences = []
    for det, x_det in DETERMINERS.items():
        for noun, x_noun in NOUNS.items():
            for verb, x_verb in VERBS.items():
                for adverb in (False, True):
                    words = [det, noun, verb] if lang == "en" else [x_det, x_noun, x_verb]
                    labels = ["B-NP", "I-NP", "B-VP"]
                    if adverb:
                        words.append(ADVERB[0] if lang == "en" else ADVERB[1])
                        labels.append("I-VP")
                    sentences.append({"words": words, "labels": labels})
    return sentences


def bert_template(backend: Tokenizer, vocab: dict[str, int]) -> PreTrainedTokenizerFast:
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=64)


def write_token_tsv(path: Path, sentences: list[dict[str, list[str]]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join("".join(f"{w}\t{t}\n" for w, t in zip(s["words"], s["labels"])) + "\n"
                            for s in sentences), encoding="utf-8")


@pytest.fixture
def chunk_task(monkeypatch) -> TokenTagging:
    """The `chunk` task and its data source, registered for this test only."""
    source = DataSource(
        name="chunks", role="task", layout="chunks/{split}-{lang}.tsv, 'token<TAB>chunk tag' lines",
        local_files=lambda split, lang: [f"chunks/{split}-{lang}.tsv"],
        read_local=lambda paths, split, lang, **labels: data.read_token_tsv(paths[0], lang, **labels),
        validate=lambda split, lang: None,
    )
    task = TokenTagging("chunk", CHUNK_TAGS, entity_f1, "f1", {"train": "chunks", "test": "chunks"})
    monkeypatch.setitem(data.DATA_SOURCES, "chunks", source)
    monkeypatch.setitem(TASKS, "chunk", task)
    return task


@pytest.fixture
def tiny_world(tmp_path) -> tuple[Path, Path]:
    """(data_dir, model_dir): chunk files, a parallel corpus and a dictionary for en-es, and a
    2-layer BERT whose word-level tokenizer knows every word."""
    data_dir, model_dir = tmp_path / "data", tmp_path / "model"
    en, es = chunk_sentences("en"), chunk_sentences("es")
    write_token_tsv(data_dir / "chunks" / "train-en.tsv", en)
    write_token_tsv(data_dir / "chunks" / "test-en.tsv", en[::3])
    write_token_tsv(data_dir / "chunks" / "test-es.tsv", es[::3])
    corpus = data_dir / "parallel" / "tiny"
    corpus.mkdir(parents=True)
    (corpus / "en-es.en").write_text("".join(" ".join(s["words"]) + "\n" for s in en), encoding="utf-8")
    (corpus / "en-es.es").write_text("".join(" ".join(s["words"]) + "\n" for s in es), encoding="utf-8")
    translations = {**DETERMINERS, **NOUNS, **VERBS, ADVERB[0]: ADVERB[1]}
    (data_dir / "muse").mkdir()
    (data_dir / "muse" / "en-es.txt").write_text("".join(f"{a}\t{b}\n" for a, b in translations.items()))
    (data_dir / "muse" / "es-en.txt").write_text("".join(f"{b}\t{a}\n" for a, b in translations.items()))

    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + sorted({*translations, *translations.values()}))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    bert_template(backend, vocab).save_pretrained(model_dir)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(model_dir)
    return data_dir, model_dir


def test_a_token_task_with_its_own_labels_and_data_source_is_checked_before_a_sweep(chunk_task, tiny_world):
    data_dir, _ = tiny_world
    assert get_task("chunk") is chunk_task
    needs = data.required_data("task", "chunk", ["es"], data_dir)
    # no dev split in the entry: none is required; the test split in English and Spanish
    assert [need.label for need in needs] == ["chunks split=train lang=en", "chunks split=test lang=en",
                                               "chunks split=test lang=es"]
    assert {need.labels for need in needs} == {CHUNK_TAGS}
    assert data.describe_missing("task", "chunk", ["es"], data_dir) == []
    assert data.describe_unreadable("task", "chunk", ["es"], data_dir) == []
    assert data.describe_missing("task", "chunk", ["fr"], data_dir)[0].startswith("chunks (split=test lang=fr)")
    with pytest.raises(ValueError, match="chunk: split 'dev' not available"):
        data.load_task_split("chunk", "dev", "en", data_dir)

    # the reader checks the task's labels: a chunk tag file is no NER file, a NER tag no chunk tag
    with pytest.raises(DataSourceError, match="tag 'B-NP' is not one of O B-PER"):
        data.read_token_tsv(data_dir / "chunks" / "test-es.tsv", "es")
    bad = data_dir / "chunks" / "test-es.tsv"
    bad.write_text(bad.read_text(encoding="utf-8").replace("B-VP", "B-LOC", 1), encoding="utf-8")
    [line] = data.describe_unreadable("task", "chunk", ["es"], data_dir)
    assert line == f"{bad}:3: tag 'B-LOC' is not one of {' '.join(CHUNK_TAGS)}"


def test_a_token_task_with_its_own_labels_fine_tunes_and_evaluates(chunk_task, tiny_world):
    data_dir, model_dir = tiny_world
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    settings = Settings(epochs=6, batch_size=8, micro_batch_size=8, learning_rate=3e-3, num_threads=1)
    train = data.load_task_split("chunk", "train", "en", data_dir)
    test = data.load_task_split("chunk", "test", "es", data_dir)
    features = chunk_task.featurize(tokenizer, train, settings)
    assert len(features) == len(train) == 36 and features.kind == "token"
    model = chunk_task.load_model(str(model_dir))
    assert model.config.id2label == dict(enumerate(CHUNK_TAGS))
    before = evaluate(model, tokenizer, "chunk", test, settings)
    fine_tune(model, tokenizer, "chunk", features, settings, seed=0)
    gold, predicted = predict(model, tokenizer, "chunk", test, settings)
    assert gold == [e["labels"] for e in test]
    assert [len(p) for p in predicted] == [len(e["words"]) for e in test]
    assert {label for p in predicted for label in p} <= set(CHUNK_TAGS)
    after = evaluate(model, tokenizer, "chunk", test, settings)
    english = evaluate(model, tokenizer, chunk_task, train, settings)
    assert english == 1.0 and after > before, (before, after)  # each word's tag follows from the word


def test_a_registered_task_runs_as_a_whole_trial(chunk_task, tiny_world):
    data_dir, model_dir = tiny_world
    settings = dict(data_dir=str(data_dir), cache_dir=str(data_dir.parent / "cache"), langs=["es"], epochs=2,
                    batch_size=8, micro_batch_size=8, learning_rate=3e-3, align_pairs=20, num_threads=1)
    config = dict(model="tiny", model_source=str(model_dir), task="chunk", realign="none", pairs="dico",
                  corpus="tiny", seed=0, settings=settings)
    metrics = run_trial(config, None, lambda metrics, state: None)
    assert set(metrics["score"]) == {"en", "es"} and set(metrics["ctl"]) == {"es"}
    assert 0 < metrics["score"]["en"] <= 1
    assert metrics["align"]["finetuned"]["strong"]["en-x"]["es"].keys() == {"0", "1", "2"}  # layers 0..L


@pytest.fixture
def hypothesis_task(monkeypatch) -> SentenceClassification:
    """A one-sentence task over the NLI files: the hypothesis alone (App. B's data, XNLI's labels)."""
    task = SentenceClassification("nli-hypothesis", NLI_LABELS, accuracy, "accuracy",
                                  {"train": "mnli", "dev": "mnli", "test": "xnli"}, text_fields=("hypothesis",))
    monkeypatch.setitem(TASKS, "nli-hypothesis", task)
    return task


def test_a_sentence_task_over_existing_files(hypothesis_task, shared_data):
    assert [n.label for n in data.required_data("task", "nli-hypothesis", ["fr"], shared_data)] == [
        n.label for n in data.required_data("task", "xnli", ["fr"], shared_data)]
    assert data.describe_missing("task", "nli-hypothesis", ["fr"], shared_data) == []
    settings = Settings(epochs=1, batch_size=8, micro_batch_size=8, nli_max_length=32, num_threads=1)
    train = data.load_task_split("nli-hypothesis", "train", "en", shared_data, subset=Subset(16))
    test = data.load_task_split("nli-hypothesis", "test", "fr", shared_data, subset=Subset(12))
    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=False)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.train_from_iterator([e[f] for e in train + test for f in ("premise", "hypothesis")],
                                trainers.WordPieceTrainer(vocab_size=300, special_tokens=SPECIAL_TOKENS))
    tokenizer = bert_template(backend, backend.get_vocab())
    features = hypothesis_task.featurize(tokenizer, test, settings)
    expected = tokenizer([e["hypothesis"] for e in test], truncation=True, max_length=32)["input_ids"]
    rows = [features.tokens["input_ids"][a:b].tolist() for a, b in zip(features.offsets, features.offsets[1:])]
    assert rows == expected  # the premise is not in the input
    assert len(TASKS["xnli"].featurize(tokenizer, test, settings).tokens["input_ids"]) > len(
        features.tokens["input_ids"])

    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id,
                        **hypothesis_task.model_kwargs())
    model = hypothesis_task.model_class.from_config(config)
    fine_tune(model, tokenizer, "nli-hypothesis", train, settings, seed=0)
    gold, predicted = predict(model, tokenizer, "nli-hypothesis", test, settings)
    assert gold == [[e["label"]] for e in test]
    assert all(len(p) == 1 and p[0] in NLI_LABELS for p in predicted)
    score = evaluate(model, tokenizer, "nli-hypothesis", test, settings)
    assert score == accuracy(gold, predicted)


def test_an_entry_that_lacks_what_the_pipeline_needs_is_refused():
    with pytest.raises(ValueError, match="task 'pos2': no data source for split\\(s\\) test"):
        TokenTagging("pos2", ("A", "B"), accuracy, "accuracy", {"train": "udpos"})
    with pytest.raises(ValueError, match="labels must be distinct"):
        TokenTagging("pos2", ("A", "A"), accuracy, "accuracy", {"train": "udpos", "test": "udpos"})
    with pytest.raises(ValueError, match="text_fields must name one or two"):
        SentenceClassification("three", NLI_LABELS, accuracy, "accuracy", {"train": "mnli", "test": "xnli"},
                               text_fields=("a", "b", "c"))


def test_cached_features_follow_the_entry_not_only_its_name(chunk_task, tiny_world, monkeypatch):
    data_dir, model_dir = tiny_world
    settings = Settings(data_dir=str(data_dir), cache_dir=str(data_dir.parent / "cache"))
    tokenizer, config = load_tokenizer(str(model_dir)), {"model_source": str(model_dir)}
    first = featurize_cached(chunk_task, tokenizer, config, settings, "test", "es", Subset())
    # the same name with another label order: other label ids, so other features
    reordered = replace(chunk_task, labels=tuple(reversed(CHUNK_TAGS)))
    monkeypatch.setitem(TASKS, "chunk", reordered)
    second = featurize_cached(reordered, tokenizer, config, settings, "test", "es", Subset())
    assert len(list((data_dir.parent / "cache" / "features").glob("chunk-test-es-*.pt"))) == 2
    scored = first.labels != IGNORE_INDEX
    assert torch.equal(second.labels[scored], len(CHUNK_TAGS) - 1 - first.labels[scored])
