"""Lazy Adam: Adam on the rows of an embedding table that a batch looked up, nothing else.

Dense Adam reads and writes every row of every table at every step, so its step grows with the users and
items (`pytest tests/bench_lazy_adam.py --benchmark-only`; figures in docs/performance.md). Here a table's
gradient is sparse (the looked-up rows); their moments and weights are updated by Adam's formula (bias
correction by the table's step count, L2 weight decay added to those rows' gradients), and rows not in
the batch keep their moments and weights: a step's cost follows the batch, not the tables. The rule
differs from Adam's (a row's moments decay only when it is seen; TensorFlow's LazyAdam), hence an opt-in:
`--optimizer lazy_adam`. torch's SparseAdam has the same rule, but its update was slower here and it adds
eps before the bias correction.
"""

from __future__ import annotations

import math

import torch


class LazyAdam(torch.optim.Optimizer):
    """Adam over parameters with sparse gradients (embedding tables), updating only the rows present."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if not p.grad.is_sparse:
                    raise TypeError("LazyAdam needs sparse gradients (FeatureEmbedding.use_sparse_gradients)")
                grad = p.grad.coalesce()  # duplicate rows summed
                rows, values = grad.indices()[0], grad.values()
                if group["weight_decay"]:
                    values = values.add(p.index_select(0, rows), alpha=group["weight_decay"])
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                exp_avg = state["exp_avg"].index_select(0, rows).lerp_(values, 1 - beta1)
                exp_avg_sq = state["exp_avg_sq"].index_select(0, rows).mul_(beta2)
                exp_avg_sq.addcmul_(values, values, value=1 - beta2)
                state["exp_avg"].index_copy_(0, rows, exp_avg)
                state["exp_avg_sq"].index_copy_(0, rows, exp_avg_sq)
                bias1, bias2 = 1 - beta1 ** state["step"], 1 - beta2 ** state["step"]
                denominator = exp_avg_sq.sqrt_().div_(math.sqrt(bias2)).add_(group["eps"])
                p.index_add_(0, rows, exp_avg.div_(denominator), alpha=-group["lr"] / bias1)
        return loss
