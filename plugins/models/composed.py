"""The generic composition behind FM, DeepFM, xDeepFM and AutoInt: linear + interaction layers + MLP.

Interaction layers come from the registry by name, so a third-party layer composes like a built-in:
``bench run --models composed --set composed.interactions=fm,cin --set composed.cin.layers=64,64``.
An interaction's own options are given as ``"<interaction>.<option>"`` keyword arguments (the names its
`search_space` suggests, so an Optuna trial's params can be passed straight back) or as
``interaction_options={"cin": {"layers": (64, 64)}}`` (``"cin.layers"`` inside is fine too).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

import registry
from bench.embedding import Embedded
from bench.features import FeatureSpec
from bench.layers import MLP, check_number, parse_widths
from bench.model import RankingModel


def interaction_names(interactions: Sequence[str] | str) -> tuple[str, ...]:
    """("fm", "cin") or "fm,cin" -> ("fm", "cin"); a name given twice is an error."""
    parts = interactions.split(",") if isinstance(interactions, str) else interactions
    names = tuple(str(p).strip() for p in parts if str(p).strip())
    if len(set(names)) != len(names):
        raise ValueError(f"interactions: each layer may appear once, got {list(names)}")
    return names


def mlp_sizes(mlp: Sequence[int] | int | str | None) -> tuple[int, ...]:
    """(128, 64), 128, "128,64" -> hidden widths; None, "" or () -> no MLP."""
    return parse_widths(mlp, "mlp", allow_empty=True)


def fm_dim_space(trial: Any) -> int:
    """The embedding dim, with the very choices of the tuner's common space: Optuna refuses one name
    suggested with two different distributions in a trial."""
    return trial.suggest_categorical("fm_dim", [8, 16, 32, 64])


def deep_space(trial: Any) -> dict[str, Any]:
    """The knobs every embedding + MLP model shares; names are the constructor's keywords."""
    return {
        "fm_dim": fm_dim_space(trial),
        "mlp": trial.suggest_categorical("mlp", ["64,32", "128,64", "128,64,32", "256,128,64"]),
        "dropout": trial.suggest_float("dropout", 0.0, 0.5),
    }


class ComposedModel(RankingModel):
    """Interaction plugins composed: bias + first order + each layer (via a Linear if wider) + MLP(flat)."""

    def __init__(self, spec: FeatureSpec, fm_dim: int = 16, interactions: Sequence[str] | str = ("fm",),
                 mlp: Sequence[int] | str | None = (128, 64, 32), dropout: float = 0.2,
                 interaction_options: Mapping[str, Mapping[str, Any]] | None = None, **options: Any):
        super().__init__(spec, fm_dim)
        dropout = check_number("dropout", dropout, low=0, high=1, high_open=True)
        names = interaction_names(interactions)
        per_layer = self._layer_options(names, interaction_options or {}, options)
        self.interactions = nn.ModuleDict()
        self.projections = nn.ModuleDict()
        for name in names:
            layer = self._create(name, len(spec), fm_dim, per_layer[name])
            self.interactions[name] = layer
            wide = layer.out_dim > 1
            self.projections[name] = nn.Linear(layer.out_dim, 1, bias=False) if wide else nn.Identity()
        hidden = mlp_sizes(mlp)
        self.mlp = MLP(self.embedding.total_dim, hidden, dropout) if hidden else None
        self.bias = nn.Parameter(torch.zeros(1))

    def head(self, e: Embedded) -> torch.Tensor:
        logit = self.bias + e.first_order.squeeze(1)
        for name, layer in self.interactions.items():
            logit = logit + self.projections[name](layer(e.field_embeddings)).squeeze(1)
        if self.mlp is not None:
            logit = logit + self.mlp(e.flat_embeddings).squeeze(1)
        return logit

    def floats_per_row(self) -> int:
        """Peak floats one scored row needs in `forward`: embeddings, the widest layer, the MLP."""
        return self._widest(lambda layer: getattr(layer, "floats_per_row", None))

    def floats_per_pair(self) -> int:
        """Peak floats one (user, item) pair needs in `score_all`, where a layer may score pairs from the
        two sides (`floats_per_pair`) instead of running `forward` on each (`floats_per_row`)."""
        return self._widest(lambda layer: getattr(layer, "floats_per_pair", getattr(layer, "floats_per_row", None)))

    def _widest(self, layer_floats) -> int:
        widths = [self.embedding.num_fields * self.embedding.fm_dim, self.embedding.total_dim]
        widths += [declared() for layer in self.interactions.values() if (declared := layer_floats(layer))]
        if self.mlp is not None:
            widths += [m.out_features for m in self.mlp.modules() if isinstance(m, nn.Linear)]
        return max(widths)

    def score_all(self, user_x: torch.Tensor, item_x: torch.Tensor) -> torch.Tensor:
        """(U, I) logits, each side embedded once. Layers with `pair_scores` (FM, CIN) or `forward_pairs`
        and the MLP's first Linear work per side and broadcast; only other layers (attention) see the
        (U*I, F, D) pairs."""
        if self.training:  # dropout would differ between the two paths; training never ranks all pairs
            return super().score_all(user_x, item_x)
        eu, ei = self.embedding.embed("user", user_x), self.embedding.embed("item", item_x)
        n_u, n_i = user_x.shape[0], item_x.shape[0]
        logit = self.bias + eu.first_order.view(n_u, 1) + ei.first_order.view(1, n_i)
        crossed = None
        for name, layer in self.interactions.items():
            if hasattr(layer, "pair_scores"):  # a wider layer reads its output out through the projection
                projection = self.projections[name]
                readout = (projection.weight.view(-1),) if isinstance(projection, nn.Linear) else ()
                logit = logit + layer.pair_scores(eu.field_embeddings, ei.field_embeddings, *readout)
                continue
            if hasattr(layer, "forward_pairs"):
                pairs = layer.forward_pairs(eu.field_embeddings, ei.field_embeddings)  # (U, I, out_dim)
                logit = logit + self.projections[name](pairs).squeeze(2)
                continue
            if crossed is None:
                crossed = Embedded.cross(eu, ei).field_embeddings
            logit = logit + self.projections[name](layer(crossed)).view(n_u, n_i)
        if self.mlp is not None:
            logit = logit + self.mlp.forward_pairs(eu.flat_embeddings, ei.flat_embeddings).squeeze(2)
        return logit

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return deep_space(trial)

    def _layer_options(self, names: tuple[str, ...], nested: Mapping[str, Mapping[str, Any]],
                       dotted: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """Merge interaction_options and "<interaction>.<option>" keywords into one dict per layer."""
        model = type(self).__name__
        per_layer: dict[str, dict[str, Any]] = {name: {} for name in names}
        # nested options may keep the search-space prefix: {"cin": {"cin.layers": v}} means "layers"
        pairs = [(name, option.removeprefix(name + "."), value)
                 for name, opts in nested.items() for option, value in opts.items()]
        for key, value in dotted.items():
            name, dot, option = key.partition(".")
            if not dot or not option:
                raise TypeError(f"{model}: unknown option {key!r}; an interaction's options are written "
                                f"'<interaction>.<option>', e.g. 'cin.layers'")
            pairs.append((name, option, value))
        for name, option, value in pairs:
            if name not in per_layer:
                raise ValueError(f"{model}: option {name}.{option} is for interaction {name!r}, which is not "
                                 f"among this model's interactions ({', '.join(names) or 'none'})")
            per_layer[name][option] = value
        return per_layer

    def _create(self, name: str, num_fields: int, dim: int, options: dict[str, Any]) -> nn.Module:
        try:
            layer = registry.create("interaction", name, num_fields=num_fields, dim=dim, **options)
        except TypeError as exc:
            model = type(self).__name__
            raise TypeError(f"{model}: interaction {name!r} rejected options {options}: {exc}") from exc
        if not isinstance(getattr(layer, "out_dim", None), int) or layer.out_dim < 1:
            raise TypeError(f"interaction {name!r} must set an int out_dim >= 1 at build time, "
                            f"got {getattr(layer, 'out_dim', None)!r}")
        return layer
