"""Implementations of the FM second-order term  sum_{i<j} <v_i, v_j>  over field embeddings (B, F, D).

`fm_interaction` is what the `fm` interaction layer calls: the fastest correct implementation for the
tensor's device. (`bench kernel` measures all of them.)
"""

from __future__ import annotations

import torch


def sumsq(v: torch.Tensor) -> torch.Tensor:
    """0.5 * ((sum v)^2 - sum v^2), summed over D: the O(F*D) identity. (B, F, D) -> (B, 1)."""
    s = v.sum(dim=1)
    return 0.5 * (s.pow(2) - v.pow(2).sum(dim=1)).sum(dim=1, keepdim=True)


def fm_interaction(v: torch.Tensor) -> torch.Tensor:
    """The FM second-order term, (B, F, D) -> (B, 1), by the fastest correct implementation."""
    return sumsq(v)
