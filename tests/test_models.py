"""Model families: lookup from the config, hidden states, inputs, sub-word conventions, the paper's
model list, and a family registered here alone running alignment measurement and realignment."""
from __future__ import annotations

import types
from dataclasses import dataclass, field

import pandas as pd
import pytest
import torch
from transformers import (
    AutoConfig,
    AutoTokenizer,
    BertConfig,
    BertModel,
    BertTokenizerFast,
    DistilBertConfig,
    DistilBertModel,
    ElectraConfig,
    ElectraForTokenClassification,
    T5Config,
    XLMRobertaConfig,
)

from trainables import models
from trainables.alignment import measure_alignment, word_vectors_all_layers
from trainables.encoding import encode_words
from trainables.finetuning import realign_sequentially
from trainables.models import (
    BERT,
    DISTILBERT,
    PAPER_MODELS,
    XLM_R,
    ModelFamily,
    family_from_name,
    get_family,
    model_family,
    paper_model,
    register_family,
    tokenizer_family,
)
from trainables.pairs import AlignedCorpus
from trainables.realignment import build_realigner
from trainables.settings import Settings

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def xlmr_tokenizer(e5_small):
    return AutoTokenizer.from_pretrained(e5_small)


def wordpiece() -> BertTokenizerFast:
    pieces = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "##s", "le", "chat"]
    return BertTokenizerFast(vocab={piece: i for i, piece in enumerate(pieces)})


def tiny(config_class, **sizes):
    return config_class(vocab_size=300, num_attention_heads=2, **sizes)


# --------------------------------------------------------------------------------------------
# Lookup


def test_families_are_found_from_the_config_model_type(e5_small):
    assert model_family(tiny(BertConfig, hidden_size=8, num_hidden_layers=1)) is BERT
    assert model_family(DistilBertConfig(n_layers=1, dim=8, n_heads=2, hidden_dim=16)) is DISTILBERT
    assert model_family(XLMRobertaConfig(num_hidden_layers=1, hidden_size=8, num_attention_heads=2)) is XLM_R
    # e5-small is a BERT model (its tokenizer is XLM-R's: see the sub-word conventions below)
    assert model_family(AutoConfig.from_pretrained(e5_small)) is BERT
    model = BertModel(tiny(BertConfig, hidden_size=8, num_hidden_layers=3, intermediate_size=16))
    assert model_family(model) is BERT and BERT.num_layers(model.config) == 3
    assert DISTILBERT.num_layers(DistilBertConfig(n_layers=4)) == 4  # DistilBERT's own key, n_layers


def test_an_unknown_family_falls_back_to_its_config_or_fails_in_one_line():
    electra = ElectraConfig(num_hidden_layers=2)
    generic = model_family(electra)
    assert generic.name == "generic:electra" and generic.num_layers(electra) == 2
    assert generic.input_names is None  # the inputs its forward names
    with pytest.raises(ValueError, match=r"'t5'.*no generic fallback: an encoder-decoder model") as error:
        model_family(T5Config())
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="'mystery'.*no generic fallback: its config has no num_hidden_layers"):
        model_family(types.SimpleNamespace(model_type="mystery"))
    with pytest.raises(ValueError, match="no config.model_type"):
        model_family(types.SimpleNamespace())
    with pytest.raises(ValueError, match="did you mean 'distilbert'"):
        get_family("distillbert")
    with pytest.raises(ValueError, match="model_type 'bert' already belongs to family 'bert'"):
        register_family(ModelFamily("my-bert", ("bert",)))


# --------------------------------------------------------------------------------------------
# Hidden states and inputs


def test_hidden_states_are_the_embeddings_and_every_layer_stacked():
    torch.manual_seed(0)
    model = BertModel(tiny(BertConfig, hidden_size=8, num_hidden_layers=2, intermediate_size=16)).eval()
    inputs = {"input_ids": torch.tensor([[2, 5, 6, 3], [2, 7, 3, 0]]),
              "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])}
    with torch.no_grad():
        stack = BERT.hidden_states(model, inputs)
        expected = model(**inputs, output_hidden_states=True).hidden_states
        last = BERT.hidden_state(model, inputs, -1)
    assert stack.shape == (3, 2, 4, 8)
    torch.testing.assert_close(stack[0], model.embeddings(input_ids=inputs["input_ids"]))
    assert all(torch.equal(stack[i], expected[i]) for i in range(3))
    assert torch.equal(last, expected[2])
    with pytest.raises(ValueError, match=r"setting realign_layer=3 outside -3\.\.2 \(3 hidden states"):
        BERT.hidden_state(model, inputs, 3, "realign_layer")

    class Broken(ModelFamily):
        def layer_outputs(self, module, inputs):
            return super().layer_outputs(module, inputs)[1:]

    with pytest.raises(ValueError, match="'broken': 2 hidden states, expected 3"):
        Broken("broken", ("bert",)).hidden_states(model, inputs)


def test_distilbert_takes_no_token_type_ids_and_measures_words_from_a_bert_tokenizer():
    tokenizer = wordpiece()
    encoded = encode_words(tokenizer, [["the", "cats", "sat"], ["le", "chat"]], max_length=16)
    assert "token_type_ids" in encoded.inputs  # WordPiece tokenizers produce them
    torch.manual_seed(0)
    model = DistilBertModel(DistilBertConfig(vocab_size=len(tokenizer), n_layers=2, dim=8, n_heads=2,
                                             hidden_dim=16)).eval()
    assert set(DISTILBERT.model_inputs(model, encoded.inputs)) == {"input_ids", "attention_mask"}
    assert set(BERT.model_inputs(model, encoded.inputs)) == {"input_ids", "attention_mask", "token_type_ids"}
    vectors = word_vectors_all_layers(model, tokenizer, [["the", "cats", "sat"], ["le", "chat"]],
                                      torch.tensor([[0, 1], [1, 1]]), Settings(device="cpu", align_max_length=16))
    assert vectors.shape == (3, 2, 8) and bool(vectors.abs().sum(-1).gt(0).all())


def test_sub_word_conventions_follow_the_tokenizer(xlmr_tokenizer):
    assert tokenizer_family(xlmr_tokenizer) is XLM_R and XLM_R.deletes_lone_prefix
    assert tokenizer_family(wordpiece()) is BERT and not BERT.deletes_lone_prefix


def test_the_reference_scripts_recognised_xlmr_by_name():
    assert family_from_name("FacebookAI/xlm-roberta-large") is XLM_R and XLM_R.code_learning_rate == 7.5e-6
    assert family_from_name("bert-base-multilingual-cased") is None  # BERT keeps its learning rate
    assert family_from_name("e5-small") is None


# --------------------------------------------------------------------------------------------
# The paper's models, listed once


def test_the_paper_models_are_listed_once_and_read_everywhere():
    from analysis.results import MODEL_DISPLAY_NAMES
    from analysis.results import PAPER_MODELS as ANALYSIS_MODELS
    from sweep.experiment import load_experiment_file
    from sweep.models import PAPER_MODELS as SWEEP_MODELS

    names = [model.name for model in PAPER_MODELS]
    assert names == ["distilbert-base-multilingual-cased", "bert-base-multilingual-cased", "xlm-roberta-base",
                     "xlm-roberta-large"]
    assert [get_family(model.family) for model in PAPER_MODELS] == [DISTILBERT, BERT, XLM_R, XLM_R]
    assert {name: spec.gpu for name, spec in SWEEP_MODELS.items()} == dict(zip(names, (0.25, 0.5, 0.5, 1.0)))
    assert list(ANALYSIS_MODELS) == names and MODEL_DISPLAY_NAMES["xlm-roberta-large"] == "XLM-R Large"
    grids = load_experiment_file(models.__file__.replace("trainables/models.py", "experiments/full_grid.py"))["grids"]
    assert grids[0]["model"] == names and grids[1]["model"] == names[:3]  # App. B.5: XLM-R large not realigned
    assert paper_model("/models/XLM-Roberta-Base/") is PAPER_MODELS[2] and paper_model("e5-small") is None


# --------------------------------------------------------------------------------------------
# A family added in this file only


@dataclass(frozen=True)
class HookedElectra(ModelFamily):
    """ELECTRA read through forward hooks on its embeddings and layers instead of
    `output_hidden_states`, counting its calls: proof that every module asks the family."""

    calls: list = field(default_factory=list, compare=False)

    def layer_outputs(self, module, inputs):
        electra = module.base_model
        states: list[torch.Tensor] = []
        keep = lambda _module, _inputs, output: states.append(output[0] if isinstance(output, tuple) else output)  # noqa: E731
        hooks = [electra.embeddings.register_forward_hook(keep)]
        hooks += [layer.register_forward_hook(keep) for layer in electra.encoder.layer]
        try:
            module(**inputs)
        finally:
            for hook in hooks:
                hook.remove()
        self.calls.append(len(states))
        return states


def electra_corpora() -> dict[str, AlignedCorpus]:
    en = [["The", "red", "house"], ["I", "like", "cats"], ["A", "big", "dog"], ["We", "eat", "bread"]]
    x = {"es": [["La", "casa", "roja"], ["Me", "gustan", "gatos"], ["Un", "perro", "grande"], ["Comemos", "pan"]],
         "fr": [["La", "maison", "rouge"], ["J'", "aime", "chats"], ["Un", "grand", "chien"], ["Nous", "mangeons", "pain"]]}
    links = {"es": [(0, 1, 2), (0, 2, 1), (1, 2, 2), (2, 2, 1), (3, 2, 1)],
             "fr": [(0, 1, 2), (0, 2, 1), (1, 2, 2), (2, 2, 2), (3, 2, 2)]}
    corpora = {}
    for lang, sentences in x.items():
        rows = [(s, i, j, en[s][i], sentences[s][j]) for s, i, j in links[lang]]
        pairs = pd.DataFrame(rows, columns=["sentence", "src_index", "tgt_index", "src_word", "tgt_word"])
        corpora[lang] = AlignedCorpus(lang, en, sentences, pairs)
    return corpora


def test_a_family_registered_here_runs_alignment_and_realignment(xlmr_tokenizer, monkeypatch):
    monkeypatch.setattr(models, "MODEL_FAMILIES", dict(models.MODEL_FAMILIES))  # registered for this test only
    torch.manual_seed(0)
    config = ElectraConfig(vocab_size=len(xlmr_tokenizer), embedding_size=16, hidden_size=16, num_hidden_layers=2,
                           num_attention_heads=2, intermediate_size=32, max_position_embeddings=64,
                           pad_token_id=xlmr_tokenizer.pad_token_id, num_labels=3)
    model = ElectraForTokenClassification(config)
    corpora = electra_corpora()
    settings = Settings(device="cpu", align_pairs=5, realign_batch_size=4, learning_rate=1e-2, warmup_ratio=0.0)
    generic = measure_alignment(model, xlmr_tokenizer, corpora, settings)  # before registration: the fallback

    family = register_family(HookedElectra("electra", ("electra",), input_names=("input_ids", "attention_mask")))
    assert model_family(model) is family
    table = measure_alignment(model, xlmr_tokenizer, corpora, settings)
    assert family.calls and set(family.calls) == {3}  # embeddings + 2 layers, read by the family's hooks
    assert sorted(table["layer"].unique()) == [0, 1, 2]
    pd.testing.assert_frame_equal(table, generic)  # hooks and output_hidden_states give the same states

    realigner = build_realigner(model, xlmr_tokenizer, corpora, settings, seed=0, device=CPU)
    assert realigner.encoder is model.electra
    before = model.electra.encoder.layer[-1].output.dense.weight.detach().clone()
    measured = len(family.calls)
    state = realign_sequentially(model, realigner, 1, settings, seed=0)
    assert state["step"] == 1 and len(family.calls) == measured + 1  # one realignment batch, through the family
    assert not torch.equal(model.electra.encoder.layer[-1].output.dense.weight, before)
    assert model.classifier.weight.grad is None  # only the family's encoder is realigned
