"""Every (user, item) pair of a full ranking, kept as its two sides.

Full ranking scores U users against I items. Forming the U * I pairs' field embeddings costs U * I * F * D
floats; most terms of a model's equation split by side instead (an FM's pairs are user-user, item-item and
user-item ones; an MLP's first Linear is a sum over the two sides' columns). So `score_all` hands a
model's `head` the two sides as `Pairs`, and the shared layers (`Term`, `MLP`) score all pairs from them,
giving (U * I, out) rows like `forward` would; a layer with no such path gets the pairs formed
(`materialize`), chunk by chunk as the evaluator bounds them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Pairs:
    """Two sides of every pair: user rows (U, ...) and item rows (I, ...); pair u * I + i is (user u, item i).

    `memo`: where a layer may keep what it computed from the item side alone (an MLP's first Linear on the
    items), shared by every user chunk ranked against the same items (`EmbeddingModel.item_scorer`); None
    outside full ranking."""

    user: torch.Tensor
    item: torch.Tensor
    memo: dict | None = field(default=None, compare=False, repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        return self.user.shape[0], self.item.shape[0]

    def materialize(self) -> torch.Tensor:
        """The pairs themselves, (U * I, ...) with the user's part first along dim 1 (fields or columns)."""
        n_u, n_i = self.shape
        user = self.user.unsqueeze(1).expand(n_u, n_i, *self.user.shape[1:])
        item = self.item.unsqueeze(0).expand(n_u, n_i, *self.item.shape[1:])
        both = torch.cat([user, item], dim=2)
        return both.reshape(n_u * n_i, *both.shape[2:])

    def add(self) -> torch.Tensor:
        """user + item for every pair, (U * I, ...): how additive per-side terms (first order) combine."""
        n_u, n_i = self.shape
        return (self.user.unsqueeze(1) + self.item.unsqueeze(0)).reshape(n_u * n_i, *self.user.shape[1:])
