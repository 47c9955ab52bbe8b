"""DCN-V2's cross network (Wang et al., WWW 2021): explicit bounded-degree crosses of the flat embedding."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bench.config import check_number
from bench.nn.interaction import Interaction


class CrossNetwork(Interaction):
    """DCN-V2's cross network over x_0 = the F field vectors concatenated: (B, F, D) -> (B, F * D):

        x_{l+1} = x_0 * (W_l x_l + b_l) + x_l                        (Eq. 1, full rank: `rank` 0)
        x_{l+1} = sum_k G_k(x_l) x_0 * (U_lk g(C_lk g(V_lk^T x_l)) + b_l) + x_l    (Eq. 4, `rank` r > 0)

    The second is the paper's mixture of `experts` low-rank experts (DCN-Mix): each W_l is U C V^T of rank r
    with g = tanh between the factors, and the gates G_k(x_l) a softmax over the experts of a linear map of
    x_l. One expert is the plain low-rank cross. A cross layer multiplies x_0 by a function of x_l, both
    spanning the user's and the item's fields, so it does not split by side: full ranking forms the pairs.
    """

    def __init__(self, num_fields: int, dim: int, layers: int = 3, rank: int = 0, experts: int = 4):
        super().__init__(num_fields, dim)
        layers = int(check_number("cross: layers", layers, low=1, integer=True))
        rank = int(check_number("cross: rank", rank, low=0, integer=True))
        experts = int(check_number("cross: experts", experts, low=1, integer=True))
        width = num_fields * dim
        self.out_dim = width
        self.rank, self.experts = rank, experts
        if rank == 0:
            self.weights = nn.ModuleList(nn.Linear(width, width) for _ in range(layers))
        else:
            self.weights = nn.ModuleList(LowRankMixture(width, rank, experts) for _ in range(layers))

    def forward(self, field_embeddings: torch.Tensor) -> torch.Tensor:
        x0 = field_embeddings.flatten(1)
        x = x0
        for weight in self.weights:
            x = weight(x, x0) + x if self.rank else x0 * weight(x) + x
        return x

    def floats_per_row(self) -> int:
        """Per row, what each layer keeps for the backward: its input, W x (per expert, with the two rank-r
        activations) and the product with x_0."""
        per_expert = 2 * self.out_dim + 2 * self.rank if self.rank else 2 * self.out_dim
        return len(self.weights) * (self.out_dim + per_expert * (self.experts if self.rank else 1))

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {
            "cross.layers": trial.suggest_int("cross.layers", 1, 4),
            "cross.rank": trial.suggest_categorical("cross.rank", [0, 16, 32]),
            "cross.experts": trial.suggest_categorical("cross.experts", [1, 2, 4]),
        }


class LowRankMixture(nn.Module):
    """One cross layer's mixture of low-rank experts, without the residual: sum_k G_k(x) x_0 * E_k(x), with
    E_k(x) = U_k tanh(C_k tanh(V_k^T x)) + b."""

    def __init__(self, width: int, rank: int, experts: int):
        super().__init__()
        self.v = nn.Parameter(torch.randn(experts, width, rank) / width**0.5)
        self.c = nn.Parameter(torch.randn(experts, rank, rank) / rank**0.5)
        self.u = nn.Parameter(torch.randn(experts, rank, width) / rank**0.5)
        self.bias = nn.Parameter(torch.zeros(width))
        self.gate = nn.Linear(width, experts, bias=False)

    def forward(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        low = torch.tanh(torch.einsum("bw,kwr->bkr", x, self.v))
        low = torch.tanh(torch.einsum("bkr,krs->bks", low, self.c))
        experts = x0.unsqueeze(1) * (torch.einsum("bkr,krw->bkw", low, self.u) + self.bias)  # (B, K, width)
        gates = torch.softmax(self.gate(x), dim=1)  # (B, K)
        return (gates.unsqueeze(2) * experts).sum(1)
