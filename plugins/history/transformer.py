"""`transformer`: causal self-attention over the window with learned positions, the last position read out
(BST, Chen et al. 2019; SASRec, Kang & McAuley 2018)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bench.config import check_number
from bench.nn.history import HistoryEncoder


class TransformerEncoder(HistoryEncoder):
    """h = Block^N(e_1 + p_1, ..., e_L + p_L)_L: `layers` pre-norm blocks of causal multi-head self-attention
    and a position-wise feed-forward network, each position seeing itself and earlier ones only (padding never
    attended to), read out at the most recent position; zeros for an empty window."""

    def __init__(self, dim: int, length: int, layers: int = 2, heads: int = 1, dropout: float = 0.2):
        super().__init__(dim, length)
        layers = int(check_number("history.layers", layers, low=1, integer=True))
        heads = int(check_number("history.heads", heads, low=1, integer=True))
        if dim % heads:
            raise ValueError(f"history.heads: {heads} heads must divide the embedding dim {dim}")
        dropout = check_number("history.dropout", dropout, low=0, high=1, high_open=True)
        self.positions = nn.Embedding(length, dim)
        nn.init.normal_(self.positions.weight, std=0.01)
        block = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=dim, dropout=dropout, batch_first=True,
                                           norm_first=True)
        self.blocks = nn.TransformerEncoder(block, layers, norm=nn.LayerNorm(dim), enable_nested_tensor=False)
        self.dropout = nn.Dropout(dropout)
        causal = torch.triu(torch.ones(length, length, dtype=torch.bool), diagonal=1)
        self.register_buffer("causal", causal, persistent=False)
        self.heads = heads

    def forward(self, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        length = history.shape[1]
        x = self.dropout(history * (self.dim ** 0.5) + self.positions.weight[-length:])
        # a padded position attends to itself only, so no row of the attention is empty (NaN); a real one
        # never attends to padding, which sits before every item in the window
        padding = ~mask
        blocked = self.causal[-length:, -length:].unsqueeze(0) | padding.unsqueeze(1)
        blocked = blocked & ~torch.eye(length, dtype=torch.bool, device=history.device)
        blocked = blocked.repeat_interleave(self.heads, dim=0)
        out = self.blocks(x, mask=blocked)
        return out[:, -1] * mask[:, -1:].to(out.dtype)

    def floats_per_row(self) -> int:
        return self.length * (6 * self.dim + self.heads * self.length)

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {"history.layers": trial.suggest_int("history.layers", 1, 3),
                "history.heads": trial.suggest_categorical("history.heads", [1, 2]),
                "history.dropout": trial.suggest_float("history.dropout", 0.0, 0.5)}
