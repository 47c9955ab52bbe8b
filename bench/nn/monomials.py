"""Monomials of field embeddings, coordinate by coordinate, split between a user and an item side.

A linear CIN is a polynomial: summed over the embedding coordinates d, its output is a weighted sum of
sum_d x_{i,d} x_{j,d} x_{k,d}... over tuples of fields. For full ranking, each such product splits
into the user fields' factors times the item fields' factors, so all pairs' scores are one matmul of
a per-user table by a per-item table (`plugins.interactions.cin.CIN.pair_scores`).
"""

from __future__ import annotations

import itertools
from functools import lru_cache
from math import comb

import torch


def count(n_vars: int, max_degree: int) -> int:
    """How many distinct monomials of degree 0..max_degree n_vars variables have (the constant included)."""
    return comb(n_vars + max_degree, max_degree)


@lru_cache(maxsize=None)
def _terms(n_vars: int, max_degree: int) -> tuple[tuple[int, ...], ...]:
    """The monomials of degree 0..max_degree as sorted tuples of variable indices, by degree."""
    return tuple(t for g in range(max_degree + 1) for t in itertools.combinations_with_replacement(range(n_vars), g))


@lru_cache(maxsize=None)
def _factors(n_vars: int, max_degree: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each monomial of degree >= 1 as (one variable) x (an earlier monomial): the gathers of `values`."""
    terms = _terms(n_vars, max_degree)
    index = {t: k for k, t in enumerate(terms)}
    first = torch.tensor([t[0] for t in terms[1:]], dtype=torch.long)
    rest = torch.tensor([index[t[1:]] for t in terms[1:]], dtype=torch.long)
    return first, rest


def values(x: torch.Tensor, max_degree: int) -> torch.Tensor:
    """x (..., n_vars) -> (..., count(n_vars, max_degree)): every monomial's value, the constant 1 first,
    then by degree, in `_terms` order (each column one product of an earlier column and x)."""
    n_vars = x.shape[-1]
    out = x.new_ones(*x.shape[:-1], count(n_vars, max_degree))
    if n_vars == 0 or max_degree == 0:
        return out
    first, rest = _factors(n_vars, max_degree)
    first, rest = first.to(x.device), rest.to(x.device)
    start = 1
    for g in range(1, max_degree + 1):  # degree g's columns only read columns of degree g - 1
        stop = start + comb(n_vars + g - 1, g)
        cols = slice(start - 1, stop - 1)
        out[..., start:stop] = x[..., first[cols]] * out[..., rest[cols]]
        start = stop
    return out


@lru_cache(maxsize=None)
def split_products(n_vars: int, n_left: int, degree: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every ordered product of `degree` variables (row-major over range(n_vars)^degree, as the CIN
    builds them) as (monomial of the variables < n_left, monomial of the others), indices into
    `values` of each side up to this degree."""
    left_index = {t: k for k, t in enumerate(_terms(n_left, degree))}
    right_index = {t: k for k, t in enumerate(_terms(n_vars - n_left, degree))}
    left, right = [], []
    for product in itertools.product(range(n_vars), repeat=degree):
        term = sorted(product)
        cut = sum(1 for v in term if v < n_left)
        left.append(left_index[tuple(term[:cut])])
        right.append(right_index[tuple(v - n_left for v in term[cut:])])
    return torch.tensor(left, dtype=torch.long), torch.tensor(right, dtype=torch.long)
