"""LazyRowsAdamW: AdamW on the word-embedding rows that ever had a gradient, the same update as
the dense AdamW (up to rounding), rows never seen left bit-for-bit alone, resumable."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from transformers import BertConfig, BertForMaskedLM, BertForTokenClassification

from trainables.optimizer import LazyRowsAdamW, sparse_embedding_gradients

VOCAB, WIDTH = 200, 8


class Tagger(nn.Module):
    """Embeddings, a tanh layer, a per-token classifier: the shape of a fine-tuned encoder."""

    def __init__(self) -> None:
        super().__init__()
        self.words = nn.Embedding(VOCAB, WIDTH, padding_idx=0)
        self.hidden = nn.Linear(WIDTH, WIDTH)
        self.out = nn.Linear(WIDTH, 3)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.words

    def forward(self, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = self.out(torch.tanh(self.hidden(self.words(ids))))
        return nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten())


def batches(steps: int, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    # the first half of the run sees tokens < 40, the second < 80: rows join the touched set late
    # and rows 80+ are never seen; repeated tokens within a batch and the padding id 0 occur
    return [(torch.randint(0, 40 if step < steps // 2 else 80, (4, 6), generator=generator),
             torch.randint(0, 3, (4, 6), generator=generator)) for step in range(steps)]


def train(model: Tagger, optimizer: torch.optim.Optimizer, data: list, lazy: bool) -> None:
    with sparse_embedding_gradients(model, lazy):
        for ids, labels in data:
            model(ids, labels).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)


def make(kind: type, model: Tagger, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    # weight decay 0 as the paper's Adam (torch's AdamW defaults to 0.01)
    return kind(model.parameters(), lr=0.05, fused=True, weight_decay=weight_decay)


@pytest.fixture
def start() -> Tagger:
    torch.manual_seed(0)
    return Tagger()


def test_lazy_rows_equal_the_dense_update_and_leave_unseen_rows_untouched(start):
    dense, lazy = copy.deepcopy(start), copy.deepcopy(start)
    dense_optimizer, lazy_optimizer = make(torch.optim.AdamW, dense), make(LazyRowsAdamW, lazy)
    data = batches(20)
    train(dense, dense_optimizer, data, lazy=False)
    train(lazy, lazy_optimizer, data, lazy=True)
    for (name, a), b in zip(dense.named_parameters(), lazy.parameters()):
        torch.testing.assert_close(b, a, rtol=0, atol=2e-6, msg=name)
    assert not torch.equal(lazy.words.weight[1:80], start.words.weight[1:80])  # seen rows moved
    assert torch.equal(lazy.words.weight[80:], start.words.weight[80:])  # never seen: bit-for-bit
    assert torch.equal(lazy.words.weight[0], start.words.weight[0])  # the padding row gets no gradient
    # rows seen only in the first half kept moving on their momentum, as under the dense update
    early = [row for row in range(1, 40) if all(row not in ids for ids, _ in data[10:])]
    assert early, "the fixture should leave some rows unseen in the second half"
    moment = lazy_optimizer.state[lazy.words.weight]["exp_avg"]
    assert moment[early].abs().sum() > 0
    dense_state, lazy_state = dense_optimizer.state[dense.words.weight], lazy_optimizer.state[lazy.words.weight]
    assert set(lazy_state) == set(dense_state) and float(lazy_state["step"]) == float(dense_state["step"]) == 20
    torch.testing.assert_close(lazy_state["exp_avg_sq"], dense_state["exp_avg_sq"], rtol=1e-5, atol=1e-12)
    assert not lazy.words.sparse  # the flag is put back after training


def test_resuming_from_a_state_dict_equals_the_uninterrupted_run(start):
    data = batches(16)
    whole = copy.deepcopy(start)
    optimizer = make(LazyRowsAdamW, whole)
    train(whole, optimizer, data, lazy=True)
    first = copy.deepcopy(start)
    optimizer = make(LazyRowsAdamW, first)
    train(first, optimizer, data[:8], lazy=True)
    saved = copy.deepcopy((first.state_dict(), optimizer.state_dict()))
    resumed = copy.deepcopy(start)
    resumed.load_state_dict(saved[0])
    optimizer = make(LazyRowsAdamW, resumed)
    optimizer.load_state_dict(saved[1])  # its touched rows are rebuilt from the moments
    train(resumed, optimizer, data[8:], lazy=True)
    for a, b in zip(whole.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    # the checkpoint is AdamW's: a plain AdamW loads it
    make(torch.optim.AdamW, copy.deepcopy(start)).load_state_dict(saved[1])


def test_weight_decay_falls_back_to_the_dense_update(start):
    dense, lazy = copy.deepcopy(start), copy.deepcopy(start)
    dense_optimizer = make(torch.optim.AdamW, dense, weight_decay=0.1)
    lazy_optimizer = make(LazyRowsAdamW, lazy, weight_decay=0.1)
    data = batches(6)
    train(dense, dense_optimizer, data, lazy=False)
    train(lazy, lazy_optimizer, data, lazy=True)
    torch.testing.assert_close(lazy.words.weight, dense.words.weight, rtol=0, atol=1e-6)
    assert not torch.equal(lazy.words.weight[80:], start.words.weight[80:])  # decay moves every row


def test_only_untied_input_embeddings_get_sparse_gradients():
    config = BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=16, num_labels=3)
    tagger = BertForTokenClassification(config)
    with sparse_embedding_gradients(tagger) as sparse:
        assert sparse and tagger.get_input_embeddings().sparse
        tagger(input_ids=torch.tensor([[2, 5, 7]]), labels=torch.tensor([[0, 1, 2]])).loss.backward()
        assert tagger.get_input_embeddings().weight.grad.is_sparse
    assert not tagger.get_input_embeddings().sparse
    masked_lm = BertForMaskedLM(config)  # its decoder shares the embedding matrix: left dense
    with sparse_embedding_gradients(masked_lm) as sparse:
        assert not sparse and not masked_lm.get_input_embeddings().sparse
    with sparse_embedding_gradients(tagger, enabled=False) as sparse:
        assert not sparse


def test_global_step_hooks_run_once_a_step_even_once_plain_adamw_was_used(start):
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    make(torch.optim.AdamW, copy.deepcopy(start)).step()  # torch has now wrapped AdamW.step with the hooks
    calls = []
    handle = register_optimizer_step_pre_hook(lambda *args: calls.append(1))
    try:
        lazy = copy.deepcopy(start)
        train(lazy, make(LazyRowsAdamW, lazy), batches(3), lazy=True)
    finally:
        handle.remove()
    assert len(calls) == 3


def test_a_dense_adamw_checkpoint_resumes_under_the_touched_rows_update(start):
    # trials checkpointed before the touched-rows update resume with it: same weights afterwards
    data = batches(12)
    dense = copy.deepcopy(start)
    optimizer = make(torch.optim.AdamW, dense)
    train(dense, optimizer, data[:6], lazy=False)
    saved = copy.deepcopy((dense.state_dict(), optimizer.state_dict()))
    train(dense, optimizer, data[6:], lazy=False)
    resumed = copy.deepcopy(start)
    resumed.load_state_dict(saved[0])
    lazy = make(LazyRowsAdamW, resumed)
    lazy.load_state_dict(saved[1])
    train(resumed, lazy, data[6:], lazy=True)
    for (name, a), b in zip(dense.named_parameters(), resumed.parameters()):
        torch.testing.assert_close(b, a, rtol=0, atol=2e-6, msg=name)


def test_the_fine_tuning_optimizer_is_the_touched_rows_one_only_where_that_is_exact():
    from dataclasses import replace

    from trainables.finetuning import make_optimizer
    from trainables.settings import Settings

    parameters = [nn.Parameter(torch.zeros(3, 2))]
    assert type(make_optimizer(parameters, Settings())) is LazyRowsAdamW
    for changed in (dict(weight_decay=0.01), dict(max_grad_norm=1.0), dict(sparse_embedding_updates=False)):
        assert type(make_optimizer(parameters, replace(Settings(), **changed))) is torch.optim.AdamW, changed
