"""The contract of interaction plugins: layers that model how fields interact (FM, CIN, self-attention).

Built by the registry as ``Layer(num_fields, dim, **options)``, a layer maps field embeddings (B, F, D) to
(B, out_dim), with `out_dim` known once built. That is all it must do: an `nn.Module` with `out_dim` and
`forward` meets the contract (the toolkit knows `num_fields` and `dim`: it built the layer with them).
Subclassing `Interaction` is the easy way; the registry checks the contract when it creates a layer.

Optional, for speed and memory, declared by the layer:

* ``pair_path``: how it scores every (user, item) pair from the two sides (U, Fu, D) and (I, Fi, D) without
  forming the pairs, so full ranking costs about what embedding the two sides costs:
  ``"scores"``: ``pair_scores(user_fields, item_fields[, readout]) -> (U, I)``, read out through `readout`
  (out_dim,) when out_dim > 1; ``"forward"``: ``forward_pairs(user_fields, item_fields) -> (U, I, out_dim)``,
  the same before any readout; None (the default): the pairs are formed, chunk by chunk. A layer written
  before `pair_path` existed declares nothing and keeps the path of the method it defines.
* ``floats_per_row()`` / ``floats_per_pair()``: peak floats one row of `forward` / one pair of the
  pairs path needs, when far above F * D (a CIN's outer products); the evaluator sizes its chunks by them.
* ``search_space(trial) -> dict``: the layer's own Optuna knobs, named ``"<layer>.<option>"``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

PAIR_PATHS = {"scores": "pair_scores", "forward": "forward_pairs"}  # declared path -> the method it calls
_UNDECLARED = object()


class Interaction(nn.Module):
    """Base of the interaction plugins: stores `num_fields` and `dim`; a subclass sets `out_dim` (and declares
    `pair_path` where it has one)."""

    out_dim: int = 1

    def __init__(self, num_fields: int, dim: int):
        super().__init__()
        self.num_fields, self.dim = num_fields, dim

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {}


def pair_path(layer: nn.Module) -> str | None:
    """The layer's declared `pair_path`; for a layer of the older form, which declares nothing, the path of the
    method it defines (`pair_scores` first)."""
    declared = getattr(layer, "pair_path", _UNDECLARED)
    if declared is not _UNDECLARED:
        return declared
    return next((path for path, method in PAIR_PATHS.items() if callable(getattr(layer, method, None))), None)


def check_interaction(layer: Any) -> list[str]:
    """What `layer` lacks of the contract (empty when it meets it)."""
    missing = []
    if not isinstance(layer, nn.Module):
        missing.append("to be a torch.nn.Module")
    value = getattr(layer, "out_dim", None)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        missing.append(f"an int attribute out_dim >= 1 (got {value!r})")
    path = getattr(layer, "pair_path", None)
    if path is not None and path not in PAIR_PATHS:
        missing.append(f"pair_path to be None or one of {', '.join(map(repr, PAIR_PATHS))} (got {path!r})")
    elif path is not None and not callable(getattr(layer, PAIR_PATHS[path], None)):
        missing.append(f"a {PAIR_PATHS[path]} method, as its pair_path {path!r} declares")
    for method in ("floats_per_row", "floats_per_pair"):
        if hasattr(layer, method) and not callable(getattr(layer, method)):
            missing.append(f"{method} to be a method, if present")
    return missing
