"""The toy world (toyworld/): layout and formats of ../shared/data, determinism, languages that
differ in what they share with English, a loadable tiny BERT whose tokenizer splits some words."""
from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import conllu
import jieba
import pytest
import torch

import toyworld as toy
from toyworld import model as toy_model
from toyworld import world as toy_world
from trainables import formats

TARGETS = ("ar", "es", "fr", "ru", "zh")
SMALL = dict(n_train=40, n_test=12, n_parallel=30)  # fast variants for byte-level checks
REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return toy.write_toy_data(tmp_path_factory.mktemp("toy") / "data")


@pytest.fixture(scope="module")
def model_dir(data_dir: Path, tmp_path_factory) -> Path:
    return toy.write_toy_model(tmp_path_factory.mktemp("toy") / "model", data_dir, pretrain_steps=20)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _tsv_rows(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines() if line]


# --- layout ------------------------------------------------------------------------------------


def test_layout_matches_the_real_data_folder(data_dir: Path) -> None:
    expected = {
        "ud/en_ewt-ud-train.conllu", "ud/en_ewt-ud-dev.conllu", "ud/en_ewt-ud-test.conllu",
        "ud/ar_padt-ud-test.conllu", "ud/es_gsd-ud-test.conllu", "ud/fr_gsd-ud-test.conllu",
        "ud/ru_gsd-ud-test.conllu", "ud/zh_gsd-ud-test.conllu",
        "wikiann/train-en.tsv", "wikiann/dev-en.tsv", "mnli/train.tsv", "mnli/dev.tsv",
        *(f"wikiann/test-{lang}.tsv" for lang in ("en", *TARGETS)),
        *(f"xnli/test-{lang}.tsv" for lang in ("en", *TARGETS)),
        *(f"muse/en-{lang}.txt" for lang in TARGETS), *(f"muse/{lang}-en.txt" for lang in TARGETS),
        *(f"parallel/toy/en-{lang}.{side}" for lang in TARGETS for side in ("en", lang)),
        toy.DATA_MANIFEST,
    }
    assert set(_files(data_dir)) == expected
    if REAL_DATA.is_dir():  # every toy data file except the corpus has its real counterpart
        missing = {p for p in expected - {toy.DATA_MANIFEST}
                   if not p.startswith("parallel/") and not (REAL_DATA / p).is_file()}
        assert not missing


def test_conllu_parses_with_upos_lemmas_and_a_tree(data_dir: Path) -> None:
    for path in sorted((data_dir / "ud").glob("*.conllu")):
        sentences = conllu.parse(path.read_text(encoding="utf-8"))
        expected = toy.DEFAULT_TRAIN_SIZE if "train" in path.name else toy.DEFAULT_TEST_SIZE
        assert len(sentences) == expected, path
        for sentence in sentences:
            assert sentence.metadata["text"] and sentence.metadata["sent_id"]
            assert all(len(token) == 10 for token in sentence)
            assert {t["upos"] for t in sentence} <= {
                "NOUN", "VERB", "ADJ", "ADV", "ADP", "DET", "PRON", "PROPN", "NUM", "CCONJ", "PART", "AUX", "PUNCT"}
            assert sentence[-1]["upos"] == "PUNCT"
            tree = sentence.to_tree()  # raises unless exactly one root and all heads resolve
            assert tree.token["deprel"] == "root"
            assert sum(1 for _ in _walk(tree)) == len(sentence)
            # `# text` is the tokens joined by the SpaceAfter convention of UD
            rebuilt = "".join(t["form"] + ("" if (t["misc"] or {}).get("SpaceAfter") == "No" else " ")
                              for t in sentence).rstrip()
            assert rebuilt == sentence.metadata["text"]
    zh = conllu.parse((data_dir / "ud/zh_gsd-ud-test.conllu").read_text(encoding="utf-8"))
    assert all(len(t["form"]) == 1 or t["form"].isdigit() for s in zh for t in s)  # one ideograph a word


def _walk(tree):
    yield tree
    for child in tree.children:
        yield from _walk(child)


def test_wikiann_token_tag_format_with_iob2_entities(data_dir: Path) -> None:
    for path in sorted((data_dir / "wikiann").glob("*.tsv")):
        text = path.read_text(encoding="utf-8")
        assert text.endswith("\n\n")  # blank line after every sentence, as in the real files
        sentences = [block.splitlines() for block in text.strip("\n").split("\n\n")]
        expected = toy.DEFAULT_TRAIN_SIZE if "train" in path.name else toy.DEFAULT_TEST_SIZE
        assert len(sentences) == expected
        for lines in sentences:
            rows = [line.split("\t") for line in lines]
            assert all(len(row) == 2 and row[0] and not row[0].startswith(("en:", "zh:")) for row in rows)
            tags = [tag for _, tag in rows]
            assert any(tag.startswith("B-") for tag in tags)  # every sentence names an entity
            for previous, tag in zip(["O"] + tags, tags):  # IOB2: I-X only continues X
                assert tag == "O" or re.fullmatch(r"[BI]-(PER|ORG|LOC)", tag)
                if tag.startswith("I-"):
                    assert previous[2:] == tag[2:]


def test_nli_files_have_three_columns_and_balanced_labels(data_dir: Path) -> None:
    for path in [data_dir / "mnli/train.tsv", data_dir / "mnli/dev.tsv", *sorted((data_dir / "xnli").glob("*.tsv"))]:
        rows = _tsv_rows(path)
        assert all(len(row) == 3 and row[0] and row[1] for row in rows), path
        labels = Counter(row[2] for row in rows)
        assert set(labels) == set(toy.NLI_LABELS)
        assert max(labels.values()) - min(labels.values()) <= 1
    # XNLI test sets are translations of one English set: same labels line by line, and the
    # rule-made hypotheses are recognisable: a contradiction toggles the negation word.
    english = _tsv_rows(data_dir / "xnli/test-en.tsv")
    for lang in TARGETS:
        assert [r[2] for r in _tsv_rows(data_dir / f"xnli/test-{lang}.tsv")] == [r[2] for r in english]
    negation = toy.make_world().lexicons["en"][toy_world.NEGATION][0]
    for premise, hypothesis, label in english:
        if label == "contradiction":
            assert (negation in premise.split()) != (negation in hypothesis.split())
        if label == "entailment":  # the premise minus some modifiers: no new word
            assert set(re.findall(r"\w+", hypothesis.lower())) <= set(re.findall(r"\w+", premise.lower()))


def test_parallel_corpus_is_line_aligned_and_segmentable(data_dir: Path) -> None:
    jieba.setLogLevel(logging.WARNING)
    english = (data_dir / "parallel/toy/en-zh.en").read_text(encoding="utf-8")
    for lang in TARGETS:
        en = (data_dir / f"parallel/toy/en-{lang}.en").read_text(encoding="utf-8").splitlines()
        other = (data_dir / f"parallel/toy/en-{lang}.{lang}").read_text(encoding="utf-8").splitlines()
        assert len(en) == len(other) == toy.DEFAULT_PARALLEL_SIZE
        assert "\n".join(en) + "\n" == english  # the same English side for every pair, like NTREX
        assert all(line.strip() and "\t" not in line for line in other)
    zh = (data_dir / "parallel/toy/en-zh.zh").read_text(encoding="utf-8").splitlines()
    assert not any(" " in line for line in zh)  # Chinese is written without spaces
    # one ideograph a word: jieba (the paper's pipeline segments zh) recovers every word
    for line in zh:
        assert [w for w in jieba.lcut(line) if w.strip()] == re.findall(r"\d+|\S", line)


def test_scripts_differ_by_language(data_dir: Path) -> None:
    def share(lang: str, pattern: str) -> float:
        text = re.sub(r"[\d\W]", "", (data_dir / f"parallel/toy/en-{lang}.{lang}").read_text(encoding="utf-8"))
        return len(re.findall(pattern, text)) / len(text)

    assert share("ru", r"[\u0400-\u04FF]") > 0.95
    assert share("ar", r"[\u0600-\u06FF]") > 0.95
    assert share("zh", r"[\u3400-\u4DBF]") > 0.95
    assert share("es", r"[a-zA-ZñáÁÑ]") > 0.95


def test_dictionaries_have_ambiguous_entries_both_ways(data_dir: Path) -> None:
    for lang in TARGETS:
        en_x, x_en = defaultdict(set), defaultdict(set)
        for source, target in _tsv_rows(data_dir / f"muse/en-{lang}.txt"):
            en_x[source].add(target)
        for source, target in _tsv_rows(data_dir / f"muse/{lang}-en.txt"):
            x_en[source].add(target)
        assert sum(len(v) > 1 for v in en_x.values()) >= 3, lang  # synonyms: one en, two x
        assert sum(len(v) > 1 for v in x_en.values()) >= 3, lang  # homonyms: two en, one x
        # the two directions list the same links
        assert {(s, t) for s, ts in en_x.items() for t in ts} == {(t, s) for s, ts in x_en.items() for t in ts}
    # names keep their spelling in es/fr: identical pairs the paper's dictionary filter drops
    identical = [s for s, t in _tsv_rows(data_dir / "muse/en-fr.txt") if s == t]
    assert identical and all(word[0].isupper() for word in identical)


def test_every_file_reads_back_with_the_project_readers(data_dir: Path) -> None:
    """The folder is written by trainables.data's writers: its readers accept every file."""
    for path in sorted((data_dir / "ud").glob("*.conllu")):
        expected = toy.DEFAULT_TRAIN_SIZE if "train" in path.name else toy.DEFAULT_TEST_SIZE
        assert len(formats.read_conllu(path)) == expected
    for path in sorted((data_dir / "wikiann").glob("*.tsv")):
        lang = path.stem.split("-")[1]
        assert all(any(t.startswith("B-") for t in s["labels"]) for s in formats.read_token_tsv(path, lang))
    for path in sorted(data_dir.glob("*nli/*.tsv")):
        assert {e["label"] for e in formats.read_nli_tsv(path)} == set(toy.NLI_LABELS)
    for lang in TARGETS:
        corpus = data_dir / "parallel" / "toy" / f"en-{lang}"
        assert len(formats.read_line_aligned(corpus.with_suffix(".en"), corpus.with_suffix(f".{lang}"))) == \
            toy.DEFAULT_PARALLEL_SIZE
        assert formats.read_muse(data_dir / "muse" / f"en-{lang}.txt")


def test_languages_differ_in_the_cognates_they_share_with_english() -> None:
    """es shares most content words with English (stem + ending), fr fewer, the other scripts none:
    the toy counterpart of close and distant languages."""
    world = toy.make_world()
    content = [k for kind in toy_world.CONTENT_KINDS for k in world.by_kind[kind]]

    def cognate_share(lang: str) -> float:
        return sum(any(form.startswith(world.lexicons["en"][k][0]) for form in world.lexicons[lang][k])
                   for k in content) / len(content)

    shares = {lang: cognate_share(lang) for lang in TARGETS}
    assert shares["es"] > shares["fr"] + 0.2 > 0.3
    assert shares["ru"] == shares["ar"] == shares["zh"] == 0.0
    assert all(world.lexicons["es"][k][0] != world.lexicons["en"][k][0] for k in content)  # never identical


def test_dictionary_words_occur_in_the_parallel_corpus(data_dir: Path) -> None:
    """Dictionary pairs (§3.2) are findable: most English words of the corpus are in the
    dictionary and one of their translations is in the translated line."""
    for lang in ("es", "ru"):
        dictionary = defaultdict(set)
        for source, target in _tsv_rows(data_dir / f"muse/en-{lang}.txt"):
            dictionary[source].add(target)
        en = (data_dir / f"parallel/toy/en-{lang}.en").read_text(encoding="utf-8").splitlines()
        other = (data_dir / f"parallel/toy/en-{lang}.{lang}").read_text(encoding="utf-8").splitlines()
        found = total = 0
        for source_line, target_line in zip(en, other):
            targets = set(re.findall(r"\w+", target_line))
            for word in re.findall(r"\w+", source_line)[1:]:  # the first is capitalised
                if word.isalpha() and word.islower():
                    total += 1
                    found += bool(dictionary[word] & targets)
        assert found / total > 0.7, lang


# --- determinism and atomic publication ------------------------------------------------------


def test_same_seed_same_bytes_and_other_seed_other_world(tmp_path: Path) -> None:
    first = _files(toy.write_toy_data(tmp_path / "a", seed=3, **SMALL))
    second = _files(toy.write_toy_data(tmp_path / "b", seed=3, **SMALL))
    other = _files(toy.write_toy_data(tmp_path / "c", seed=4, **SMALL))
    assert first == second
    assert first.keys() == other.keys()
    assert first["muse/en-es.txt"] != other["muse/en-es.txt"]
    assert json.loads(first[toy.DATA_MANIFEST])["seed"] == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_existing_folder_is_kept_or_refused(tmp_path: Path) -> None:
    out = toy.write_toy_data(tmp_path / "data", **SMALL)
    marker = out / "ud" / "marker"
    marker.write_text("kept")
    assert toy.write_toy_data(tmp_path / "data", **SMALL) == out and marker.exists()  # not rewritten
    with pytest.raises(FileExistsError, match="other parameters"):
        toy.write_toy_data(tmp_path / "data", seed=1, **SMALL)
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "README.md").write_text("someone's data")
    with pytest.raises(FileExistsError, match="not a toy folder"):
        toy.write_toy_data(tmp_path / "real", **SMALL)
    (tmp_path / "empty").mkdir()  # an empty folder (e.g. made by the caller) is filled
    assert (toy.write_toy_data(tmp_path / "empty", **SMALL) / toy.DATA_MANIFEST).is_file()


def test_bad_arguments_give_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="did you mean 'fr'"):
        toy.write_toy_data(tmp_path / "x", langs=("fra",))
    with pytest.raises(ValueError, match="n_test=0"):
        toy.write_toy_data(tmp_path / "x", n_test=0)
    with pytest.raises(FileNotFoundError, match="write_toy_data first"):
        toy.write_toy_model(tmp_path / "m", tmp_path / "missing")


def test_subset_of_languages(tmp_path: Path) -> None:
    files = _files(toy.write_toy_data(tmp_path / "d", langs=("fr",), **SMALL))
    assert "muse/en-fr.txt" in files and "ud/fr_gsd-ud-test.conllu" in files
    assert not any("zh" in name or "ar_" in name for name in files)


# --- tokenizer ---------------------------------------------------------------------------------


def test_wordpiece_vocab_by_hand() -> None:
    # "abab" x3 = [a, ##b, ##a, ##b], "ab" x2 = [a, ##b]. Pair counts: (a,##b) 3 + 2 = 5,
    # (##b,##a) 3, (##a,##b) 3. First merge: (a,##b) -> "ab"; "abab" becomes [ab, ##a, ##b].
    # Then (ab,##a) = 3 and (##a,##b) = 3 tie: the smaller pair ("##a" < "ab") wins -> "##ab".
    vocab = toy.learn_wordpiece_vocab({"abab": 3, "ab": 2}, vocab_size=len(toy.SPECIAL_TOKENS) + 5)
    assert vocab[:len(toy.SPECIAL_TOKENS)] == list(toy.SPECIAL_TOKENS)
    assert vocab[len(toy.SPECIAL_TOKENS):] == ["##a", "##b", "a", "ab", "##ab"]  # alphabet sorted, then merges
    # a vocabulary no larger than the alphabet stops before merging
    assert toy.learn_wordpiece_vocab({"abab": 3}, vocab_size=1) == [*toy.SPECIAL_TOKENS, "##a", "##b", "a"]


def test_tokenizer_training_is_deterministic(data_dir: Path) -> None:
    texts = list(toy_model.data_texts(data_dir))
    assert toy.train_tokenizer(texts).get_vocab() == toy.train_tokenizer(texts).get_vocab()


# --- model -------------------------------------------------------------------------------------


def test_model_loads_offline_and_gives_hidden_states(model_dir: Path, data_dir: Path) -> None:
    from transformers import (AutoConfig, AutoModel, AutoModelForSequenceClassification,
                              AutoModelForTokenClassification, AutoTokenizer)

    config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
    assert (config.model_type, config.hidden_size, config.num_hidden_layers) == ("bert", 32, 2)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    assert tokenizer.is_fast and len(tokenizer) == config.vocab_size
    model = AutoModel.from_pretrained(model_dir, local_files_only=True).eval()
    lines = (data_dir / "parallel/toy/en-ar.ar").read_text(encoding="utf-8").splitlines()[:3]
    batch = tokenizer(lines, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True)
    assert len(out.hidden_states) == config.num_hidden_layers + 1  # embeddings + each layer
    assert all(h.shape == (3, batch["input_ids"].shape[1], 32) for h in out.hidden_states)
    assert torch.isfinite(out.last_hidden_state).all()
    token_model = AutoModelForTokenClassification.from_pretrained(model_dir, num_labels=17, local_files_only=True)
    assert token_model(**batch).logits.shape[-1] == 17
    # the task model's body is the saved encoder, not a fresh initialisation (prefix "bert.")
    body = {name: weight for name, weight in model.state_dict().items() if not name.startswith("pooler.")}
    assert body
    for name, weight in body.items():  # token classifiers have no pooler
        assert torch.equal(token_model.bert.state_dict()[name], weight), name
    pair = tokenizer(["Premise ."], ["Hypothesis ."], return_tensors="pt")
    assert pair["token_type_ids"].max() == 1  # BERT sentence-pair format
    nli_model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=3, local_files_only=True)
    assert nli_model(**pair).logits.shape == (1, 3)
    manifest = json.loads((model_dir / toy.MODEL_MANIFEST).read_text())
    assert manifest["pretrain_steps"] == 20 and manifest["data"]["seed"] == 0


def test_tokenizer_splits_some_words_and_maps_words_back(model_dir: Path, data_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    sentences = conllu.parse((data_dir / "ud/fr_gsd-ud-test.conllu").read_text(encoding="utf-8"))
    words = [[t["form"] for t in s] for s in sentences]
    batch = tokenizer(words, is_split_into_words=True, truncation=True, max_length=96)
    pieces_per_word = Counter()
    for b, sentence in enumerate(words):
        word_ids = batch.word_ids(b)
        assert [w for w in dict.fromkeys(word_ids) if w is not None] == list(range(len(sentence)))
        assert tokenizer.unk_token_id not in batch["input_ids"][b]
        pieces_per_word.update(Counter(w for w in word_ids if w is not None).values())
    assert pieces_per_word[1] > 0.5 * sum(pieces_per_word.values())  # most words are one token
    assert sum(n for k, n in pieces_per_word.items() if k > 1) > 0.05 * sum(pieces_per_word.values())
    # a split word's pieces: first piece plain, others "##", joining back to the word
    split = next(w for s in words for w in s if len(tokenizer.tokenize(w)) > 1)
    pieces = tokenizer.tokenize(split)
    assert not pieces[0].startswith("##") and all(p.startswith("##") for p in pieces[1:])
    assert pieces[0] + "".join(p[2:] for p in pieces[1:]) == split


def test_model_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    small = toy.write_toy_data(tmp_path / "data", **SMALL)
    state, threads = torch.get_rng_state(), torch.get_num_threads()
    first = toy.write_toy_model(tmp_path / "m1", small, pretrain_steps=3, seed=5)
    assert torch.equal(state, torch.get_rng_state())  # the caller's torch RNG is left alone
    torch.manual_seed(123)  # ... and does not matter
    second = toy.write_toy_model(tmp_path / "m2", small, pretrain_steps=3, seed=5)
    assert _files(first) == _files(second)
    assert torch.get_num_threads() == threads  # the thread setting is restored


def test_masking_follows_bert_recipe() -> None:
    ids = torch.randint(len(toy.SPECIAL_TOKENS), 100, (200, 100))
    special = torch.zeros_like(ids, dtype=torch.bool)
    special[:, 0] = True  # e.g. [CLS]: never masked
    corrupted, labels = toy_model.mask_tokens(ids, special, mask_id=4, vocab_size=100,
                                         generator=torch.Generator().manual_seed(0))
    chosen = labels != toy_model.IGNORE_LABEL
    assert not chosen[:, 0].any()
    assert torch.equal(labels[chosen], ids[chosen])  # labels are the original ids
    assert torch.equal(corrupted[~chosen], ids[~chosen])  # unchosen tokens untouched
    assert abs(chosen[:, 1:].float().mean().item() - toy_model.MASK_PROBABILITY) < 0.01
    masked_share = (corrupted[chosen] == 4).float().mean().item()
    assert abs(masked_share - toy_model.MASK_TOKEN_SHARE) < 0.03


def test_pretraining_lowers_the_masked_lm_loss(tmp_path: Path) -> None:
    from transformers import BertConfig, BertForMaskedLM

    small = toy.write_toy_data(tmp_path / "data", **SMALL)
    tokenizer = toy.train_tokenizer(toy_model.data_texts(small))
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, pad_token_id=tokenizer.pad_token_id)
    pairs = toy_model.parallel_pairs(small)
    for tlm_share in (0.0, 1.0):  # monolingual MLM alone (no mixed lines) and translation LM alone both learn
        torch.manual_seed(0)
        losses = toy_model.pretrain(BertForMaskedLM(config), tokenizer, pairs, 30, seed=0, tlm_share=tlm_share)
        assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.2, tlm_share
    with pytest.raises(ValueError, match="tlm_share=1.5"):
        toy_model.pretrain(BertForMaskedLM(config), tokenizer, pairs, 1, seed=0, tlm_share=1.5)


def test_masked_lm_loss_is_bert_for_masked_lms_own_loss() -> None:
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32)
    torch.manual_seed(0)
    model = BertForMaskedLM(config).eval()
    input_ids = torch.randint(5, 50, (3, 9))
    labels = torch.full_like(input_ids, toy_model.IGNORE_LABEL)
    labels[0, 2], labels[1, 5], labels[2, 0], labels[2, 8] = 7, 11, 13, 40
    inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
    ours = toy_model.masked_lm_loss(model, inputs, labels)
    assert torch.allclose(ours, model(**inputs, labels=labels).loss, atol=1e-6)
    ours.backward()  # and it trains the same weights: the output layer (tied to the embeddings) too
    assert model.bert.embeddings.word_embeddings.weight.grad is not None


def test_topics_are_opt_in_and_keep_a_clauses_content_words_on_its_topic() -> None:
    import random
    from toyworld.grammar import GrammarRates, clause

    plain = toy.make_world()
    assert plain.topics == 1 and all(not c.topics or c.topics == frozenset({0}) for c in plain.concepts.values())
    sizes = toy_world.LexiconSizes(topics=6, topics_per_concept=2)
    world = toy.make_world(sizes=sizes)
    content = [c for c in world.concepts.values() if c.upos in ("NOUN", "VERB", "ADJ", "ADV")]
    assert all(len(c.topics) == 2 for c in content)
    assert {t for c in content if c.upos == "NOUN" for t in c.topics} == set(range(6))  # every topic has nouns
    rng, rates = random.Random(0), GrammarRates(on_topic=1.0, pronoun=0.0, entity=0.0, place=0.0)
    shared = 0
    for _ in range(200):
        drawn = clause(world, rng, rates, entity_rate=0.0)
        words = [drawn.verb, drawn.subject.noun, *drawn.subject.adjectives]
        if drawn.obj is not None:
            words += [drawn.obj.noun, *drawn.obj.adjectives]
        shared += bool(frozenset.intersection(*(world.concepts[w].topics for w in words)))
    assert shared == 200  # on_topic=1: every content word of a clause is of the clause's topic
    with pytest.raises(ValueError, match="topics_per_concept=3"):
        toy.make_world(sizes=toy_world.LexiconSizes(topics=2, topics_per_concept=3))


def test_code_switching_mixes_every_language_into_each_english_sentence(tmp_path: Path) -> None:
    small = toy.write_toy_data(tmp_path / "data", langs=("es", "ru"), **SMALL)
    assert toy_model.code_switched(small, 0.0, seed=0) == []
    english = (small / "parallel/toy/en-ru.en").read_text(encoding="utf-8").splitlines()
    originals = [re.findall(r"\w+|[^\w\s]+", line) for line in english]
    full = toy_model.code_switched(small, 1.0, seed=0, copies=2)
    assert len(full) == 2 * len(english)  # each English sentence twice, fresh draws
    assert all(len(line.split()) == len(original) for line, original in zip(full, originals * 2))
    cyrillic = [sum(bool(re.search(r"[\u0400-\u04FF]", w)) for w in line.split()) for line in full]
    untouched = [sum(a == b for a, b in zip(line.split(), original)) for line, original in zip(full, originals * 2)]
    # a word's language is drawn for every word: most lines hold both Russian and switched Latin-script words
    both = sum(c > 0 and len(line.split()) - c - u > 0 for line, c, u in zip(full, cyrillic, untouched))
    assert both > 0.5 * len(full)
    some = toy_model.code_switched(small, 0.3, seed=0)
    assert some == toy_model.code_switched(small, 0.3, seed=0) != toy_model.code_switched(small, 0.3, seed=1)
    assert len(some) == toy_model.MIXED_COPIES * len(english)
    pairs = [(a, b) for line, original in zip(some, originals * toy_model.MIXED_COPIES)
             for a, b in zip(line.split(), original)]
    assert 0.15 < sum(a != b for a, b in pairs) / len(pairs) < 0.4  # about the rate, of the dictionary words
    with pytest.raises(ValueError, match="rate=2"):
        toy_model.code_switched(small, 2, seed=0)


def test_cli_writes_data_and_model(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "toyworld", str(tmp_path / "toy"), "--pretrain-steps", "2",
                             "--n-train", "20", "--n-test", "6", "--n-parallel", "20"],
                            capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1])
    data, model = result.stdout.split()
    assert Path(data) == tmp_path / "toy" / "data" and (Path(data) / "ud/en_ewt-ud-train.conllu").is_file()
    assert Path(model) == tmp_path / "toy" / "model" and (Path(model) / "tokenizer.json").is_file()


def test_cache_folder_is_keyed_by_every_parameter_and_the_code(monkeypatch) -> None:
    base = toy.toy_key(n_train=2000, pretrain_steps=600)
    assert toy.toy_key(pretrain_steps=600, n_train=2000, seed=0) == base  # defaults filled in, order ignored
    assert toy.toy_key(n_train=2000, pretrain_steps=601) != base
    assert toy.toy_key(n_train=2001, pretrain_steps=600) != base
    assert toy.toy_key(n_train=2000, pretrain_steps=600, vocab_size=999) != base
    monkeypatch.setattr(toy, "code_fingerprint", lambda: "edited")  # any change of the toy world's code
    assert toy.toy_key(n_train=2000, pretrain_steps=600) != base
    assert toy.toy_cache_folder("~/c/", n_train=2000).startswith("~/c/toyworld-")
    with pytest.raises(ValueError, match="pretrain_stpes"):
        toy.toy_key(pretrain_stpes=3)


def test_the_code_fingerprint_covers_every_project_module_the_toy_world_runs():
    """The toy folder is reused while its key holds: every `trainables` module whose code decides
    the written bytes must be in `CODE_FILES` (the name registry and the key's own hashing do not)."""
    import ast

    root = Path(toy.__file__).resolve().parents[1]
    imported = set()
    for path in sorted((root / "toyworld").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("trainables"):
                modules = [node.module] if node.module != "trainables" else [f"trainables.{a.name}" for a in node.names]
                imported.update(modules)
    fingerprinted = {p.relative_to(root).with_suffix("").as_posix().replace("/", ".")
                     for pattern in toy.CODE_FILES for p in root.glob(pattern)}
    assert "trainables.formats" in imported and "trainables.data" not in imported
    assert imported - {"trainables.registry", "trainables.cache"} <= fingerprinted, imported - fingerprinted
