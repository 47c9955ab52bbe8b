"""Shared building blocks of the models."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def parse_widths(value: Sequence[int] | int | str | None, option: str, allow_empty: bool = False) -> tuple[int, ...]:
    """(128, 64), 128 or "128,64" -> (128, 64): layer widths as code, `--set` and Optuna give them.

    None, "" or () mean no layer where `allow_empty`; anything else not positive ints is an error naming
    the option.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        parts: list = []
    elif isinstance(value, str):
        parts = value.split(",")
    else:
        parts = [value] if isinstance(value, int) else list(value)
    try:
        widths = tuple(int(p) for p in parts)
        valid = all(w >= 1 for w in widths) and (allow_empty or bool(widths))
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError(f"{option}: expected positive widths such as (128, 64) or '128,64', got {value!r}")
    return widths


class MLP(nn.Module):
    """Linear -> ReLU -> Dropout blocks, then a final Linear to `out_dim` (1: a logit)."""

    def __init__(self, in_dim: int, hidden: Sequence[int], dropout: float = 0.0, out_dim: int | None = 1):
        super().__init__()
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [nn.Linear(in_dim, width), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            in_dim = width
        if out_dim is not None:
            layers.append(nn.Linear(in_dim, out_dim))
            in_dim = out_dim
        self.net = nn.Sequential(*layers)
        self.out_dim = in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def forward_pairs(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        """MLP of every concatenation [left_u, right_i], (U, L) x (I, R) -> (U, I, out), in eval mode.

        The first Linear is split by input columns and applied once per row of each side, then broadcast:
        U*I rows never pass through the widest matmul.
        """
        first = self.net[0]
        if not isinstance(first, nn.Linear):  # no hidden layer: the output Linear itself
            raise TypeError("forward_pairs needs a first Linear layer")
        w_left, w_right = first.weight[:, :left.shape[1]], first.weight[:, left.shape[1]:]
        hidden = (left @ w_left.T + first.bias).unsqueeze(1) + (right @ w_right.T).unsqueeze(0)
        return self.net[1:](hidden)
