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
    Two layers of 64 maps by default: MovieLens has 6 fields (36 field pairs), and 128 maps cost 2.6x
    the time per epoch (training + full-ranking validation: 27.7 s against 10.6 s on a 2-core CPU).
    """

    def __init__(self, num_fields: int, dim: int, layers: Sequence[int] | str = (64, 64),
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
        """Peak floats per scored row or (user, item) pair, a bound over `forward` (outer product and maps)
        and `forward_pairs` (input maps and a copy, the item fields' outer product, the two halves' maps and
        their sum); the evaluator sizes its chunks by it."""
        return max(self.dim * (conv.in_channels + 4 * size) for conv, size in zip(self.convs, self.sizes, strict=True))

    def forward(self, field_embeddings: torch.Tensor) -> torch.Tensor:
        b, _, d = field_embeddings.shape
        x0 = field_embeddings.transpose(1, 2)  # (B, D, F): channels last, so each layer is one flat matmul
        hidden, pooled = x0, []
        for conv, split in zip(self.convs, self.splits, strict=True):
            # field-major outer product (channel m * H + h is x^0_m * x^{k-1}_h: long contiguous rows);
            # the conv's weight is stored map-major (h * F + m), so it is permuted to match
            outer = (x0.unsqueeze(3) * hidden.unsqueeze(2)).reshape(b * d, -1)
            weight = conv.weight.view(conv.out_channels, -1, self.num_fields).transpose(1, 2).flatten(1)
            maps = self.activation(outer @ weight.T).view(b, d, -1)  # (B, D, size)
            hidden, out = self._split(maps, split)
            pooled.append(out.sum(dim=1))
        return torch.cat(pooled, dim=1)

    def forward_pairs(self, user_fields: torch.Tensor, item_fields: torch.Tensor) -> torch.Tensor:
        """Every (user, item) pair's output, (U, Fu, D) x (I, Fi, D) -> (U, I, out_dim), the fields of a
        pair being the user's then the item's (as in `Embedded.concat`).

        A layer's sum over the fields m of x^0 splits by side. For one user, sum over the user's fields
        of W_hpm x^0_m is, per coordinate d, a (maps_in x size) matrix: that half of the layer is one
        batched matmul over all the user's pairs. Only the item fields' half needs the outer product, so
        a pair costs (1 + Fi) / F of `forward`'s multiply-adds.
        """
        (n_u, f_u, d), (n_i, f_i) = user_fields.shape, item_fields.shape[:2]
        xu, xi = user_fields.transpose(1, 2), item_fields.transpose(1, 2)  # (U, D, Fu), (I, D, Fi)
        # layout (U, D, I, channels) throughout: every matmul below is then on contiguous blocks
        xi_by_d = xi.transpose(0, 1).unsqueeze(0)  # (1, D, I, Fi)
        hidden = torch.cat([xu.unsqueeze(2).expand(n_u, d, n_i, f_u), xi_by_d.expand(n_u, d, n_i, f_i)], dim=3)
        pooled = []
        for conv, split, size in zip(self.convs, self.splits, self.sizes, strict=True):
            w = conv.weight.view(size, -1, f_u + f_i)  # (size, maps_in, F)
            maps_in = w.shape[1]
            per_user = torch.einsum("hpm,udm->udph", w[:, :, :f_u], xu).reshape(n_u * d, maps_in, size)
            outer = (xi_by_d.unsqueeze(4) * hidden.unsqueeze(3)).reshape(-1, f_i * maps_in)  # field-major
            by_item = (outer @ w[:, :, f_u:].transpose(1, 2).flatten(1).T).view(n_u * d, n_i, size)
            maps = by_item.baddbmm_(hidden.reshape(n_u * d, n_i, maps_in), per_user)  # in place: no copy
            hidden, out = self._split(self.activation(maps.view(n_u, d, n_i, size)), split)
            pooled.append(out.sum(dim=1))  # (U, I, out)
        return torch.cat(pooled, dim=2)

    @staticmethod
    def _split(maps: torch.Tensor, split: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(maps for the next layer, maps sent to the output), channels last: the first half goes on."""
        return maps.chunk(2, dim=-1) if split else (maps, maps)

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        sizes = ["64,64", "128,128", "200,200,200", "256,128"]  # strings: Optuna stores only scalars
        return {
            "cin.layers": trial.suggest_categorical("cin.layers", sizes),
            "cin.split_half": trial.suggest_categorical("cin.split_half", [True, False]),
        }
