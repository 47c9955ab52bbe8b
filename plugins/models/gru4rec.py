"""GRU4Rec (Hidasi et al. 2016): a recurrent network over the user's past, its last state scored against the items."""

from __future__ import annotations

from typing import Any

from bench.data.features import FeatureSpec
from bench.nn.sequence import SequenceModel


class GRU4Rec(SequenceModel):
    """GRU4Rec: score(u, i) = GRU^N(e_{h_1}, ..., e_{h_n})_n . e_i over the n past items, oldest first (the
    `gru` history encoder), the item table shared by input and output."""

    encoder_name = "gru"

    def __init__(self, spec: FeatureSpec, embed_dim: int = 64, layers: int = 1, dropout: float = 0.2):
        super().__init__(spec, embed_dim, layers=layers, dropout=dropout)

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {"layers": trial.suggest_int("layers", 1, 2), "dropout": trial.suggest_float("dropout", 0.0, 0.5)}
