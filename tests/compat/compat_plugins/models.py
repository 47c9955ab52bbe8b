"""Model plugins in every documented form."""

import torch
from torch import nn

from bench.nn.composed import interaction_term
from bench.nn.item_item import item_gram
from bench.nn.layers import MLP
from bench.nn.model import EmbeddingModel, FittedModel, RankingModel, known_matrix


class HeadDeepFM(EmbeddingModel):
    """The guide's model: FM + an MLP over the same embeddings, the equation in head, scoring pairs from sides."""

    pair_scoring = True  # head uses only Term and MLP, which score all pairs from the two sides

    def __init__(self, spec, embed_dim=16, mlp=(32, 16), dropout=0.1):
        super().__init__(spec, embed_dim)
        self.fm = interaction_term("fm", spec, embed_dim)  # the registry's `fm` layer as a logit term
        self.mlp = MLP(self.embedding.total_dim, mlp, dropout)
        self.bias = torch.nn.Parameter(torch.zeros(1))

    def head(self, e):
        return self.bias + e.first_order + self.fm(e.field_embeddings) + self.mlp(e.flat_embeddings)

    @staticmethod
    def search_space(trial):
        return {"dropout": trial.suggest_float("dropout", 0.0, 0.5)}


class FormedPairs(EmbeddingModel):
    """An EmbeddingModel that declares nothing about pairs: its head gets them formed, and returns (B,)."""

    def __init__(self, spec, embed_dim=16):
        super().__init__(spec, embed_dim)
        self.weight = nn.Linear(embed_dim, 1)

    def head(self, e):
        return (e.first_order + self.weight(e.field_embeddings.prod(dim=1))).squeeze(1)


class DotIds(RankingModel):
    """A RankingModel written before item_scorer existed: forward, and full ranking by its own score_all."""

    def __init__(self, spec, embed_dim=8):
        super().__init__(spec)
        user, item = spec.id_field("user"), spec.id_field("item")
        self.user_column, self.item_column = user.column, item.column
        self.users, self.items = nn.Embedding(user.vocab_size, embed_dim), nn.Embedding(item.vocab_size, embed_dim)
        self.score_all_calls = 0

    def forward(self, user_x, item_x):
        return (self.users(user_x[:, self.user_column]) * self.items(item_x[:, self.item_column])).sum(1)

    def score_all(self, user_x, item_x):
        self.score_all_calls += 1
        return self.users(user_x[:, self.user_column]) @ self.items(item_x[:, self.item_column]).T


class PlainIds(nn.Module):
    """The oldest trained form: a plain nn.Module with trainable, forward and score_all; no base class, no
    item_scorer, no memory figures."""

    trainable = True

    def __init__(self, spec, embed_dim=8):
        super().__init__()
        self.spec = spec
        self.users, self.items = nn.Embedding(10_000, embed_dim), nn.Embedding(10_000, embed_dim)

    def forward(self, user_x, item_x):
        return (self.users(user_x[:, 0]) * self.items(item_x[:, 0])).sum(1)

    def score_all(self, user_x, item_x):
        return self.users(user_x[:, 0]) @ self.items(item_x[:, 0]).T


class CoCounts(FittedModel):
    """The guide's fitted model: x_u C, C the training positives' item co-occurrence counts off the diagonal."""

    def __init__(self, spec):
        super().__init__(spec)
        self.register_buffer("counts", torch.zeros(0, 0))

    def fit(self, data):
        counts = item_gram(data)
        counts.diagonal().zero_()
        self.counts = counts.to(self.counts)
        self.data = data

    def score(self, states, items):
        return known_matrix(self.data, states, len(self.counts)) @ self.counts[:, items]


class RowsFitted(FittedModel):
    """A fitted model as the guide described it before states (41c5827): fit(data), then forward and score_all
    over feature rows, like MostPop was then. Retired without a warning: see test_compat.py."""

    def __init__(self, spec):
        super().__init__(spec)
        self.item_column = spec.id_field("item").column
        self.register_buffer("popularity", torch.zeros(0))

    def fit(self, data):
        self.popularity = torch.log1p(torch.as_tensor(data.item_counts(), dtype=torch.float32))

    def forward(self, user_x, item_x):
        return self.popularity[item_x[:, self.item_column]]

    def score_all(self, user_x, item_x):
        return self.popularity[item_x[:, self.item_column]].unsqueeze(0).expand(len(user_x), -1).contiguous()
