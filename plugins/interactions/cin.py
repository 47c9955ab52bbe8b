"""xDeepFM's Compressed Interaction Network (Lian et al. 2018): explicit vector-wise interactions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from bench.layers import parse_widths

ACTIVATIONS = {"identity": nn.Identity, "relu": nn.ReLU}


def layer_sizes(layers: Sequence[int] | int | str) -> tuple[int, ...]:
    """(128, 128), 128 or "128,128" -> (128, 128); the string form is what --set and Optuna pass."""
    return parse_widths(layers, "cin: layers")


class CIN(nn.Module):
    """Compressed Interaction Network: (B, F, D) -> (B, out_dim), out_dim = maps sent to the output.

    Layer k builds each of its maps as a weighted sum, over every (map h of layer k-1, field m), of the
    Hadamard product x^{k-1}_h * x^0_m: a 1x1 convolution over the outer product's H*F channels (Eq. 6 of
    the paper, linear as in the authors' default `cross_activation: identity`). Every layer's output
    maps are sum-pooled over D. With `split_half`, each non-final layer sends half of its maps to the
    output and half to the next layer (the authors' code), which halves the next layer's cost.
    """

    def __init__(self, num_fields: int, dim: int, layers: Sequence[int] | str = (128, 128),
                 split_half: bool = True, activation: str = "identity"):
        super().__init__()
        sizes = layer_sizes(layers)
        if split_half and any(size % 2 for size in sizes[:-1]):
            raise ValueError(f"cin: with split_half every layer but the last needs an even size, got {sizes}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"cin: activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.num_fields, self.dim, self.sizes = num_fields, dim, sizes
        self.convs = nn.ModuleList()
        self.splits: list[bool] = []
        maps_in, out_dim = num_fields, 0
        for k, size in enumerate(sizes):
            split = split_half and k < len(sizes) - 1
            self.convs.append(nn.Conv1d(maps_in * num_fields, size, kernel_size=1, bias=False))
            self.splits.append(split)
            maps_in = size // 2 if split else size
            out_dim += size // 2 if split else size
        self.activation = ACTIVATIONS[activation]()
        self.out_dim = out_dim

    def floats_per_row(self) -> int:
        """Peak floats per input row: the widest outer product (maps_in * F, D) (chunks full ranking)."""
        widest = max(conv.in_channels for conv in self.convs)
        return widest * self.dim + max(self.sizes) * self.dim

    def forward(self, field_embeddings: torch.Tensor) -> torch.Tensor:
        x0 = field_embeddings
        b, _, d = x0.shape
        hidden, pooled = x0, []
        for conv, split in zip(self.convs, self.splits, strict=True):
            outer = torch.einsum("bhd,bmd->bhmd", hidden, x0).reshape(b, -1, d)
            maps = self.activation(conv(outer))  # (B, size, D)
            if split:
                hidden, out = maps.chunk(2, dim=1)
            else:
                hidden = out = maps
            pooled.append(out.sum(dim=2))
        return torch.cat(pooled, dim=1)

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        sizes = ["64,64", "128,128", "200,200,200", "256,128"]  # strings: Optuna stores only scalars
        return {
            "cin.layers": trial.suggest_categorical("cin.layers", sizes),
            "cin.split_half": trial.suggest_categorical("cin.split_half", [True, False]),
        }
