"""AdamW that updates a word-embedding matrix only where AdamW would change it.

Most of a multilingual encoder's parameters are its word embeddings (XLM-R base: 192M of 278M;
e5-small: 96M of 118M), yet a fine-tuning step sees a few hundred distinct tokens. The dense
update pays for the whole matrix at every step: a 250k-row gradient filled with zeros in the
backward pass, then AdamW reading and writing its rows and their two moments (benchmark 1 on CPU:
the optimizer step was 17% of a step, nearly all of it this matrix).

The rule is exact, not an approximation. With weight decay 0 (the paper's Adam, App. B.3), AdamW
moves a row by lr * m / (sqrt(v) + eps) with its moments m <- b1 m + (1 - b1) g and
v <- b2 v + (1 - b2) g^2: a row whose gradient has been zero at every step so far has m = v = 0
and is left bit-for-bit unchanged. So `LazyRowsAdamW` keeps, per embedding matrix, the rows that
have ever had a gradient, and applies AdamW's update (the same formula, torch's order of
operations) to exactly those rows at every step; a row that has had a gradient keeps moving on
its momentum, as under the dense update. The matrix's gradient arrives sparse
(`sparse_embedding_gradients`: `nn.Embedding(sparse=True)` makes the backward pass return the
batch's rows instead of a dense matrix). Every other parameter takes torch's fused AdamW step.

Where the rule would not be exact (weight decay, amsgrad, maximize), a sparse gradient is made
dense and the plain AdamW step is taken. The optimizer's state dict has AdamW's own layout
(step, exp_avg, exp_avg_sq per parameter), so a checkpoint loads into either optimizer.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator

import torch
from torch import nn


class LazyRowsAdamW(torch.optim.AdamW):
    """torch.optim.AdamW; parameters with a sparse gradient are updated on their touched rows only.

    AdamW's own `step` runs unchanged: a step pre-hook takes the sparse gradients out of its way
    (it skips a parameter without a gradient) and a step post-hook updates their rows. Hooks rather
    than an overridden `step` calling AdamW's: torch wraps each optimizer class's `step` with the
    global step hooks, which would then run twice a step."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._touched: dict[nn.Parameter, torch.Tensor] = {}  # bool per row: ever had a gradient
        self._held: list[tuple[dict[str, Any], nn.Parameter, torch.Tensor]] = []
        self.register_step_pre_hook(LazyRowsAdamW._hold_sparse_gradients)
        self.register_step_post_hook(LazyRowsAdamW._update_touched_rows)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._touched = {}  # rebuilt from the loaded moments at the next step

    @staticmethod
    def _hold_sparse_gradients(optimizer: "LazyRowsAdamW", args: Any, kwargs: Any) -> None:
        optimizer._held = []
        for group in optimizer.param_groups:
            for param in group["params"]:
                if param.grad is None or not param.grad.is_sparse:
                    continue
                if group["weight_decay"] or group["amsgrad"] or group["maximize"]:
                    param.grad = param.grad.to_dense()  # the lazy rule is exact only without these
                    continue
                optimizer._held.append((group, param, param.grad))
                param.grad = None  # AdamW's step skips a parameter without a gradient

    @staticmethod
    @torch.no_grad()
    def _update_touched_rows(optimizer: "LazyRowsAdamW", args: Any, kwargs: Any) -> None:
        held, optimizer._held = optimizer._held, []
        for group, param, grad in held:
            optimizer._touched_rows_step(group, param, grad)
            param.grad = grad

    def _touched_rows_step(self, group: dict[str, Any], param: nn.Parameter, grad: torch.Tensor) -> None:
        state = self.state[param]
        if not state:
            scalar_dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
            state["step"] = torch.zeros((), dtype=scalar_dtype, device=param.device if group["fused"] else "cpu")
            state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        touched = self._touched.get(param)
        if touched is None:  # a fresh run, or a resumed one: the rows whose moments are not zero
            touched = exp_avg.ne(0).any(dim=1) | exp_avg_sq.ne(0).any(dim=1)
            self._touched[param] = touched
        grad = grad.coalesce()  # one row per token, repeated tokens summed (as the dense gradient)
        grad_rows, grad_values = grad.indices()[0], grad.values()
        touched[grad_rows] = True
        rows = touched.nonzero().squeeze(1)  # sorted
        row_grad = torch.zeros((len(rows), param.shape[1]), dtype=grad_values.dtype, device=param.device)
        row_grad[torch.searchsorted(rows, grad_rows)] = grad_values

        state["step"] += 1
        step = float(state["step"])
        beta1, beta2 = group["betas"]
        lr, eps = float(group["lr"]), group["eps"]
        # torch's AdamW (single-tensor form), on the touched rows
        row_avg = exp_avg.index_select(0, rows).lerp_(row_grad, 1 - beta1)
        row_avg_sq = exp_avg_sq.index_select(0, rows).mul_(beta2).addcmul_(row_grad, row_grad, value=1 - beta2)
        bias_correction1 = 1 - beta1 ** step
        bias_correction2 = 1 - beta2 ** step
        denominator = (row_avg_sq.sqrt() / math.sqrt(bias_correction2)).add_(eps)
        row_param = param.index_select(0, rows).addcdiv_(row_avg, denominator, value=-lr / bias_correction1)
        exp_avg.index_copy_(0, rows, row_avg)
        exp_avg_sq.index_copy_(0, rows, row_avg_sq)
        param.index_copy_(0, rows, row_param)


def _lazy_embedding(model: nn.Module) -> nn.Embedding | None:
    """The model's input word embeddings, if their gradient may be sparse: an nn.Embedding that no
    output layer shares (a tied decoder would add a dense gradient to it anyway)."""
    embedding = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if not isinstance(embedding, nn.Embedding) or embedding.max_norm is not None:
        return None
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if output is not None and getattr(output, "weight", None) is embedding.weight:
        return None
    return embedding


@contextlib.contextmanager
def sparse_embedding_gradients(model: nn.Module, enabled: bool = True) -> Iterator[bool]:
    """Within the block, the model's word embeddings get sparse gradients (for LazyRowsAdamW);
    yields whether they do. The forward pass computes the same thing either way."""
    embedding = _lazy_embedding(model) if enabled else None
    if embedding is None:
        yield False
        return
    before = embedding.sparse
    embedding.sparse = True
    try:
        yield True
    finally:
        embedding.sparse = before
