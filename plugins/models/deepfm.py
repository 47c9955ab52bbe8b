"""DeepFM (Guo et al. 2017)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from bench.data.features import FeatureSpec
from bench.nn.composed import deep_space, interaction_term
from bench.nn.embedding import Embedded
from bench.nn.layers import MLP, parse_widths
from bench.nn.model import EmbeddingModel


class DeepFM(EmbeddingModel):
    """DeepFM: y = w0 + sum_f w_f + sum_{i<j} <v_i, v_j> + MLP(v_1 || ... || v_F), FM and MLP sharing v."""

    pair_scoring = True

    def __init__(self, spec: FeatureSpec, embed_dim: int = 16, mlp: Sequence[int] | str = (128, 64, 32),
                 dropout: float = 0.2):
        super().__init__(spec, embed_dim)
        self.bias = nn.Parameter(torch.zeros(1))
        self.fm = interaction_term("fm", spec, embed_dim)
        self.mlp = MLP(self.embedding.total_dim, parse_widths(mlp, "mlp"), dropout)

    def head(self, e: Embedded) -> torch.Tensor:
        return self.bias + e.first_order + self.fm(e.field_embeddings) + self.mlp(e.flat_embeddings)

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return deep_space(trial)
