"""The FM second-order term as an interaction layer (Rendle 2010): sum over field pairs of <v_i, v_j>."""

from __future__ import annotations

import torch

from bench.kernels.fm import one_pass
from bench.nn.interaction import Interaction


class FMInteraction(Interaction):
    """Pairwise inner products of the field embeddings, summed: (B, F, D) -> (B, 1), by the `one_pass` kernel
    (bench/kernels/fm.py says why that one; `bench kernel` marks it "(models)")."""

    out_dim = 1
    pair_path = "scores"

    def forward(self, field_embeddings: torch.Tensor) -> torch.Tensor:
        return one_pass(field_embeddings)

    def pair_scores(self, user_fields: torch.Tensor, item_fields: torch.Tensor) -> torch.Tensor:
        """Every (user, item) pair's term, (U, Fu, D) x (I, Fi, D) -> (U, I), without forming the pairs.

        The pairs split into user-user, item-item and user-item ones: FM(u) + FM(i) + <sum u, sum i>.
        """
        within_user = one_pass(user_fields)  # (U, 1)
        within_item = one_pass(item_fields).view(1, -1)  # (1, I)
        return within_user + within_item + user_fields.sum(1) @ item_fields.sum(1).T
