"""Factorization Machine (Rendle 2010)."""

from __future__ import annotations

import torch
from torch import nn

from bench.data.features import FeatureSpec
from bench.nn.composed import interaction_term
from bench.nn.embedding import Embedded
from bench.nn.model import EmbeddingModel


class FM(EmbeddingModel):
    """Factorization Machine: y = w0 + sum_f w_f + sum_{i<j} <v_i, v_j>; no MLP."""

    pair_scoring = True

    def __init__(self, spec: FeatureSpec, embed_dim: int = 16):
        super().__init__(spec, embed_dim)
        self.bias = nn.Parameter(torch.zeros(1))
        self.fm = interaction_term("fm", spec, embed_dim)

    def head(self, e: Embedded) -> torch.Tensor:
        return self.bias + e.first_order + self.fm(e.field_embeddings)
