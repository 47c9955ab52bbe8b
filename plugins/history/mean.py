"""`mean`: the window's items averaged, the history as a set (what `--history` always did)."""

from __future__ import annotations

import torch

from bench.nn.history import HistoryEncoder, masked_mean


class MeanEncoder(HistoryEncoder):
    """The mean of the window's item vectors: h = (1/n) sum_l e_l over the n items present."""

    pooling = True  # one embedding_bag, no (B, L, D) window formed

    def bag_weights(self, idx: torch.Tensor) -> None:
        return None  # the plain mean

    def forward(self, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return masked_mean(history, mask)
