"""`gru`: a GRU over the window, its last hidden state read out (GRU4Rec, Hidasi et al. 2016)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bench.config import check_number
from bench.nn.history import HistoryEncoder


class GRUEncoder(HistoryEncoder):
    """h = GRU^N(e_1, ..., e_n)_n over the n items present, oldest first (the padding is never read); zeros for
    an empty window."""

    def __init__(self, dim: int, length: int, layers: int = 1, dropout: float = 0.0):
        super().__init__(dim, length)
        layers = int(check_number("history.layers", layers, low=1, integer=True))
        dropout = check_number("history.dropout", dropout, low=0, high=1, high_open=True)
        self.gru = nn.GRU(dim, dim, num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)

    def forward(self, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        lengths = mask.sum(1)
        length = history.shape[1]
        # the window is padded at the front; move each row's items to the start, oldest first
        shift = (torch.arange(length, device=history.device) + (length - lengths).unsqueeze(1)) % length
        left = history.gather(1, shift.unsqueeze(2).expand_as(history))
        # the GRU is causal, so its output at each row's last item (step n - 1) reads the n items alone and never
        # the padding behind them: the packed sequence's result without packing's per-step batches
        out, _ = self.gru(self.dropout(left))
        last = out[torch.arange(len(out), device=out.device), (lengths - 1).clamp(min=0)]
        return last * (lengths > 0).unsqueeze(1).to(history.dtype)

    def floats_per_row(self) -> int:
        return self.length * 8 * self.dim

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {"history.layers": trial.suggest_int("history.layers", 1, 2),
                "history.dropout": trial.suggest_float("history.dropout", 0.0, 0.5)}
