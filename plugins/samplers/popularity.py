"""`popularity`: negatives drawn with probability proportional to training count ** alpha.

Popular items make harder negatives (word2vec's unigram ** 0.75). With alpha > 0 an item with no
training positive has weight 0 and is never drawn; alpha = 0 is the uniform sampler.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.data.types import InteractionData
from plugins.samplers.uniform import UniformSampler


class PopularitySampler(UniformSampler):
    """Negatives skewed toward popular items: weight = training count ** alpha."""

    name = "popularity"
    known_options = ("alpha", "exclude_held_out")

    def __init__(self, num_negatives: int = 4, seed: int = 0, alpha: float = 0.75, **options: Any):
        super().__init__(num_negatives=num_negatives, seed=seed, **options)
        if not np.isfinite(alpha) or alpha < 0:
            raise ValueError(f"popularity sampler: option alpha must be a finite number >= 0, got {alpha!r}")
        self.alpha = float(alpha)

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        """What `bench tune --sweep sampler` tries for this sampler (options named '<sampler>.<option>')."""
        return {"popularity.alpha": trial.suggest_float("popularity.alpha", 0.25, 1.0)}

    def _fit_proposal(self, data: InteractionData) -> np.ndarray:
        weights = np.power(data.item_counts().astype(float), self.alpha)
        weights[0] = 0.0  # the unknown row
        self._cumulative = np.cumsum(weights)
        self._last = int(np.flatnonzero(weights)[-1])
        return weights > 0

    def _draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """Inverse-CDF draws: zero-weight items own an empty interval, so they are never picked."""
        targets = rng.random(size) * self._cumulative[-1]
        return np.minimum(np.searchsorted(self._cumulative, targets, side="right"), self._last)
