"""The base every model plugin derives from: logits for (user, item) rows, and full-ranking scores.

A model is built as ``Model(spec, **hparams)`` from the data's FeatureSpec; it gets the training data
once through `prepare(data)` before training (MostPop counts popularity there). `head` maps the
three embedding views to logits; `score_all` scores every user against every item by embedding each
side once and pairing them by broadcasting, so a model written as `head` gets fast full ranking free.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bench.embedding import Embedded, FeatureEmbedding
from bench.features import FeatureSpec


class RankingModel(nn.Module):
    trainable = True  # False: no gradient steps (MostPop)

    def __init__(self, spec: FeatureSpec, fm_dim: int = 16):
        super().__init__()
        self.spec = spec
        self.embedding = FeatureEmbedding(spec, fm_dim)

    def prepare(self, data: Any) -> None:
        """Called once with the InteractionData before training; most models need nothing."""

    def head(self, e: Embedded) -> torch.Tensor:
        """Logits (B,) from the three views. Models that embed differently (NeuMF) override forward and
        score_all instead."""
        raise TypeError(f"{type(self).__name__} defines neither head(embedded) nor its own forward")

    def forward(self, user_x: torch.Tensor, item_x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embedding(user_x, item_x))

    def score_all(self, user_x: torch.Tensor, item_x: torch.Tensor) -> torch.Tensor:
        """(U, I) logits of every user row against every item row."""
        e = Embedded.cross(self.embedding.embed("user", user_x), self.embedding.embed("item", item_x))
        return self.head(e).view(user_x.shape[0], item_x.shape[0])

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        """Optuna search space of this model's own hyperparameters (none by default)."""
        return {}
