"""NFM (He & Chua, SIGIR 2017)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from bench.data.features import FeatureSpec
from bench.nn.composed import create_interaction
from bench.nn.embedding import Embedded
from bench.nn.layers import MLP, Dropout, parse_widths
from bench.nn.model import EmbeddingModel


class NFM(EmbeddingModel):
    """NFM: y = w0 + sum_f w_f + MLP(f_BI), f_BI = sum_{i<j} v_i * v_j the bi-interaction pooling (Eq. 1, 4);
    dropout on f_BI and after each hidden layer. One hidden layer by default (the paper's best, NFM-1); none
    (`mlp` empty) is NFM-0, h^T f_BI. f_BI splits by side, so full ranking never forms the pairs' fields."""

    pair_scoring = True

    def __init__(self, spec: FeatureSpec, embed_dim: int = 16, mlp: Sequence[int] | str = (64,),
                 dropout: float = 0.2):
        super().__init__(spec, embed_dim)
        self.bias = nn.Parameter(torch.zeros(1))
        self.bi = create_interaction("NFM", "bi-interaction", len(spec), embed_dim, {})
        self.dropout = Dropout(dropout)
        self.mlp = MLP(self.bi.out_dim, parse_widths(mlp, "mlp", allow_empty=True), dropout)

    def head(self, e: Embedded) -> torch.Tensor:
        return self.bias + e.first_order + self.mlp(self.dropout(self.bi(e.field_embeddings)))

    def floats_per_pair(self) -> int:
        return super().floats_per_pair() + self.bi.floats_per_pair()

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {"mlp": trial.suggest_categorical("mlp", ["64", "128", "64,32", "128,64"]),
                "dropout": trial.suggest_float("dropout", 0.0, 0.5)}
