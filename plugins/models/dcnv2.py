"""DCN-V2 (Wang et al., WWW 2021)."""

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

STRUCTURES = ("parallel", "stacked")


class DCNv2(EmbeddingModel):
    """DCN-V2: a cross network beside (parallel) or under (stacked) an MLP.

    x_L = Cross(x_0), x_{l+1} = x_0 * (W_l x_l + b_l) + x_l over x_0 = v_1 || ... || v_F, then

        parallel (default):  y = w0 + w_c^T x_L + MLP(v_1 || ... || v_F)
        stacked:             y = MLP(x_L)

    No first-order term, as in the paper. Cross options: 'cross.layers', 'cross.rank' (> 0: the low-rank
    mixture of 'cross.experts' experts). A cross layer needs the whole pair, so full ranking forms the pairs.
    """

    def __init__(self, spec: FeatureSpec, embed_dim: int = 16, structure: str = "parallel",
                 mlp: Sequence[int] | str = (128, 64, 32), dropout: float = 0.2, **cross_options: Any):
        super().__init__(spec, embed_dim)
        if structure not in STRUCTURES:
            raise ValueError(f"structure: expected one of {', '.join(STRUCTURES)}, got {structure!r}")
        cross = layer_options("DCNv2", ["cross"], cross_options)["cross"]
        self.structure = structure
        self.cross = create_interaction("DCNv2", "cross", len(spec), embed_dim, cross)
        hidden = parse_widths(mlp, "mlp")
        if structure == "stacked":
            self.mlp = MLP(self.cross.out_dim, hidden, dropout)
        else:
            self.bias = nn.Parameter(torch.zeros(1))
            self.readout = nn.Linear(self.cross.out_dim, 1, bias=False)  # w_c
            self.mlp = MLP(self.embedding.total_dim, hidden, dropout)

    def head(self, e: Embedded) -> torch.Tensor:
        crossed = self.cross(e.field_embeddings)
        if self.structure == "stacked":
            return self.mlp(crossed)
        return self.bias + self.readout(crossed) + self.mlp(e.flat_embeddings)

    def floats_per_row(self) -> int:
        return super().floats_per_row() + self.cross.floats_per_row()

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {**deep_space(trial), "structure": trial.suggest_categorical("structure", list(STRUCTURES)),
                **registry.search_space("interaction", "cross", trial)}
