"""PNN's product layer (Qu et al., ICDM 2016): inner products of field pairs (IPNN), the sum-pooled outer
product (OPNN), or both (PNN*)."""

from __future__ import annotations

from typing import Any

import torch

from bench.nn.interaction import Interaction
from bench.nn.pairs import Pairs

TYPES = ("inner", "outer", "both")


class Products(Interaction):
    """PNN's product layer: inner products, the sum-pooled outer product, or both: (B, F, D) -> (B, out_dim).

    p, the quadratic signals, by `type`:

        inner: p = (<v_i, v_j>) for i < j                            F(F-1)/2 values
        outer: p = f f^T with f = sum_i v_i, flattened               D * D values (the paper's superposition)
        both:  [inner; outer]

    Both split by side, so full ranking never forms the pairs' fields (`forward_pairs`): a pair's inner
    products are its user's (user-user), its item's (item-item) and the U x I products of a user field with
    an item field; its f is the user's sum plus the item's. `forward` also takes those two sides (`Pairs`,
    in full ranking) and gives every pair's row, (U * I, out_dim).
    """

    pair_path = "forward"

    def __init__(self, num_fields: int, dim: int, type: str = "inner"):
        super().__init__(num_fields, dim)
        if type not in TYPES:
            raise ValueError(f"product: type must be one of {', '.join(TYPES)}, got {type!r}")
        self.type = type
        rows, cols = torch.triu_indices(num_fields, num_fields, offset=1)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)
        self.inner = type in ("inner", "both")
        self.outer = type in ("outer", "both")
        self.out_dim = len(rows) * self.inner + dim * dim * self.outer

    def forward(self, fields: torch.Tensor | Pairs) -> torch.Tensor:
        if isinstance(fields, Pairs):
            return self.forward_pairs(fields.user, fields.item).flatten(0, 1)
        parts = []
        if self.inner:
            parts.append((fields @ fields.transpose(1, 2))[:, self.rows, self.cols])
        if self.outer:
            total = fields.sum(1)
            parts.append((total.unsqueeze(2) * total.unsqueeze(1)).flatten(1))
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]

    def forward_pairs(self, user_fields: torch.Tensor, item_fields: torch.Tensor) -> torch.Tensor:
        """(U, Fu, D) x (I, Fi, D) -> (U, I, out_dim), the pair's fields being the user's then the item's."""
        n_u, n_i = len(user_fields), len(item_fields)
        parts = []
        if self.inner:
            parts.append(self._inner_pairs(user_fields, item_fields))
        if self.outer:
            total = user_fields.sum(1).unsqueeze(1) + item_fields.sum(1).unsqueeze(0)  # (U, I, D)
            parts.append((total.unsqueeze(3) * total.unsqueeze(2)).view(n_u, n_i, -1))
        return torch.cat(parts, dim=2) if len(parts) > 1 else parts[0]

    def _inner_pairs(self, user_fields: torch.Tensor, item_fields: torch.Tensor) -> torch.Tensor:
        """Every pair's <v_i, v_j> (i < j) from the three blocks of its Gram matrix, in `forward`'s order."""
        f_u = user_fields.shape[1]
        out = user_fields.new_empty(len(user_fields), len(item_fields), len(self.rows))
        both_user, both_item = self.cols < f_u, self.rows >= f_u
        across = ~(both_user | both_item)  # i a user field, j an item field
        out[:, :, both_user] = (user_fields @ user_fields.transpose(1, 2))[:, self.rows[both_user],
                                                                          self.cols[both_user]].unsqueeze(1)
        out[:, :, both_item] = (item_fields @ item_fields.transpose(1, 2))[:, self.rows[both_item] - f_u,
                                                                          self.cols[both_item] - f_u].unsqueeze(0)
        # every (user field p, item field q) pair is one with p < q, in forward's order: p-major
        out[:, :, across] = torch.einsum("upd,iqd->uipq", user_fields, item_fields).flatten(2)
        return out

    def floats_per_row(self) -> int:
        """The Gram matrix (F x F) and the outer product (D x D) of a row."""
        return self.num_fields**2 * self.inner + self.dim**2 * self.outer + self.out_dim

    def floats_per_pair(self) -> int:
        """A pair's output, its summed vector f and its user-item products."""
        return self.out_dim + self.dim * self.outer + len(self.rows) * self.inner

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {"product.type": trial.suggest_categorical("product.type", list(TYPES))}
