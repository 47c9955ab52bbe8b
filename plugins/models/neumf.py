"""NeuMF (He et al. 2017): neural collaborative filtering from the user and item ids alone."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from bench.config import check_number
from bench.data.features import FeatureSpec
from bench.nn.embedding import FeatureEmbedding
from bench.nn.layers import MLP, parse_widths
from bench.nn.model import RankingModel
from bench.nn.pairs import Pairs


class NeuMF(RankingModel):
    """NeuMF: y = h^T [p_u * q_i ; MLP(p'_u || q'_i)]: a GMF tower (`embed_dim` factors) and an MLP tower on
    separate `mlp_dim` vectors of the user and item ids, as in the paper."""

    def __init__(self, spec: FeatureSpec, embed_dim: int = 16, mlp_dim: int = 32,
                 mlp: Sequence[int] | str = (64, 32, 16), dropout: float = 0.0):
        super().__init__(spec)
        mlp_dim = int(check_number("mlp_dim", mlp_dim, low=1, integer=True))
        names = [spec.id_field("user").name, spec.id_field("item").name]
        ids = spec.select(names).with_dims({n: None for n in names})  # the towers' dims, not the data's
        self.gmf = FeatureEmbedding(ids, embed_dim)
        self.towers = FeatureEmbedding(ids, mlp_dim)
        self.mlp = MLP(2 * mlp_dim, parse_widths(mlp, "mlp"), dropout, out_dim=None)
        self.predict = nn.Linear(embed_dim + self.mlp.out_dim, 1)

    def forward(self, user_x: torch.Tensor, item_x: torch.Tensor) -> torch.Tensor:
        p, q = (self.gmf.embed(side, x).field_embeddings[:, 0] for side, x in (("user", user_x), ("item", item_x)))
        deep = self.mlp(self.towers(user_x, item_x).flat_embeddings)
        return self.predict(torch.cat([p * q, deep], dim=1)).squeeze(1)

    def item_scorer(self, item_x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """Full ranking from the two sides, the item side computed once (see `EmbeddingModel.item_scorer`): the
        GMF product by broadcasting, the MLP tower's first layer once per side (`MLP` on `Pairs`); in training
        mode (dropout) by `forward` on every pair."""
        if self.training:
            return super().item_scorer(item_x)
        q = self.gmf.embed("item", item_x).field_embeddings[:, 0]
        tower, memo = self.towers.embed("item", item_x).flat_embeddings, {}

        def score(user_x: torch.Tensor) -> torch.Tensor:
            n_u, n_i = user_x.shape[0], item_x.shape[0]
            p = self.gmf.embed("user", user_x).field_embeddings[:, 0]
            towers = Pairs(self.towers.embed("user", user_x).flat_embeddings, tower, memo)
            gmf = (p.unsqueeze(1) * q.unsqueeze(0)).reshape(n_u * n_i, -1)
            return self.predict(torch.cat([gmf, self.mlp(towers)], dim=1)).view(n_u, n_i)

        return score

    def floats_per_row(self) -> int:
        return self.predict.in_features + max(m.out_features for m in self.mlp.modules() if isinstance(m, nn.Linear))

    def floats_per_pair(self) -> int:
        return self.floats_per_row()

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {
            "mlp_dim": trial.suggest_categorical("mlp_dim", [8, 16, 32, 64]),
            "mlp": trial.suggest_categorical("mlp", ["32,16,8", "64,32,16", "128,64,32"]),
            "dropout": trial.suggest_float("dropout", 0.0, 0.5),
        }
