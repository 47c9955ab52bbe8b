"""DeepFM (Guo et al. 2017)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.features import FeatureSpec
from plugins.models.composed import ComposedModel, deep_space


class DeepFM(ComposedModel):
    """DeepFM: an FM and an MLP over the same field embeddings, summed into one logit."""

    def __init__(self, spec: FeatureSpec, fm_dim: int = 16, mlp: Sequence[int] | str = (128, 64, 32),
                 dropout: float = 0.2, **options: Any):
        super().__init__(spec, fm_dim, interactions=("fm",), mlp=mlp, dropout=dropout, **options)

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return deep_space(trial)
