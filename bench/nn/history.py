"""The contract of history encoders: how a model reads the user's history window.

The `history` field holds, for each row, the user's last L positives strictly earlier than the row's
interaction, most recent last, 0-padded at the front (`bench.data.types.UserStates`). Its items are embedded
with the item id's table; an encoder turns that window into one user-side vector:

    encoder(history (B, L, D), mask (B, L)) -> (B, D)                      candidate-independent
    encoder(history (B, L, D), mask (B, L), candidate (B, D)) -> (B, D)    target-aware (`target_aware = True`)

`mask` is True where the window holds an item; a row with an empty window must give zeros (a user with no
earlier positive knows nothing yet). Built by the registry as ``Encoder(dim, length, **options)``; options
are named ``"history.<option>"`` in `search_space(trial)` and given with ``--history-opt KEY=VALUE``.

A candidate-independent encoder keeps full ranking factorised: each user state is encoded once per
evaluation. A target-aware one (DIN's attention) reads the candidate, so full ranking forms every
(user, item) pair, chunk by chunk.

Optional, declared by the encoder:

* ``bag_weights(idx) -> (B, L) or None``: the encoder is a weighted mean of the window's vectors with these
  weights (None: the plain mean), so it is computed by one `embedding_bag` without forming (B, L, D)
  (`mean`, `recency`).
* ``floats_per_row()``: peak floats one row needs beyond its (L, D) window, when far above it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class HistoryEncoder(nn.Module):
    """Base of the history encoder plugins: stores `dim` and `length`; a subclass defines `forward`."""

    target_aware = False

    def __init__(self, dim: int, length: int):
        super().__init__()
        self.dim, self.length = dim, length

    def floats_per_row(self) -> int:
        return self.length * self.dim

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {}


def check_history_encoder(encoder: Any) -> list[str]:
    """What `encoder` lacks of the contract (empty when it meets it)."""
    missing = []
    if not isinstance(encoder, nn.Module):
        missing.append("to be a torch.nn.Module (subclass bench.nn.history.HistoryEncoder)")
    if not isinstance(getattr(encoder, "target_aware", False), bool):
        missing.append("target_aware to be True or False")
    for method in ("bag_weights", "floats_per_row"):
        if hasattr(encoder, method) and not callable(getattr(encoder, method)):
            missing.append(f"{method} to be a method, if present")
    return missing


def masked_mean(history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of each row's window items, (B, L, D) -> (B, D); zeros for an empty window."""
    weights = mask.to(history.dtype)
    return (history * weights.unsqueeze(2)).sum(1) / weights.sum(1, keepdim=True).clamp(min=1.0)


def last_item(history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each row's most recent position, (B, L, D) -> (B, D); zeros for an empty window (the window is
    most recent last, so the last column holds an item whenever any does)."""
    return history[:, -1] * mask[:, -1:].to(history.dtype)
