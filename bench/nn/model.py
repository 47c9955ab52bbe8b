"""The model contract, declared on the two base classes and checked by the registry when a model is created.

Every model plugin is a `RankingModel`; its `trainable` attribute says which of two kinds it is.

A **trained** model (`trainable = True`) scores from feature rows:

* ``forward(user_x, item_x) -> (B,)``: the logits of a batch of rows (training, the sampled protocol);
* ``item_scorer(item_x) -> fn(user_x) -> (U, I)``: user states against a block of items (full ranking); the
  item side may be computed once and reused for every user chunk;
* ``floats_per_row()`` / ``floats_per_pair()`` / ``floats_per_user()``: the peak floats one row of `forward` /
  one pair of `item_scorer` / one user row of `item_scorer` beyond its pairs needs; the evaluator sizes its
  chunks by them.

`RankingModel` gives every one of them a default: `item_scorer` scores every pair by `forward`, and
the memory is assumed to be one FLOATS_PER_FIELD-wide vector per field. ``score_all(user_x, item_x)`` is
`item_scorer(item_x)(user_x)`, for callers that want one call. The older documented form, a class that
defines `score_all` without `item_scorer`, keeps working: its `score_all` is what full ranking calls.

A **fitted** model (`trainable = False`: MostPop, EASE, ItemKNN; counting or a closed form, no gradient) is
fitted once by ``fit(data)`` and scores user states against items by their rows: ``score(states, items) ->
(U, I)``; what it knows of a state is the data's (`known_matrix`: the positives strictly before it).

* `EmbeddingModel`: built as ``Model(spec, embed_dim, **hparams)`` on a FeatureEmbedding; it writes its
  paper's equation once, in ``head(embedded)``. Its `item_scorer` embeds the items once and hands `head`
  every pair as its two sides (`Embedded.pairs`), which the shared layers score without forming the pairs
  when the model declares ``pair_scoring = True`` (its head uses only such layers); otherwise the pairs are
  formed, chunk by chunk. Its memory figures come from its layers.
* `FittedModel`: built as ``Model(spec, **hparams)``, fitted by ``fit(data)``, scoring rows.
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


def score_every_pair(model: nn.Module, user_x: torch.Tensor, item_x: torch.Tensor) -> torch.Tensor:
    """(U, I) scores by `forward` on every (user, item) pair formed: the reference every faster full-ranking
    path must equal."""
    n_u, n_i = user_x.shape[0], item_x.shape[0]
    return model(user_x.repeat_interleave(n_i, 0), item_x.repeat(n_u, 1)).view(n_u, n_i)


FLOATS_PER_FIELD = 16  # a model that declares no memory figure is assumed to need one vector this wide per field


class RankingModel(nn.Module):
    """Base of every model plugin; see the module docstring for the contract."""

    trainable = True

    def __init__(self, spec: FeatureSpec):
        super().__init__()
        self.spec = spec

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """`_ranker` is the nearest `item_scorer` a class defines, what `score_all` calls. The older documented
        form, a class defining `score_all` but not `item_scorer`, is ranked by its `score_all` (the inherited
        `item_scorer` would bypass it); its `score_all` may still call the parent's through super()."""
        super().__init_subclass__(**kwargs)
        if "item_scorer" in vars(cls):
            cls._ranker = vars(cls)["item_scorer"]
        elif "score_all" in vars(cls):
            cls.item_scorer = RankingModel._scorer_from_score_all

    def forward(self, user_x: torch.Tensor, item_x: torch.Tensor) -> torch.Tensor:
        raise TypeError(f"{type(self).__name__} must define forward(user_x, item_x) -> logits (B,)")

    def item_scorer(self, item_x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """Full ranking against these items, as a function of user rows -> (U, I) scores: by default `forward`
        on every pair."""
        return lambda user_x: score_every_pair(self, user_x, item_x)

    def score_all(self, user_x: torch.Tensor, item_x: torch.Tensor) -> torch.Tensor:
        """(U, I) scores of every user row against every item row, in one call."""
        return self._ranker(item_x)(user_x)

    def _scorer_from_score_all(self, item_x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda user_x: self.score_all(user_x, item_x)

    all_items = False  # True: `all_item_logits` is cheap enough to train with a softmax over every item

    def all_item_logits(self, user_x: torch.Tensor, item_x: torch.Tensor) -> torch.Tensor:
        """(B, I) logits of each user row against every item row, in the current mode (training included): what
        the softmax loss over all items needs. By default the model's full-ranking scores."""
        return self.item_scorer(item_x)(user_x)

    def floats_per_row(self) -> int:
        """Peak floats one row of `forward` needs (a model that knows better says so)."""
        return max(len(self.spec), 1) * FLOATS_PER_FIELD

    def floats_per_pair(self) -> int:
        """Peak floats one pair of `item_scorer` needs; by default, a formed row's."""
        return self.floats_per_row()

    def floats_per_user(self) -> int:
        """Peak floats `item_scorer` needs per user row beyond its pairs (a user side encoded once per user, e.g.
        a sequence encoder); by default none."""
        return 0

    def fit(self, data: Any) -> None:
        """Fit from the training data (InteractionData); only models with `trainable = False` need it."""

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        """Optuna search space of this model's own hyperparameters (none by default)."""
        return {}


RankingModel._ranker = RankingModel.item_scorer


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

    def item_scorer(self, item_x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """Full ranking against these items, the item side embedded (and, in the layers that can, projected)
        once: the evaluator scores every user chunk against the same items, and with one user per chunk the
        item side cost as much as the pairs. The item embeddings are taken when the scorer is made: make one
        per evaluation, in the mode it is used in (the evaluator does); an MLP's kept item projection is
        recomputed if its weights change. In training mode (dropout: the two paths would draw differently)
        or without `pair_scoring`, the pairs are formed."""
        if self.embedding.target_aware:  # the user side reads the candidate: every pair is formed
            return lambda user_x: score_every_pair(self, user_x, item_x)
        item, memo = self.embedding.embed("item", item_x), {}

        def score(user_x: torch.Tensor) -> torch.Tensor:
            pairs = Embedded.pairs(self.embedding.embed("user", user_x), item, memo)
            if self.training or not self.pair_scoring:
                pairs = pairs.materialize()
            return self.head(pairs).reshape(user_x.shape[0], item_x.shape[0])

        return score

    @property
    def all_items(self) -> bool:  # type: ignore[override]
        """Pair-scoring layers score a batch against every item from the two sides, in training mode too."""
        return self.pair_scoring and not self.embedding.target_aware

    def all_item_logits(self, user_x: torch.Tensor, item_x: torch.Tensor) -> torch.Tensor:
        """Every (row, item) pair from the two sides, dropout drawn per pair (the softmax loss over all items)."""
        if not self.all_items:
            raise ValueError(f"{type(self).__name__} cannot score every item of a batch at once (its head needs "
                             "the pairs formed); use --loss sampled_softmax or bce")
        pairs = Embedded.pairs(self.embedding.embed("user", user_x), self.embedding.embed("item", item_x))
        return self.head(pairs).reshape(user_x.shape[0], item_x.shape[0])

    def floats_per_row(self) -> int:
        """Peak floats one scored row needs in `forward`: its embeddings, the widest term, the widest Linear, and
        what a history encoder needs per row beyond them."""
        return self._widest(lambda term: term.floats_per_row()) + self.embedding.history_floats()

    def floats_per_pair(self) -> int:
        """Peak floats one (user, item) pair needs in `item_scorer`."""
        if not self.pair_scoring or self.embedding.target_aware:
            return self.floats_per_row()
        return self._widest(lambda term: term.floats_per_pair())

    def floats_per_user(self) -> int:
        """A candidate-independent history encoder reads each user's window once per chunk."""
        return 0 if self.embedding.target_aware else self.embedding.history_floats()

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
    """What `model` lacks of the model contract (empty when it meets it). A trained model that is a plain
    nn.Module, not a RankingModel, may give the older form's `score_all` instead of `item_scorer` and the
    memory figures (`create_model` fills them in)."""
    missing = []
    if not isinstance(model, nn.Module):
        missing.append("to be a torch.nn.Module (subclass bench.nn.model.EmbeddingModel or FittedModel)")
    trainable = getattr(model, "trainable", None)
    if not isinstance(trainable, bool):
        missing.append("a bool attribute trainable (False: fitted by fit(data), not by the trainer)")
    if not trainable:
        return missing + [f"a {m} method" for m in ("fit", "score") if not callable(getattr(model, m, None))]
    declared = ("forward", "item_scorer", "floats_per_row", "floats_per_pair", "floats_per_user")
    if not isinstance(model, RankingModel) and callable(getattr(model, "score_all", None)):
        declared = ("forward",)  # the older form, adapted by create_model
    missing += [f"a {m} method" for m in declared if not callable(getattr(model, m, None))]
    for name in ("floats_per_row", "floats_per_pair", "floats_per_user"):
        if name in declared and not missing:
            value, least = getattr(model, name)(), 0 if name == "floats_per_user" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                missing.append(f"{name}() to give an int >= {least} (got {value!r})")
    return missing


def _adapt_older_form(model: nn.Module, spec: FeatureSpec) -> nn.Module:
    """A trained plain nn.Module written to the older documented form (`forward` and `score_all`, no
    `item_scorer`, no memory figures): given the missing parts of the contract, as RankingModel would."""
    if not model.trainable or isinstance(model, RankingModel):
        return model
    if not callable(getattr(model, "item_scorer", None)):
        model.item_scorer = lambda item_x: (lambda user_x: model.score_all(user_x, item_x))
    default = max(len(spec), 1) * FLOATS_PER_FIELD
    for name in ("floats_per_row", "floats_per_pair"):
        if not callable(getattr(model, name, None)):
            setattr(model, name, lambda: default)
    if not callable(getattr(model, "floats_per_user", None)):
        model.floats_per_user = lambda: 0
    return model


def create_model(plugin: str, spec: FeatureSpec, embed_dim: int = 16, **params: Any) -> RankingModel:
    """The model plugin `plugin` built on `spec` through the registry; `embed_dim` reaches the models that
    take one (those over a FeatureEmbedding), not the fitted ones."""
    import registry

    taken = inspect.signature(registry.get("model", plugin)).parameters
    if "embed_dim" in taken:
        params["embed_dim"] = embed_dim
    elif "fm_dim" in taken:  # the first plugin guide's name for it
        params["fm_dim"] = embed_dim
    return _adapt_older_form(registry.create("model", plugin, spec=spec, **params), spec)
