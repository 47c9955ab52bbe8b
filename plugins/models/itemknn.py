"""ItemKNN: item-based collaborative filtering by cosine similarity (Sarwar et al. 2001)."""

from __future__ import annotations

from typing import Any

import torch

from bench.config import check_number
from bench.data.features import FeatureSpec
from bench.nn.item_item import ItemItemModel, item_gram, require_memory

COLUMNS = 1024  # similarity columns normalised and pruned at once


class ItemKNN(ItemItemModel):
    """ItemKNN: S_ij = |U_i & U_j| / (sqrt(|U_i| |U_j|) + shrink) over the training positives, each item j
    keeping its `k` most similar items (column j); a user state scores x_u S, x_u its positives strictly
    before it. Options `k`, `shrink`."""

    def __init__(self, spec: FeatureSpec, k: int = 100, shrink: float = 10.0):
        super().__init__(spec)
        self.k = int(check_number("k", k, low=1, integer=True))
        self.shrink = check_number("shrink", shrink, low=0)

    def fit(self, data: Any) -> None:
        require_memory("itemknn", data.n_items, copies=1, dtype=torch.float32)
        similarity = item_gram(data, torch.float32)  # co-counts, turned into similarities in place
        norms = similarity.diagonal().sqrt().clone()
        for start in range(0, data.n_items, COLUMNS):  # column chunks: memory bounded by one chunk
            part = similarity[:, start:start + COLUMNS]
            part.div_((norms.unsqueeze(1) * norms[start:start + COLUMNS].unsqueeze(0) + self.shrink).clamp(min=1e-12))
            part.diagonal(offset=-start).zero_()
            if self.k < data.n_items:  # keep the k largest of each column, zero the rest
                top = part.topk(self.k, dim=0)
                part.zero_().scatter_(0, top.indices, top.values)
        self.matrix = similarity.to(self.matrix)
        self.data = data

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {"k": trial.suggest_int("k", 5, 1000, log=True), "shrink": trial.suggest_float("shrink", 0.0, 500.0)}
