"""AutoInt+ (Song et al. 2019), registered as both `autoint` and `attention-deepfm`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import registry
from bench.features import FeatureSpec
from plugins.models.composed import ComposedModel, deep_space


class AutoInt(ComposedModel):
    """AutoInt+: first order + self-attention across fields + an MLP. Options: 'attention.heads', ..."""

    def __init__(self, spec: FeatureSpec, fm_dim: int = 16, mlp: Sequence[int] | str = (128, 64, 32),
                 dropout: float = 0.2, **options: Any):
        super().__init__(spec, fm_dim, interactions=("attention",), mlp=mlp, dropout=dropout, **options)

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {**deep_space(trial), **registry.search_space("interaction", "attention", trial)}
