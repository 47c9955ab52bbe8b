"""AFM (Xiao et al., IJCAI 2017)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

import registry
from bench.data.features import FeatureSpec
from bench.nn.composed import interaction_term, layer_options
from bench.nn.embedding import Embedded
from bench.nn.model import EmbeddingModel


class AFM(EmbeddingModel):
    """AFM: y = w0 + sum_f w_f + p^T sum_{i<j} a_ij (v_i * v_j) (Eq. 5), a_ij a softmax over the pairs of
    h^T ReLU(W (v_i * v_j) + b); no MLP. Options: 'afm.att_dim' (the attention factor), 'afm.dropout'. The
    softmax spans every pair, so full ranking forms the pairs."""

    def __init__(self, spec: FeatureSpec, embed_dim: int = 16, **afm_options: Any):
        super().__init__(spec, embed_dim)
        afm = layer_options("AFM", ["afm"], afm_options)["afm"]
        self.bias = nn.Parameter(torch.zeros(1))
        self.afm = interaction_term("afm", spec, embed_dim, "AFM", **afm)  # p^T is the term's readout

    def head(self, e: Embedded) -> torch.Tensor:
        return self.bias + e.first_order + self.afm(e.field_embeddings)

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return registry.search_space("interaction", "afm", trial)
