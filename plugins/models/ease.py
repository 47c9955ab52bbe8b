"""EASE (Steck 2019): an item x item linear model in closed form, a strong simple baseline."""

from __future__ import annotations

from typing import Any

import torch

from bench.config import check_number
from bench.data.features import FeatureSpec
from bench.nn.item_item import ItemItemModel, item_gram, require_memory


class EASE(ItemItemModel):
    """EASE: B = I - P diag(1 / diag(P)), P = (X^T X + reg I)^-1 over the training positives (zero
    diagonal); a user state scores x_u B, x_u its positives strictly before it. Option `reg` (lambda)."""

    def __init__(self, spec: FeatureSpec, reg: float = 250.0):
        super().__init__(spec)
        self.reg = check_number("reg", reg, low=0)
        if self.reg == 0:
            raise ValueError("reg: expected a number > 0 (X^T X alone is singular), got 0")

    def fit(self, data: Any) -> None:
        dtype = torch.float64  # the solve in float64 where it fits, else float32 (or refused, naming the size)
        try:
            require_memory("ease", data.n_items, copies=3, dtype=dtype)  # the Gram matrix, its inverse, float32 B
        except MemoryError:
            dtype = torch.float32
            require_memory("ease", data.n_items, copies=2, dtype=dtype)
        gram = item_gram(data, dtype)
        gram.diagonal().add_(self.reg)  # symmetric positive definite: Cholesky, a third of LU's time here
        factor = torch.linalg.cholesky(gram)
        del gram
        weights = torch.cholesky_inverse(factor)
        del factor
        weights.div_(-weights.diagonal().clone())  # column j scaled by -1 / P_jj, in place
        weights.diagonal().zero_()
        self.matrix = weights.to(self.matrix)
        self.data = data

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {"reg": trial.suggest_float("reg", 1.0, 1e4, log=True)}
