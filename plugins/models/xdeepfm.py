"""xDeepFM (Lian et al. 2018)."""

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


class XDeepFM(EmbeddingModel):
    """xDeepFM: y = w0 + sum_f w_f + w_cin^T CIN(v) + MLP(v_1 || ... || v_F); no FM term, as in the paper.
    The CIN's options are 'cin.layers', 'cin.split_half', 'cin.activation'."""

    pair_scoring = True

    def __init__(self, spec: FeatureSpec, embed_dim: int = 16, mlp: Sequence[int] | str = (128, 64, 32),
                 dropout: float = 0.2, **cin_options: Any):
        super().__init__(spec, embed_dim)
        cin = layer_options("XDeepFM", ["cin"], cin_options)["cin"]
        self.bias = nn.Parameter(torch.zeros(1))
        self.cin = interaction_term("cin", spec, embed_dim, "XDeepFM", **cin)  # w_cin^T p+
        self.mlp = MLP(self.embedding.total_dim, parse_widths(mlp, "mlp"), dropout)

    def head(self, e: Embedded) -> torch.Tensor:
        return self.bias + e.first_order + self.cin(e.field_embeddings) + self.mlp(e.flat_embeddings)

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {**deep_space(trial), **registry.search_space("interaction", "cin", trial)}
