"""Matrix factorisation: the plain baseline that, tuned, beats NeuMF (Rendle et al. 2020)."""

from __future__ import annotations

import torch
from torch import nn

from bench.data.features import FeatureSpec
from bench.nn.composed import interaction_term
from bench.nn.embedding import Embedded
from bench.nn.model import EmbeddingModel


class MF(EmbeddingModel):
    """MF: y = b + b_u + b_i + <p_u, q_i>, from the user and item ids alone (an FM over those two fields
    is exactly this dot product)."""

    pair_scoring = True

    def __init__(self, spec: FeatureSpec, embed_dim: int = 16):
        names = [spec.id_field("user").name, spec.id_field("item").name]
        super().__init__(spec.select(names).with_dims({n: None for n in names}), embed_dim)
        self.bias = nn.Parameter(torch.zeros(1))
        self.dot = interaction_term("fm", self.spec, embed_dim)

    def head(self, e: Embedded) -> torch.Tensor:
        return self.bias + e.first_order + self.dot(e.field_embeddings)
