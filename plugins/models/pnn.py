"""PNN (Qu et al., ICDM 2016): IPNN, OPNN and PNN*."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from bench.data.features import FeatureSpec
from bench.nn.composed import create_interaction, deep_space
from bench.nn.embedding import Embedded
from bench.nn.layers import MLP, Dropout, parse_widths
from bench.nn.model import EmbeddingModel

PRODUCTS = ["inner", "outer", "both"]


class PNN(EmbeddingModel):
    """PNN: y = MLP(ReLU(l_z + l_p + b_1)), the linear and the quadratic (product) signals (Eq. 3-4).

    l_1's width is the first of `mlp`:

        l_z = W_z z,  z = v_1 || ... || v_F                        the linear signals
        l_p = W_p p,  p = the product layer's quadratic signals:   <v_i, v_j> for i < j (IPNN, `product`
                      inner), f f^T with f = sum_i v_i (OPNN, outer), or both (PNN*)

    Both signals split by side (the `product` layer's pairs path, and W_z's user and item columns), so full
    ranking never forms the pairs' fields.
    """

    pair_scoring = True

    def __init__(self, spec: FeatureSpec, embed_dim: int = 16, product: str = "inner",
                 mlp: Sequence[int] | str = (128, 64, 32), dropout: float = 0.2):
        super().__init__(spec, embed_dim)
        hidden = parse_widths(mlp, "mlp")
        self.products = create_interaction("PNN", "product", len(spec), embed_dim, {"type": product})
        self.linear_signals = MLP(self.embedding.total_dim, (), out_dim=hidden[0])  # W_z z + b_1
        self.quadratic_signals = torch.nn.Linear(self.products.out_dim, hidden[0], bias=False)  # W_p p
        self.dropout = Dropout(dropout)
        self.mlp = MLP(hidden[0], hidden[1:], dropout)

    def head(self, e: Embedded) -> torch.Tensor:
        l_p = self.quadratic_signals(self.products(e.field_embeddings))
        return self.mlp(self.dropout(torch.relu(self.linear_signals(e.flat_embeddings) + l_p)))

    def floats_per_row(self) -> int:
        return super().floats_per_row() + self.products.floats_per_row()

    def floats_per_pair(self) -> int:
        return super().floats_per_pair() + self.products.floats_per_pair()

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {**deep_space(trial), "product": trial.suggest_categorical("product", PRODUCTS)}
