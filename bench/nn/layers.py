"""Shared building blocks of the models: the MLP, a logit term from an interaction layer, option checks.

Both layers take either a batch of rows or, in full ranking, the two sides of every (user, item) pair
(`Pairs`), and give (rows, out) either way, so a model's `head` is written once for both.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from bench.config import check_number, comma_list
from bench.nn.pairs import Pairs


def parse_widths(value: Sequence[int] | int | str | None, option: str, allow_empty: bool = False) -> tuple[int, ...]:
    """(128, 64), 128 or "128,64" -> (128, 64): layer widths as code, `--set` and Optuna give them.

    None, "" or () mean no layer where `allow_empty`; anything else not positive ints is an error naming
    the option.
    """
    parts = [value] if isinstance(value, int) else comma_list(value)
    try:
        widths = tuple(int(p) for p in parts)
        valid = all(w >= 1 for w in widths) and (allow_empty or bool(widths))
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError(f"{option}: expected positive widths such as (128, 64) or '128,64', got {value!r}")
    return widths


class Dropout(nn.Module):
    """Inverted dropout whose mask comes from `torch.rand` compared with p: the same distribution as
    `nn.Dropout`, whose per-element Bernoulli draws were a visible share of a DeepFM training step; this mask
    costs about half as much (docs/performance.md)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = check_number("dropout", p, low=0, high=1, high_open=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return x * torch.rand_like(x).ge_(self.p).mul_(1.0 / (1.0 - self.p))


class MLP(nn.Module):
    """Linear -> ReLU -> Dropout blocks, then a final Linear to `out_dim` (1: a logit)."""

    def __init__(self, in_dim: int, hidden: Sequence[int], dropout: float = 0.0, out_dim: int | None = 1):
        super().__init__()
        dropout = check_number("dropout", dropout, low=0, high=1, high_open=True)
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [nn.Linear(in_dim, width), nn.ReLU()]
            if dropout > 0:
                layers.append(Dropout(dropout))
            in_dim = width
        if out_dim is not None:
            layers.append(nn.Linear(in_dim, out_dim))
            in_dim = out_dim
        self.net = nn.Sequential(*layers)
        self.out_dim = in_dim

    def forward(self, x: torch.Tensor | Pairs) -> torch.Tensor:
        if isinstance(x, Pairs):
            return self.forward_pairs(x.user, x.item, x.memo).reshape(-1, self.out_dim)
        return self.net(x)

    def forward_pairs(self, left: torch.Tensor, right: torch.Tensor, memo: dict | None = None) -> torch.Tensor:
        """MLP of every concatenation [left_u, right_i], (U, L) x (I, R) -> (U, I, out), in eval mode.

        The first Linear is split by input columns and applied once per row of each side, then broadcast:
        U*I rows never pass through the widest matmul. With a `memo` (full ranking, the same items for every
        user chunk) the item side's part is computed once.
        """
        first = self.net[0]
        if not isinstance(first, nn.Linear):  # no hidden layer: the output Linear itself
            raise TypeError("forward_pairs needs a first Linear layer")
        w_left, w_right = first.weight[:, :left.shape[1]], first.weight[:, left.shape[1]:]
        key, version = ("mlp", id(self)), first.weight._version
        kept = memo.get(key) if memo is not None else None
        if kept is not None and kept[0] is right and kept[1] == version:  # same items, same weights
            item_part = kept[2]
        else:
            item_part = right @ w_right.T
            if memo is not None:
                memo[key] = (right, version, item_part)
        hidden = (left @ w_left.T + first.bias).unsqueeze(1) + item_part.unsqueeze(0)
        return self.net[1:](hidden)


class Term(nn.Module):
    """One logit term of a model's equation from an interaction layer, (B, F, D) -> (B, 1): the layer itself
    when it gives one value (FM), else w^T layer(x) with a learned w (xDeepFM's w_cin^T p+, AutoInt's output
    layer). `num_fields` and `dim` are what the layer was built with.

    On `Pairs` it scores every pair the way the layer declares (`bench.nn.interaction.pair_path`):
    `pair_scores(user, item[, w])` (FM, linear CIN: from per-side tables), `forward_pairs(user, item)`
    (U, I, out_dim), or the pairs formed and `forward`.
    """

    def __init__(self, layer: nn.Module, name: str = "", num_fields: int | None = None, dim: int | None = None):
        from bench.nn.interaction import pair_path

        super().__init__()
        self.layer = layer
        self.name = name or type(layer).__name__  # the plugin's name, for messages
        self.num_fields = num_fields if num_fields is not None else layer.num_fields
        self.dim = dim if dim is not None else layer.dim
        self.pair_path = pair_path(layer)
        wide = layer.out_dim > 1
        self.readout = nn.Linear(layer.out_dim, 1, bias=False) if wide else None

    def forward(self, fields: torch.Tensor | Pairs) -> torch.Tensor:
        if not isinstance(fields, Pairs):
            out = self.layer(fields)
            if out.dim() != 2 or out.shape[1] != self.layer.out_dim:
                raise ValueError(f"interaction {self.name!r} ({type(self.layer).__module__}."
                                 f"{type(self.layer).__qualname__}) returned shape {tuple(out.shape)} for "
                                 f"{fields.shape[0]} rows, but its out_dim is {self.layer.out_dim}: expected "
                                 f"({fields.shape[0]}, {self.layer.out_dim})")
            return out if self.readout is None else self.readout(out)
        weight = () if self.readout is None else (self.readout.weight.view(-1),)
        if self.pair_path == "scores":
            return self.layer.pair_scores(fields.user, fields.item, *weight).reshape(-1, 1)
        if self.pair_path == "forward":
            out = self.layer.forward_pairs(fields.user, fields.item)  # (U, I, out_dim)
            return (out if self.readout is None else self.readout(out)).reshape(-1, 1)
        return self.forward(fields.materialize())

    def floats_per_row(self) -> int:
        """Peak floats one row needs in `forward`: the layer's declared hint, else its output."""
        declared = getattr(self.layer, "floats_per_row", None)
        return declared() if callable(declared) else self.layer.out_dim

    def floats_per_pair(self) -> int:
        """Peak floats one pair needs on `Pairs`: the layer's hint for its pairs path, else a formed row's."""
        declared = getattr(self.layer, "floats_per_pair", None)
        if self.pair_path is not None and callable(declared):
            return declared()
        return self.floats_per_row() + self.num_fields * self.dim
