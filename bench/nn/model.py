"""The model contract, and its two kinds: models trained on FeatureEmbedding, and models fitted once.

Every model plugin is a `RankingModel`, and `trainable` says which kind. A trained one gives
``forward(user_x, item_x) -> (B,)`` logits for feature rows of user states and items, and
``score_all(user_x, item_x) -> (U, I)`` for full ranking (optionally ``item_scorer(item_x)``, a function of
the user rows with the item side computed once, which the evaluator uses for every user chunk); the
trainer fits it by gradient steps on sampled negatives. A fitted one (MostPop, EASE, ItemKNN: counting or
a closed form, no gradient) is fitted by ``fit(data)`` from the training positives and gives
``score(states, items) -> (U, I)`` from rows.

* `EmbeddingModel`: built as ``Model(spec, embed_dim, **hparams)`` on a FeatureEmbedding; it writes its
  paper's equation once, in ``head(embedded)``. Full ranking embeds each user and each item once and hands
  `head` every pair as its two sides (`Embedded.pairs`), which the shared layers score without forming
  the pairs, when the model says its head uses only such layers (``pair_scoring = True``); otherwise the
  pairs are formed, chunk by chunk. Its `item_scorer` embeds the items once per evaluation.
* `FittedModel`: built as ``Model(spec, **hparams)``, fitted by ``fit(data)``, scoring rows; what a user
  state knows is what its user liked strictly before it (`known_matrix`): the same rule as history.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from bench.data.features import FeatureSpec
from bench.nn.embedding import Embedded, FeatureEmbedding
from bench.nn.layers import Term


class RankingModel(nn.Module):
    """Base of every model plugin; see the module docstring for the contract."""

    trainable = True

    def __init__(self, spec: FeatureSpec):
        super().__init__()
        self.spec = spec

    def forward(self, user_x: torch.Tensor, item_x: torch.Tensor) -> torch.Tensor:
        raise TypeError(f"{type(self).__name__} must define forward(user_x, item_x) -> logits (B,)")

    def score_all(self, user_x: torch.Tensor, item_x: torch.Tensor) -> torch.Tensor:
        """(U, I) scores of every user row against every item row; by default `forward` on every pair."""
        n_u, n_i = user_x.shape[0], item_x.shape[0]
        return self(user_x.repeat_interleave(n_i, 0), item_x.repeat(n_u, 1)).view(n_u, n_i)

    def fit(self, data: Any) -> None:
        """Fit from the training data (InteractionData); only models with `trainable = False` need it."""

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        """Optuna search space of this model's own hyperparameters (none by default)."""
        return {}


class EmbeddingModel(RankingModel):
    """A model over FeatureEmbedding's three views: define `head(embedded) -> logits (B,) or (B, 1)`."""

    pair_scoring = False  # True: head uses only layers that take Pairs (Term, MLP), so full ranking is fast

    def __init__(self, spec: FeatureSpec, embed_dim: int = 16):
        super().__init__(spec)
        self.embedding = FeatureEmbedding(spec, embed_dim)

    def head(self, e: Embedded) -> torch.Tensor:
        raise TypeError(f"{type(self).__name__} must define head(embedded) -> logits")

    def forward(self, user_x: torch.Tensor, item_x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embedding(user_x, item_x)).reshape(-1)

    def score_all(self, user_x: torch.Tensor, item_x: torch.Tensor) -> torch.Tensor:
        """(U, I) logits, each side embedded once. In training mode (dropout: the two paths would draw
        differently) or without `pair_scoring`, the pairs are formed."""
        return self.item_scorer(item_x)(user_x)

    def item_scorer(self, item_x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """`score_all` against these items as a function of the user rows, the item side embedded (and, in
        the layers that can, projected) once: full ranking scores every user chunk against the same items,
        and with one user per chunk the item side cost as much as the pairs. The item embeddings are taken
        when the scorer is made: make one per evaluation, in the mode it is used in (the evaluator does);
        an MLP's kept item projection is recomputed if its weights change."""
        item, memo = self.embedding.embed("item", item_x), {}

        def score(user_x: torch.Tensor) -> torch.Tensor:
            pairs = Embedded.pairs(self.embedding.embed("user", user_x), item, memo)
            if self.training or not self.pair_scoring:
                pairs = pairs.materialize()
            return self.head(pairs).reshape(user_x.shape[0], item_x.shape[0])

        return score

    def floats_per_row(self) -> int:
        """Peak floats one scored row needs in `forward`: its embeddings, the widest term, the widest Linear."""
        return self._widest(lambda term: term.floats_per_row())

    def floats_per_pair(self) -> int:
        """Peak floats one (user, item) pair needs in `score_all`."""
        if not self.pair_scoring:
            return self.floats_per_row()
        return self._widest(lambda term: term.floats_per_pair())

    def _widest(self, term_floats) -> int:
        widths = [self.embedding.num_fields * self.embedding.embed_dim, self.embedding.total_dim]
        widths += [term_floats(m) for m in self.modules() if isinstance(m, Term)]
        widths += [m.out_features for m in self.modules() if isinstance(m, nn.Linear)]
        return max(widths)


class FittedModel(RankingModel):
    """A model fitted once from the training positives by `fit(data)` (counting or a closed form), scoring
    user states against items by their rows: `score(states, items) -> (U, I)` (no feature rows: what it
    knows of a state is the data's, e.g. `known_matrix`)."""

    trainable = False

    def score(self, states: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        raise TypeError(f"{type(self).__name__} must define score(states, items) -> (U, I) scores")


def known_matrix(data: Any, states: torch.Tensor, n_items: int | None = None) -> torch.Tensor:
    """(U, n_items) float32 0/1 rows: the items each user state had liked strictly before it (`data.known`),
    x_u of the closed-form models, on the states' device."""
    rows, items = data.known(states.cpu().numpy())
    x = torch.zeros(len(states), n_items or data.n_items, device=states.device)
    x[torch.from_numpy(rows).to(states.device), torch.from_numpy(items).to(states.device)] = 1.0
    return x


def check_model(model: Any) -> list[str]:
    """What `model` lacks of the model contract (empty when it meets it)."""
    missing = []
    if not isinstance(model, nn.Module):
        missing.append("to be a torch.nn.Module (subclass bench.nn.model.EmbeddingModel or FittedModel)")
    trainable = getattr(model, "trainable", None)
    if not isinstance(trainable, bool):
        missing.append("a bool attribute trainable (False: fitted by fit(data), not by the trainer)")
    methods = ("forward", "score_all") if trainable else ("fit", "score")
    missing += [f"a {m} method" for m in methods if not callable(getattr(model, m, None))]
    return missing


def create_model(plugin: str, spec: FeatureSpec, embed_dim: int = 16, **params: Any) -> RankingModel:
    """The model plugin `plugin` built on `spec` through the registry; `embed_dim` reaches the models that
    take one (those over a FeatureEmbedding), not the fitted ones."""
    import registry

    if "embed_dim" in inspect.signature(registry.get("model", plugin)).parameters:
        params["embed_dim"] = embed_dim
    return registry.create("model", plugin, spec=spec, **params)
