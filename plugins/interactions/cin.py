"""xDeepFM's Compressed Interaction Network (Lian et al. 2018): explicit vector-wise interactions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from bench.nn import monomials
from bench.nn.interaction import Interaction
from bench.nn.layers import parse_widths

ACTIVATIONS = {"identity": nn.Identity, "relu": nn.ReLU}


def layer_sizes(layers: Sequence[int] | int | str) -> tuple[int, ...]:
    """(128, 128), 128 or "128,128" -> (128, 128); the string form is what --set and Optuna pass."""
    return parse_widths(layers, "cin: layers")


class CIN(Interaction):
    """Compressed Interaction Network: (B, F, D) -> (B, out_dim), out_dim = maps sent to the output.

    Layer k builds each of its maps as a weighted sum, over every (map h of layer k-1, field m), of the
    Hadamard product x^{k-1}_h * x^0_m: a 1x1 convolution over the outer product's H*F channels (Eq. 6 of
    the paper, linear as in the authors' default `cross_activation: identity`). Every layer's output
    maps are sum-pooled over D. With `split_half`, each non-final layer sends half of its maps to the
    output and half to the next layer (the authors' code), which halves the next layer's cost.
    Two layers of 64 maps by default: MovieLens has 6 fields (36 field pairs); computed as below, 128 maps
    cost little more per epoch, as outer products far more (docs/performance.md).

    With the identity activation, layer k's maps are, coordinate by coordinate, linear in the products
    of k + 2 fields, so the CIN can be computed as that polynomial (`_polynomial`): the products summed
    over D, times coefficients composed from the same weights. Same function and gradients up to
    rounding, with the weights applied after pooling instead of at every coordinate, and full ranking
    without forming the pairs (`pair_scores`). The products number F^(k+2), so this is chosen only where
    its estimated multiply-adds are at most half the outer products' and it holds no more floats per
    row (`_costs`): MovieLens's 6 fields, not Criteo's 39 at D=16 (measurements: docs/performance.md).
    """

    pair_path = "scores"  # the polynomial from per-side tables, else forward_pairs read out

    def __init__(self, num_fields: int, dim: int, layers: Sequence[int] | str = (64, 64),
                 split_half: bool = True, activation: str = "identity"):
        super().__init__(num_fields, dim)
        sizes = layer_sizes(layers)
        if split_half and any(size % 2 for size in sizes[:-1]):
            raise ValueError(f"cin: with split_half every layer but the last needs an even size, got {sizes}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"cin: activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.sizes = sizes
        self.convs = nn.ModuleList()
        self.splits: list[bool] = []
        self.out_sizes: list[int] = []  # maps each layer sends to the output
        maps_in = num_fields
        for k, size in enumerate(sizes):
            split = split_half and k < len(sizes) - 1
            self.convs.append(nn.Conv1d(maps_in * num_fields, size, kernel_size=1, bias=False))
            self.splits.append(split)
            maps_in = size // 2 if split else size
            self.out_sizes.append(maps_in)
        self.activation = ACTIVATIONS[activation]()
        self.out_dim = sum(self.out_sizes)
        self.linear = activation == "identity"
        # computed as a polynomial where that is exact and clearly cheaper: few fields
        poly_cost, outer_cost = self._costs()
        smaller = self._polynomial_floats() <= self._outer_floats()
        self.polynomial = self.linear and 2 * poly_cost <= outer_cost and smaller

    @property
    def polynomial(self) -> bool:
        """Whether `forward` and `pair_scores` compute the layer as a polynomial (only a linear CIN is one)."""
        return self._as_polynomial

    @polynomial.setter
    def polynomial(self, on: bool) -> None:
        if on and not self.linear:
            raise ValueError("cin: only a CIN with the identity activation is a polynomial")
        self._as_polynomial = bool(on)

    def _costs(self, batch: int = 256) -> tuple[float, float]:
        """Multiply-adds per row of `_polynomial` (products of fields, their sums over D, the weights, and
        composing the coefficients once per call, spread over a batch) and of the outer products."""
        f, d = self.num_fields, self.dim
        poly = outer = 0.0
        for k, (conv, size) in enumerate(zip(self.convs, self.sizes, strict=True)):
            products = f ** (k + 2)
            poly += d * (products + f ** (k + 1)) + products * size * (1 + conv.in_channels // f / batch)
            outer += d * conv.in_channels * (size + 1)
        return poly, outer

    def _polynomial_floats(self) -> int:
        """Per row, `_polynomial`'s products: layer k's basis (D x F^(k+1)) and its sums over D (F^(k+2))."""
        f, d = self.num_fields, self.dim
        return sum(d * f ** (k + 1) + f ** (k + 2) for k in range(len(self.sizes)))

    def _outer_floats(self) -> int:
        """Per row, the outer products and maps of every layer: what `forward` keeps for the backward."""
        return sum(self.dim * (conv.in_channels + size) for conv, size in zip(self.convs, self.sizes, strict=True))

    def floats_per_row(self) -> int:
        """Peak floats per row of `forward`, or per pair of `forward_pairs` (input maps and a copy, the item
        fields' outer product, the two halves' maps and their sum); the evaluator sizes its chunks by it."""
        if self.polynomial:
            return self._polynomial_floats()
        return max(self.dim * (conv.in_channels + 4 * size) for conv, size in zip(self.convs, self.sizes, strict=True))

    def floats_per_pair(self) -> int:
        """Peak floats per (user, item) pair of `pair_scores`: one score for the polynomial (its per-user
        and per-item tables are shared by all pairs), else those of `forward_pairs`."""
        return 1 if self.polynomial else self.floats_per_row()

    def forward(self, field_embeddings: torch.Tensor) -> torch.Tensor:
        if self.polynomial:
            return self._polynomial(field_embeddings)
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

    def _polynomial(self, x: torch.Tensor) -> torch.Tensor:
        """`forward` of a linear CIN, (B, F, D) -> (B, out_dim), pooling over D before any weight.

        Layer k's maps are linear in the ordered products x_m * basis_n, the basis being products of
        k + 1 fields (x itself for k = 0). Their sums over D are one batched matmul (B, F, D) x
        (B, D, n); the layer's weights, composed with the coefficients of its input maps over the basis,
        turn them into the pooled maps. Only the basis is built coordinate by coordinate.
        """
        basis = x.transpose(1, 2)  # (B, D, n): the basis's values per coordinate
        pooled = []
        for coefficients, last in self._layer_coefficients():
            pooled.append(torch.bmm(x, basis).flatten(1) @ coefficients)  # (B, F * n) -> (B, out_k)
            if not last:  # products of one more field, ordered like the coefficients' rows: m * n + basis
                basis = (x.transpose(1, 2).unsqueeze(3) * basis.unsqueeze(2)).flatten(2)
        return torch.cat(pooled, dim=1)

    def _layer_coefficients(self):
        """For each layer, (coefficients (F * n, out_k) of its output maps over the products x_m * basis_n,
        is it the last layer)."""
        weight = self.convs[0].weight
        hidden = torch.eye(self.num_fields, dtype=weight.dtype, device=weight.device)  # x^0 over basis x
        for k, (conv, split) in enumerate(zip(self.convs, self.splits, strict=True)):
            w = conv.weight.view(conv.out_channels, hidden.shape[0], self.num_fields)  # (size, maps_in, F)
            maps = torch.einsum("shm,hn->mns", w, hidden).flatten(0, 1)  # (F * n, size)
            hidden, out = self._split(maps, split)
            hidden = hidden.T
            yield out, k == len(self.convs) - 1

    def pair_scores(self, user_fields: torch.Tensor, item_fields: torch.Tensor,
                    readout: torch.Tensor | None = None) -> torch.Tensor:
        """Every (user, item) pair's output read out through `readout` (out_dim,) (the model's projection
        to one logit; may be omitted when out_dim is 1): (U, Fu, D) x (I, Fi, D) -> (U, I).

        As a polynomial, each product of fields in a pair is (its user fields) x (its item fields), so
        the read-out sums over D and products are one matmul of a per-user by a per-item table.
        """
        if readout is None:
            if self.out_dim != 1:
                raise ValueError(f"cin: pair_scores needs a readout for its {self.out_dim} outputs")
            readout = torch.ones(1, dtype=user_fields.dtype, device=user_fields.device)
        if not self.polynomial:
            return self.forward_pairs(user_fields, item_fields) @ readout.reshape(-1)
        f_u, degree = user_fields.shape[1], len(self.sizes) + 1
        n_left, n_right = monomials.count(f_u, degree), monomials.count(self.num_fields - f_u, degree)
        table = readout.new_zeros(n_left * n_right)
        readouts = readout.reshape(-1).split(self.out_sizes)
        for k, ((coefficients, _), r) in enumerate(zip(self._layer_coefficients(), readouts, strict=True)):
            left, right = monomials.split_products(self.num_fields, f_u, k + 2)
            table.index_add_(0, (left * n_right + right).to(table.device), (coefficients @ r).to(table.dtype))
        xu = monomials.values(user_fields.transpose(1, 2), degree)  # (U, D, n_left)
        xi = monomials.values(item_fields.transpose(1, 2), degree)  # (I, D, n_right)
        return (xu @ table.view(n_left, n_right)).flatten(1) @ xi.flatten(1).T

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
