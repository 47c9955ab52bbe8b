"""Factorization Machine (Rendle 2010)."""

from __future__ import annotations

from typing import Any

from bench.features import FeatureSpec
from plugins.models.composed import ComposedModel, fm_dim_space


class FM(ComposedModel):
    """Factorization Machine: bias + first order + pairwise field interactions, no MLP."""

    def __init__(self, spec: FeatureSpec, fm_dim: int = 16, **options: Any):
        super().__init__(spec, fm_dim, interactions=("fm",), mlp=(), **options)

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {"fm_dim": fm_dim_space(trial)}
