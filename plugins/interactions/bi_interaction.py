"""NFM's bi-interaction pooling (He & Chua, SIGIR 2017): the element-wise products of every field pair, summed."""

from __future__ import annotations

import torch

from bench.nn.interaction import Interaction
from bench.nn.pairs import Pairs


class BiInteraction(Interaction):
    """NFM's bi-interaction pooling: the pairs' element-wise products summed, (B, F, D) -> (B, D).

    f_BI = sum_{i<j} v_i * v_j = 1/2 [(sum_i v_i)^2 - sum_i v_i^2], coordinate by coordinate, in O(F D) (Eq. 4
    of the paper). Summed over D it is the FM term.

    Both sums add over the fields, so they split exactly by side: a pair's f_BI comes from its user's and its
    item's sums (`forward_pairs`), never from the pair's F x D fields. `forward` also takes those two sides
    (`Pairs`, in full ranking) and gives every pair's row, (U * I, D).
    """

    pair_path = "forward"

    def __init__(self, num_fields: int, dim: int):
        super().__init__(num_fields, dim)
        self.out_dim = dim

    def forward(self, fields: torch.Tensor | Pairs) -> torch.Tensor:
        if isinstance(fields, Pairs):
            return self.forward_pairs(fields.user, fields.item).flatten(0, 1)
        return 0.5 * (fields.sum(1).square() - fields.square().sum(1))

    def forward_pairs(self, user_fields: torch.Tensor, item_fields: torch.Tensor) -> torch.Tensor:
        """(U, Fu, D) x (I, Fi, D) -> (U, I, D): the sums and the sums of squares of the two sides added."""
        total = user_fields.sum(1).unsqueeze(1) + item_fields.sum(1).unsqueeze(0)
        squares = user_fields.square().sum(1).unsqueeze(1) + item_fields.square().sum(1).unsqueeze(0)
        return 0.5 * (total.square() - squares)

    def floats_per_pair(self) -> int:
        """A pair's two sums and its output."""
        return 3 * self.dim
