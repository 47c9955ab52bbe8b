"""`recency`: the window's items weighted by how recent they are."""

from __future__ import annotations

from typing import Any

import torch

from bench.config import check_number
from bench.nn.history import HistoryEncoder

DECAY = 0.7  # each older position weighs this much of the next newer one


class RecencyEncoder(HistoryEncoder):
    """h = sum_l w_l e_l with w_l proportional to decay^(distance of position l from the most recent), over the
    items present (the weights of a row sum to 1)."""

    pooling = True

    def __init__(self, dim: int, length: int, decay: float = DECAY):
        super().__init__(dim, length)
        self.decay = check_number("history.decay", decay, low=0, high=1, high_open=True)

    def bag_weights(self, idx: torch.Tensor) -> torch.Tensor:
        """(B, L) weights of an index matrix, most recent last, padding (0) excluded; a row sums to 1 (or 0)."""
        length = idx.shape[1]
        decay = self.decay ** torch.arange(length - 1, -1, -1, device=idx.device, dtype=torch.float32)
        weights = decay * (idx > 0)
        return weights / weights.sum(dim=1, keepdim=True).clamp(min=1e-12)

    def forward(self, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return (history * self.bag_weights(mask.long()).unsqueeze(2).to(history.dtype)).sum(1)

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {"history.decay": trial.suggest_float("history.decay", 0.3, 0.95)}
