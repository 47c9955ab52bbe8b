"""A history encoder, as the guide documents it."""

import torch
from torch import nn

from bench.nn.history import HistoryEncoder


class MaxPooling(HistoryEncoder):
    """The guide's encoder: the window's items max-pooled coordinate by coordinate, after a linear map."""

    def __init__(self, dim, length, bias=True):
        super().__init__(dim, length)
        self.map = nn.Linear(dim, dim, bias=bias)

    def forward(self, history, mask):
        mapped = self.map(history).masked_fill(~mask.unsqueeze(2), float("-inf"))
        pooled = mapped.max(dim=1).values
        return torch.where(mask.any(dim=1, keepdim=True), pooled, torch.zeros_like(pooled))

    @staticmethod
    def search_space(trial):
        return {"history.bias": trial.suggest_categorical("history.bias", [True, False])}
