"""The contract of interaction plugins: layers that model how fields interact (FM, CIN, self-attention).

Built as ``Layer(num_fields, dim, **options)``, a layer maps field embeddings (B, F, D) to (B, out_dim),
with `out_dim` known once built. Subclassing `Interaction` is the easy way to meet the contract; any
`nn.Module` with the same attributes does too, and the registry checks them when it creates a layer.

Optional, for speed and memory, each used where present:

* ``pair_scores(user_fields, item_fields[, readout]) -> (U, I)``: every (user, item) pair's value, read
  out through `readout` (out_dim,) when out_dim > 1, from the two sides (U, Fu, D) and (I, Fi, D)
  without forming the pairs: full ranking then costs about what embedding the two sides costs.
* ``forward_pairs(user_fields, item_fields) -> (U, I, out_dim)``: the same before any readout.
* ``floats_per_row()`` / ``floats_per_pair()``: peak floats one row of `forward` / one pair of the
  pairs path needs, when far above F * D (a CIN's outer products); the evaluator sizes its chunks by them.
* ``search_space(trial) -> dict``: the layer's own Optuna knobs, named ``"<layer>.<option>"``.
"""

from __future__ import annotations

from typing import Any

from torch import nn


class Interaction(nn.Module):
    """Base of the interaction plugins: stores `num_fields` and `dim`; a subclass sets `out_dim`."""

    out_dim: int = 1

    def __init__(self, num_fields: int, dim: int):
        super().__init__()
        self.num_fields, self.dim = num_fields, dim

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {}


def check_interaction(layer: Any) -> list[str]:
    """What `layer` lacks of the contract (empty when it meets it)."""
    missing = []
    if not isinstance(layer, nn.Module):
        missing.append("to be a torch.nn.Module")
    for attr in ("num_fields", "dim", "out_dim"):
        value = getattr(layer, attr, None)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            missing.append(f"an int attribute {attr} >= 1 (got {value!r})")
    for method in ("pair_scores", "forward_pairs", "floats_per_row", "floats_per_pair"):
        if hasattr(layer, method) and not callable(getattr(layer, method)):
            missing.append(f"{method} to be a method, if present")
    return missing
