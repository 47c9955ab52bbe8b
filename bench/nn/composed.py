"""The generic composition behind `bench run --interactions fm,cin`: any interaction plugins, summed.

    y = w0 + <w, x> + sum over layers of w_l^T layer(v_1 ... v_F) + MLP(v_1 || ... || v_F)

Layers come from the registry by name, so a third-party layer composes like a built-in:
``bench run --models composed --set composed.interactions=fm,cin --set composed.cin.layers=64,64``.
A layer's options are ``"<layer>.<option>"`` keywords (the names its `search_space` suggests, so an Optuna
trial's params pass straight back). The built-in models write their own equations in their own files.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

import registry
from bench.config import check_number, comma_list
from bench.data.features import FeatureSpec
from bench.nn.embedding import Embedded
from bench.nn.layers import MLP, Term, parse_widths
from bench.nn.model import EmbeddingModel

MLP_CHOICES = ["64,32", "128,64", "128,64,32", "256,128,64"]


def interaction_names(interactions: Sequence[str] | str) -> tuple[str, ...]:
    """("fm", "cin") or "fm,cin" -> ("fm", "cin"); a name given twice is an error."""
    names = tuple(comma_list(interactions))
    if len(set(names)) != len(names):
        raise ValueError(f"interactions: each layer may appear once, got {list(names)}")
    return names


def deep_space(trial: Any) -> dict[str, Any]:
    """The knobs every embedding + MLP model shares; names are the constructor's keywords."""
    return {
        "mlp": trial.suggest_categorical("mlp", MLP_CHOICES),
        "dropout": trial.suggest_float("dropout", 0.0, 0.5),
    }


def layer_options(model: str, names: Sequence[str], options: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{"cin.layers": v, ...} -> {"cin": {"layers": v}}; an option of a layer not in `names` is an error."""
    per_layer: dict[str, dict[str, Any]] = {name: {} for name in names}
    for key, value in options.items():
        name, dot, option = key.partition(".")
        if not dot or not option:
            raise TypeError(f"{model}: unknown option {key!r}; an interaction's options are written "
                            f"'<interaction>.<option>', e.g. 'cin.layers'")
        if name not in per_layer:
            raise ValueError(f"{model}: option {key} is for interaction {name!r}, which is not among this "
                             f"model's interactions ({', '.join(names) or 'none'})")
        per_layer[name][option] = value
    return per_layer


def create_interaction(model: str, name: str, num_fields: int, dim: int, options: dict[str, Any]) -> nn.Module:
    """An interaction plugin built by the registry, its rejected options named."""
    try:
        return registry.create("interaction", name, num_fields=num_fields, dim=dim, **options)
    except TypeError as exc:
        raise TypeError(f"{model}: interaction {name!r} rejected options {options}: {exc}") from exc


def interaction_term(name: str, spec: FeatureSpec, embed_dim: int, model: str = "", **options: Any) -> Term:
    """A logit term from the interaction plugin `name` over the spec's fields: how the built-in models get
    their FM, CIN and attention layers (through the registry, like any plugin)."""
    return Term(create_interaction(model or name, name, len(spec), embed_dim, options), name, len(spec), embed_dim)


class ComposedModel(EmbeddingModel):
    """Interaction plugins composed: bias + first order + one term per layer + MLP over the flat view."""

    pair_scoring = True

    def __init__(self, spec: FeatureSpec, embed_dim: int = 16, interactions: Sequence[str] | str = ("fm",),
                 mlp: Sequence[int] | str | None = (128, 64, 32), dropout: float = 0.2, **options: Any):
        super().__init__(spec, embed_dim)
        dropout = check_number("dropout", dropout, low=0, high=1, high_open=True)
        names = interaction_names(interactions)
        per_layer = layer_options(type(self).__name__, names, options)
        self.terms = nn.ModuleDict({
            name: interaction_term(name, spec, embed_dim, type(self).__name__, **per_layer[name]) for name in names
        })
        hidden = parse_widths(mlp, "mlp", allow_empty=True)
        self.mlp = MLP(self.embedding.total_dim, hidden, dropout) if hidden else None
        self.bias = nn.Parameter(torch.zeros(1))

    def head(self, e: Embedded) -> torch.Tensor:
        logit = self.bias + e.first_order
        for term in self.terms.values():
            logit = logit + term(e.field_embeddings)
        if self.mlp is not None:
            logit = logit + self.mlp(e.flat_embeddings)
        return logit

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return deep_space(trial)
