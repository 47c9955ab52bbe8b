"""The model form of the first plugin guide (README at eb2280b): a bench.model.RankingModel subclass built as
Model(spec, fm_dim), its equation in head. Its modules moved (bench.nn.model, bench.nn.layers) and fm_dim became
embed_dim: kept working through bench.model / bench.layers shims that warn (FutureWarning) and the
fm_dim keyword (see test_compat.py)."""

import torch

from bench.layers import MLP
from bench.model import RankingModel
from plugins.interactions.fm import FMInteraction


class MyDeepFM(RankingModel):
    """FM + a wider MLP over the same embeddings."""

    def __init__(self, spec, fm_dim=16, mlp=(256, 128), dropout=0.1):
        super().__init__(spec, fm_dim)
        self.fm = FMInteraction(len(spec), fm_dim)
        self.mlp = MLP(self.embedding.total_dim, mlp, dropout)
        self.bias = torch.nn.Parameter(torch.zeros(1))

    def head(self, e):
        return (self.bias + e.first_order + self.fm(e.field_embeddings) + self.mlp(e.flat_embeddings)).squeeze(1)
