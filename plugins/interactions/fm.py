"""The FM second-order term as an interaction layer (Rendle 2010): sum over field pairs of <v_i, v_j>."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bench import fm_kernels


class FMInteraction(nn.Module):
    """Pairwise inner products of the field embeddings, summed: (B, F, D) -> (B, 1)."""

    def __init__(self, num_fields: int, dim: int):
        super().__init__()
        self.num_fields, self.dim = num_fields, dim
        self.out_dim = 1

    def forward(self, field_embeddings: torch.Tensor) -> torch.Tensor:
        # looked up on the module at call time, so the kernel chosen by bench.fm_kernels is always used
        return fm_kernels.fm_interaction(field_embeddings)

    def pair_scores(self, user_fields: torch.Tensor, item_fields: torch.Tensor) -> torch.Tensor:
        """Every (user, item) pair's term, (U, Fu, D) x (I, Fi, D) -> (U, I), without forming the pairs.

        The pairs split into user-user, item-item and user-item ones: FM(u) + FM(i) + <sum u, sum i>.
        """
        within_user = fm_kernels.fm_interaction(user_fields)  # (U, 1)
        within_item = fm_kernels.fm_interaction(item_fields).view(1, -1)  # (1, I)
        return within_user + within_item + user_fields.sum(1) @ item_fields.sum(1).T

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        """FM has no knobs of its own."""
        return {}
