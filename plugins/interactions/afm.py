"""AFM's attention-based pooling (Xiao et al., IJCAI 2017): pairwise interactions weighted by attention."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bench.config import check_number
from bench.nn.interaction import Interaction
from bench.nn.layers import Dropout


class AttentionalPooling(Interaction):
    """AFM's attention-based pooling: sum_{i<j} a_ij (v_i * v_j), (B, F, D) -> (B, D), a softmax over the pairs.

    a_ij = softmax over the pairs of h^T ReLU(W (v_i * v_j) + b), W of `att_dim` rows (the attention factor):
    Eq. 3-4 of the paper. The model
    reads it out with p (p^T of Eq. 5 is `Term`'s readout). `dropout` applies to the pooled vector in training
    (the paper's dropout on the pair-wise interaction layer, where the authors' code applies it).

    The softmax normalises over every pair, user-item ones included, through a ReLU: nothing splits by side,
    so full ranking forms the pairs."""

    def __init__(self, num_fields: int, dim: int, att_dim: int = 16, dropout: float = 0.2):
        super().__init__(num_fields, dim)
        att_dim = int(check_number("afm: att_dim", att_dim, low=1, integer=True))
        rows, cols = torch.triu_indices(num_fields, num_fields, offset=1)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)
        self.attention = nn.Sequential(nn.Linear(dim, att_dim), nn.ReLU(), nn.Linear(att_dim, 1, bias=False))
        self.dropout = Dropout(check_number("afm: dropout", dropout, low=0, high=1, high_open=True))
        self.out_dim = dim
        self.pairs = len(rows)

    def forward(self, field_embeddings: torch.Tensor) -> torch.Tensor:
        products = field_embeddings[:, self.rows] * field_embeddings[:, self.cols]  # (B, pairs, D)
        weights = torch.softmax(self.attention(products), dim=1)  # (B, pairs, 1)
        return self.dropout((weights * products).sum(1))

    def floats_per_row(self) -> int:
        """The pairs' products, their weighted copy and their attention hidden layer."""
        return self.pairs * (2 * self.out_dim + self.attention[0].out_features + 1)

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {
            "afm.att_dim": trial.suggest_categorical("afm.att_dim", [8, 16, 32]),
            "afm.dropout": trial.suggest_float("afm.dropout", 0.0, 0.5),
        }
