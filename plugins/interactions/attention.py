"""AutoInt's interacting layers (Song et al. 2019): multi-head self-attention across fields."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bench.nn.interaction import Interaction


class SelfAttention(Interaction):
    """Stacked multi-head self-attention over fields, flattened: (B, F, D) -> (B, F * att_dim).

    `att_dim` is one field's output width of a layer with all heads together (each head gets
    att_dim // heads, as FuxiCTR's `attention_dim`), so out_dim does not grow with `heads`.
    """

    def __init__(self, num_fields: int, dim: int, layers: int = 2, heads: int = 2, att_dim: int = 16):
        super().__init__(num_fields, dim)
        if layers < 1 or heads < 1 or att_dim < 1 or att_dim % heads:
            raise ValueError(f"attention: need layers >= 1, heads >= 1 and att_dim a multiple of heads, "
                             f"got layers={layers}, heads={heads}, att_dim={att_dim}")
        self.blocks = nn.Sequential(*(InteractingLayer(dim if k == 0 else att_dim, att_dim, heads)
                                      for k in range(layers)))
        self.out_dim = num_fields * att_dim

    def floats_per_row(self) -> int:
        """Peak floats per input row: q, k, v and the residual of F fields, plus F x F scores per head."""
        att_dim = self.out_dim // self.num_fields
        heads = self.blocks[0].heads
        return self.num_fields * (5 * att_dim + heads * self.num_fields)

    def forward(self, field_embeddings: torch.Tensor) -> torch.Tensor:
        return self.blocks(field_embeddings).flatten(1)

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {
            "attention.layers": trial.suggest_int("attention.layers", 1, 3),
            "attention.heads": trial.suggest_categorical("attention.heads", [1, 2, 4]),
            "attention.att_dim": trial.suggest_categorical("attention.att_dim", [8, 16, 32]),
        }


class InteractingLayer(nn.Module):
    """One layer: ReLU(multi-head attention(x) + W_res x), Eq. 5-8 of the paper.

    Attention scores are scaled by 1/sqrt(head width) (the paper's psi is the plain inner product;
    scaling keeps the softmax from saturating as att_dim grows).
    """

    def __init__(self, in_dim: int, att_dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(in_dim, 3 * att_dim, bias=False)
        self.residual = nn.Linear(in_dim, att_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, f, _ = x.shape
        q, k, v = self.qkv(x).view(b, f, 3, self.heads, -1).permute(2, 0, 3, 1, 4)  # each (B, heads, F, d)
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, f, -1)
        return torch.relu(attended + self.residual(x))
