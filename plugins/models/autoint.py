"""AutoInt+ (Song et al. 2019), registered as both `autoint` and `attention-deepfm`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

import registry
from bench.data.features import FeatureSpec
from bench.nn.composed import deep_space, interaction_term, layer_options
from bench.nn.embedding import Embedded
from bench.nn.layers import MLP, parse_widths
from bench.nn.model import EmbeddingModel


class AutoInt(EmbeddingModel):
    """AutoInt+: y = w0 + sum_f w_f + w^T SelfAttention(v) + MLP(v_1 || ... || v_F). Attention options:
    'attention.layers', 'attention.heads', 'attention.att_dim'."""

    pair_scoring = True

    def __init__(self, spec: FeatureSpec, embed_dim: int = 16, mlp: Sequence[int] | str = (128, 64, 32),
                 dropout: float = 0.2, **attention_options: Any):
        super().__init__(spec, embed_dim)
        attention = layer_options("AutoInt", ["attention"], attention_options)["attention"]
        self.bias = nn.Parameter(torch.zeros(1))
        self.attention = interaction_term("attention", spec, embed_dim, "AutoInt", **attention)
        self.mlp = MLP(self.embedding.total_dim, parse_widths(mlp, "mlp"), dropout)

    def head(self, e: Embedded) -> torch.Tensor:
        return self.bias + e.first_order + self.attention(e.field_embeddings) + self.mlp(e.flat_embeddings)

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {**deep_space(trial), **registry.search_space("interaction", "attention", trial)}
