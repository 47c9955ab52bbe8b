"""FiBiNET's SENET and bilinear interaction (Huang et al., RecSys 2019): field importance, then v_i W * v_j."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bench.config import check_number
from bench.nn.interaction import Interaction

TYPES = ("field-all", "field-each", "field-interaction")


class SENETBilinear(Interaction):
    """FiBiNET's SENET and bilinear interaction: [p; q], (B, F, D) -> (B, 2 * F(F-1)/2 * D).

    With `senet` (else p alone):

        p_ij = (v_i W) * v_j for i < j, on the embeddings E                            (Eq. 7-9)
        q_ij = the same on V = SENET(E), each field scaled by a_i, a = ReLU(W_2 ReLU(W_1 z)) and
               z_i = the mean of v_i's coordinates (squeeze, excitation, re-weight: Eq. 3-6)

    W is, by `type`, one D x D matrix shared by all pairs (`field-all`), one per field i (`field-each`), or one
    per pair (`field-interaction`); p and q have their own, as in the reference implementations. The SENET's hidden
    layer has F / `reduction` units (at least one), no biases. A pair's SENET weights depend on all its
    fields, user and item ones: full ranking forms the pairs.
    """

    def __init__(self, num_fields: int, dim: int, type: str = "field-interaction",
                 reduction: int = 3, senet: bool = True):
        super().__init__(num_fields, dim)
        if type not in TYPES:
            raise ValueError(f"bilinear: type must be one of {', '.join(TYPES)}, got {type!r}")
        reduction = int(check_number("bilinear: reduction", reduction, low=1, integer=True))
        if not isinstance(senet, bool):
            raise ValueError(f"bilinear: senet must be true or false, got {senet!r}")
        rows, cols = torch.triu_indices(num_fields, num_fields, offset=1)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)
        self.type = type
        self.bilinear = nn.ModuleList(Bilinear(num_fields, dim, type, rows) for _ in range(1 + senet))
        hidden = max(1, num_fields // reduction)
        self.excitation = nn.Sequential(nn.Linear(num_fields, hidden, bias=False), nn.ReLU(),
                                        nn.Linear(hidden, num_fields, bias=False), nn.ReLU()) if senet else None
        self.out_dim = len(self.bilinear) * len(rows) * dim

    def forward(self, field_embeddings: torch.Tensor) -> torch.Tensor:
        views = [field_embeddings]
        if self.excitation is not None:
            importance = self.excitation(field_embeddings.mean(2))  # (B, F)
            views.append(field_embeddings * importance.unsqueeze(2))
        return torch.cat([bilinear(v, self.rows, self.cols).flatten(1)
                          for bilinear, v in zip(self.bilinear, views, strict=True)], dim=1)

    def floats_per_row(self) -> int:
        """Per view, v_i W and the products of every pair; the re-weighted fields."""
        return 2 * self.out_dim + 2 * self.num_fields * self.dim

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {
            "bilinear.type": trial.suggest_categorical("bilinear.type", list(TYPES)),
            "bilinear.reduction": trial.suggest_categorical("bilinear.reduction", [1, 2, 3, 4]),
        }


class Bilinear(nn.Module):
    """(v_i W) * v_j of every field pair i < j, (B, F, D) -> (B, pairs, D), W as `kind` (a bilinear type) says."""

    def __init__(self, num_fields: int, dim: int, kind: str, rows: torch.Tensor):
        super().__init__()
        self.kind = kind
        count = {"field-all": 1, "field-each": num_fields, "field-interaction": len(rows)}[kind]
        self.weight = nn.Parameter(torch.randn(count, dim, dim) / dim**0.5)

    def forward(self, fields: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        if self.kind == "field-all":
            left = (fields @ self.weight[0])[:, rows]
        elif self.kind == "field-each":
            left = torch.einsum("bfd,fde->bfe", fields, self.weight)[:, rows]
        else:
            left = torch.einsum("bpd,pde->bpe", fields[:, rows], self.weight)
        return left * fields[:, cols]
