"""Wide & Deep (Cheng et al., DLRS 2016)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from bench.data.features import FeatureSpec, FieldSpec
from bench.nn.composed import deep_space
from bench.nn.embedding import Embedded
from bench.nn.layers import MLP, parse_widths
from bench.nn.model import EmbeddingModel

MAX_CROSS_WEIGHTS = 1_000_000  # a pair of fields whose cross would need more weights is not crossed


class WideDeep(EmbeddingModel):
    """Wide & Deep, trained jointly (Eq. 3): y = w0 + w^T x + w_c^T phi(x) + MLP(v_1 || ... || v_F).

    The wide part is the linear model of the features (FeatureEmbedding's first order) and, with `crosses`,
    of their cross-product transformations phi(x) (`CrossProducts`): every non-id user feature crossed with
    every non-id item feature (on MovieLens: age, gender and occupation, each with the genres), as the paper
    crosses the user's side with the impression's. Ids are not crossed: user x item would memorise exactly the
    training pairs, which full ranking masks. The crosses read feature indices, not embeddings, so they are
    added to `head`'s logit in `forward` and in full ranking, from the two sides.
    """

    pair_scoring = True

    def __init__(self, spec: FeatureSpec, embed_dim: int = 16, mlp: Sequence[int] | str = (128, 64, 32),
                 dropout: float = 0.2, crosses: bool = True):
        super().__init__(spec, embed_dim)
        if not isinstance(crosses, bool):
            raise ValueError(f"crosses: expected true or false, got {crosses!r}")
        self.bias = nn.Parameter(torch.zeros(1))
        self.mlp = MLP(self.embedding.total_dim, parse_widths(mlp, "mlp"), dropout)
        crossed = CrossProducts.fields(spec) if crosses else []
        self.crosses = CrossProducts(crossed) if crossed else None

    def head(self, e: Embedded) -> torch.Tensor:
        """w0 + w^T x + MLP(v): everything but the crosses."""
        return self.bias + e.first_order + self.mlp(e.flat_embeddings)

    def forward(self, user_x: torch.Tensor, item_x: torch.Tensor) -> torch.Tensor:
        logits = super().forward(user_x, item_x)
        return logits if self.crosses is None else logits + self.crosses(user_x, item_x)

    def item_scorer(self, item_x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        scorer = super().item_scorer(item_x)
        if self.crosses is None or self.embedding.target_aware:  # the latter scores every pair by forward
            return scorer
        crossed = self.crosses.scorer(item_x)
        return lambda user_x: scorer(user_x) + crossed(user_x)

    def all_item_logits(self, user_x: torch.Tensor, item_x: torch.Tensor) -> torch.Tensor:
        logits = super().all_item_logits(user_x, item_x)
        return logits if self.crosses is None else logits + self.crosses.scorer(item_x)(user_x)

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {**deep_space(trial), "crosses": trial.suggest_categorical("crosses", [True, False])}


class CrossProducts(nn.Module):
    """w_c^T phi(x): one learned weight per (value a of a user field, value b of an item field) for each crossed
    pair of fields, zero at first. A multi-valued item field (genres) averages the weights of its values, as
    its first-order weights are averaged; an unknown value (index 0) weighs nothing.

    A pair's weight is row a of the table dotted with the item's distribution over b's values, so the user
    rows and the item distributions score every (user, item) pair by one matmul, without forming the pairs.
    """

    def __init__(self, crossed: list[tuple[FieldSpec, FieldSpec]]):
        super().__init__()
        self.crossed = crossed
        self.tables = nn.ParameterList(nn.Parameter(torch.zeros(u.vocab_size, i.vocab_size)) for u, i in crossed)

    @staticmethod
    def fields(spec: FeatureSpec) -> list[tuple[FieldSpec, FieldSpec]]:
        """Every (non-id single-valued user field, non-id item field) pair with a table of a sensible size."""
        users = [f for f in spec.side("user") if not f.is_id and not f.multi_valued]
        items = [f for f in spec.side("item") if not f.is_id]
        return [(u, i) for u in users for i in items if u.vocab_size * i.vocab_size <= MAX_CROSS_WEIGHTS]

    def user_rows(self, user_x: torch.Tensor) -> torch.Tensor:
        """(B, sum of the item fields' vocabularies): each cross's table row of the user's value."""
        rows = []
        for (field, _), table in zip(self.crossed, self.tables, strict=True):
            value = user_x[:, field.column]
            rows.append(table[value] * (value > 0).unsqueeze(1).to(table.dtype))
        return torch.cat(rows, dim=1)

    def item_values(self, item_x: torch.Tensor) -> torch.Tensor:
        """(I, sum of the item fields' vocabularies): each crossed item field's values, as a distribution."""
        parts = []
        for (_, field), table in zip(self.crossed, self.tables, strict=True):
            idx = item_x[:, field.columns]
            known = (idx > 0).to(table.dtype)
            counts = torch.zeros(len(idx), field.vocab_size, dtype=table.dtype, device=idx.device)
            counts.scatter_add_(1, idx, known)
            parts.append(counts / known.sum(1, keepdim=True).clamp(min=1.0))
        return torch.cat(parts, dim=1)

    def forward(self, user_x: torch.Tensor, item_x: torch.Tensor) -> torch.Tensor:
        """(B,) the crosses' weight of each row."""
        return (self.user_rows(user_x) * self.item_values(item_x)).sum(1)

    def scorer(self, item_x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """Every (user, item) pair's weight, (U, I), the items' distributions computed once."""
        values = self.item_values(item_x)
        return lambda user_x: self.user_rows(user_x) @ values.T
