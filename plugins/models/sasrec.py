"""SASRec (Kang & McAuley 2018): self-attention over the user's past, read out at the most recent position."""

from __future__ import annotations

from typing import Any

from bench.data.features import FeatureSpec
from bench.nn.sequence import SequenceModel


class SASRec(SequenceModel):
    """SASRec: score(u, i) = F^N(e_{h_1} + p_1, ..., e_{h_L} + p_L)_L . e_i, F a causal self-attention block
    (the `transformer` history encoder), the item table shared by input and output."""

    encoder_name = "transformer"

    def __init__(self, spec: FeatureSpec, embed_dim: int = 64, layers: int = 2, heads: int = 1,
                 dropout: float = 0.2):
        super().__init__(spec, embed_dim, layers=layers, heads=heads, dropout=dropout)

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {"layers": trial.suggest_int("layers", 1, 3), "heads": trial.suggest_categorical("heads", [1, 2]),
                "dropout": trial.suggest_float("dropout", 0.0, 0.5)}
