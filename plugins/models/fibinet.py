"""FiBiNET (Huang et al., RecSys 2019)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

import registry
from bench.data.features import FeatureSpec
from bench.nn.composed import create_interaction, deep_space, layer_options
from bench.nn.embedding import Embedded
from bench.nn.layers import MLP, parse_widths
from bench.nn.model import EmbeddingModel


class FiBiNET(EmbeddingModel):
    """FiBiNET: y = w0 + sum_f w_f + MLP(p || q), p the bilinear interactions (v_i W) * v_j of the embeddings
    and q those of the SENET-reweighted embeddings (the `bilinear` layer). Options: 'bilinear.type' (field-all,
    field-each, field-interaction), 'bilinear.reduction'. The SENET weights read the whole pair, so full
    ranking forms the pairs."""

    def __init__(self, spec: FeatureSpec, embed_dim: int = 16, mlp: Sequence[int] | str = (128, 64, 32),
                 dropout: float = 0.2, **bilinear_options: Any):
        super().__init__(spec, embed_dim)
        bilinear = layer_options("FiBiNET", ["bilinear"], bilinear_options)["bilinear"]
        self.bias = nn.Parameter(torch.zeros(1))
        self.bilinear = create_interaction("FiBiNET", "bilinear", len(spec), embed_dim, bilinear)
        self.mlp = MLP(self.bilinear.out_dim, parse_widths(mlp, "mlp"), dropout)

    def head(self, e: Embedded) -> torch.Tensor:
        return self.bias + e.first_order + self.mlp(self.bilinear(e.field_embeddings))

    def floats_per_row(self) -> int:
        return super().floats_per_row() + self.bilinear.floats_per_row()

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {**deep_space(trial), **registry.search_space("interaction", "bilinear", trial)}
