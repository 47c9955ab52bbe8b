"""NeuMF (He et al. 2017): neural collaborative filtering from the user and item ids alone."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from bench.embedding import Embedded, FeatureEmbedding
from bench.features import FeatureSpec
from bench.layers import MLP, check_number
from bench.model import RankingModel
from plugins.models.composed import fm_dim_space, mlp_sizes


class NeuMF(RankingModel):
    """GMF tower (u * i, `fm_dim` factors) + MLP tower (MLP[u; i] on separate `mlp_dim` vectors) -> Linear.

    Only the two id fields are read; the towers have their own embeddings, as in the paper, so
    `self.embedding` (GMF) is not the whole story and forward/score_all are overridden.
    """

    def __init__(self, spec: FeatureSpec, fm_dim: int = 16, mlp_dim: int = 32,
                 mlp: Sequence[int] | str = (64, 32, 16), dropout: float = 0.0):
        mlp_dim = int(check_number("mlp_dim", mlp_dim, low=1, integer=True))
        names = [spec.id_field("user").name, spec.id_field("item").name]
        ids = spec.select(names).with_dims({n: None for n in names})  # the towers' dims, not the data's
        super().__init__(ids, fm_dim)  # self.embedding: the GMF tower's vectors
        self.spec = spec
        self.mlp_embedding = FeatureEmbedding(ids, mlp_dim)
        self.mlp = MLP(2 * mlp_dim, mlp_sizes(mlp), dropout, out_dim=None)
        self.predict = nn.Linear(fm_dim + self.mlp.out_dim, 1)

    def forward(self, user_x: torch.Tensor, item_x: torch.Tensor) -> torch.Tensor:
        return self._logits(self.embedding(user_x, item_x), self.mlp_embedding(user_x, item_x))

    def score_all(self, user_x: torch.Tensor, item_x: torch.Tensor) -> torch.Tensor:
        gmf, mlp = (Embedded.cross(emb.embed("user", user_x), emb.embed("item", item_x))
                    for emb in (self.embedding, self.mlp_embedding))
        return self._logits(gmf, mlp).view(user_x.shape[0], item_x.shape[0])

    def _logits(self, gmf: Embedded, mlp: Embedded) -> torch.Tensor:
        user, item = gmf.field_embeddings.unbind(dim=1)
        return self.predict(torch.cat([user * item, self.mlp(mlp.flat_embeddings)], dim=1)).squeeze(1)

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {
            "fm_dim": fm_dim_space(trial),
            "mlp_dim": trial.suggest_categorical("mlp_dim", [8, 16, 32, 64]),
            "mlp": trial.suggest_categorical("mlp", ["32,16,8", "64,32,16", "128,64,32"]),
            "dropout": trial.suggest_float("dropout", 0.0, 0.5),
        }
