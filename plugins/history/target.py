"""`target`: DIN's target attention (Zhou et al. 2018): each past item weighed by its relevance to the candidate."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bench.nn.history import HistoryEncoder
from bench.nn.layers import parse_widths


class TargetAttention(HistoryEncoder):
    """DIN's local activation unit: v_u(c) = sum_l a(e_l, c) e_l, with a(e, c) = MLP([e, c, e - c, e * c]) a
    scalar per past item (sigmoid hidden units of `hidden` widths, as in the paper's Dice/PReLU-free variant).
    The weights are not normalised by a softmax (the paper keeps the intensity of the user's interest),
    unless `softmax` is set. Target-aware: full ranking forms every (user, item) pair."""

    target_aware = True

    def __init__(self, dim: int, length: int, hidden: Any = (36,), softmax: bool = False):
        super().__init__(dim, length)
        widths = parse_widths(hidden, "history.hidden")
        if not isinstance(softmax, bool):
            raise ValueError(f"history.softmax: expected true or false, got {softmax!r}")
        layers: list[nn.Module] = []
        width = 4 * dim
        for w in widths:
            layers += [nn.Linear(width, w), nn.Sigmoid()]
            width = w
        layers.append(nn.Linear(width, 1))
        self.unit = nn.Sequential(*layers)
        self.softmax = softmax
        self.widest = max([4 * dim, *widths])

    def forward(self, history: torch.Tensor, mask: torch.Tensor, candidate: torch.Tensor) -> torch.Tensor:
        c = candidate.unsqueeze(1).expand_as(history)
        scores = self.unit(torch.cat([history, c, history - c, history * c], dim=2)).squeeze(2)  # (B, L)
        if self.softmax:
            scores = scores.masked_fill(~mask, float("-inf")).softmax(dim=1).nan_to_num(0.0)
        else:
            scores = scores * mask.to(scores.dtype)
        return (scores.unsqueeze(2) * history).sum(1)

    def floats_per_row(self) -> int:
        return self.length * (self.dim + self.widest)

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {"history.hidden": trial.suggest_categorical("history.hidden", ["36", "80,40", "64"])}
