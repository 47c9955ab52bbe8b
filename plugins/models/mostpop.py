"""MostPop: the popularity baseline every recommender has to beat."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from bench.data.features import FeatureSpec
from bench.nn.model import FittedModel


class MostPop(FittedModel):
    """Scores an item by log(1 + its training count), the same for every user; fitted by counting."""

    def __init__(self, spec: FeatureSpec):
        super().__init__(spec)
        self.register_buffer("popularity", torch.zeros(0))

    def fit(self, data: Any) -> None:
        counts = torch.from_numpy(np.log1p(data.item_counts()))
        self.popularity = counts.to(self.popularity)  # the buffer's device and dtype

    def score(self, states: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        if self.popularity.numel() == 0:
            raise RuntimeError("MostPop: call fit(data) with the training data before scoring")
        # contiguous, not an expanded view: callers may write into the scores
        return self.popularity[items].unsqueeze(0).expand(len(states), -1).contiguous()

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kwargs: Any) -> None:
        saved = state_dict.get(prefix + "popularity")
        if saved is not None:  # an unfitted model takes the saved counts' size
            self.popularity = self.popularity.new_empty(saved.shape)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
