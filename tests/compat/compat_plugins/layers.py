"""Interaction layers in every documented form."""

import torch
from torch import nn

from bench.nn.interaction import Interaction


class InnerProducts(Interaction):
    """The guide's layer: <v_i, v_j> of every field pair, with a declared pairs path from the two sides."""

    pair_path = "forward"

    def __init__(self, num_fields, dim):
        super().__init__(num_fields, dim)
        rows, cols = torch.triu_indices(num_fields, num_fields, offset=1)
        self.register_buffer("rows", rows)
        self.register_buffer("cols", cols)
        self.out_dim = len(rows)

    def forward(self, fields):
        return (fields[:, self.rows] * fields[:, self.cols]).sum(-1)

    def forward_pairs(self, user_fields, item_fields):
        n_user = user_fields.shape[1]
        gram = user_fields.new_empty(len(user_fields), len(item_fields), self.num_fields, self.num_fields)
        gram[:, :, :n_user, :n_user] = (user_fields @ user_fields.transpose(1, 2)).unsqueeze(1)
        gram[:, :, n_user:, n_user:] = (item_fields @ item_fields.transpose(1, 2)).unsqueeze(0)
        gram[:, :, :n_user, n_user:] = torch.einsum("upd,iqd->uipq", user_fields, item_fields)
        return gram[:, :, self.rows, self.cols]

    @staticmethod
    def search_space(trial):
        return {}


class PlainMix(nn.Module):
    """The README's first form: a plain nn.Module built as Layer(num_fields, dim), out_dim and forward only; no
    base class, no num_fields or dim attributes."""

    def __init__(self, num_fields, dim):
        super().__init__()
        self.out_dim = 2
        self.mix = nn.Linear(num_fields * dim, 2)

    def forward(self, fields):
        return self.mix(fields.flatten(1))


class OlderPairScores(nn.Module):
    """A layer from before pair_path: defines pair_scores, declares nothing. The FM term by another formula."""

    out_dim = 1

    def __init__(self, num_fields, dim):
        super().__init__()
        self.num_fields, self.dim = num_fields, dim
        self.pair_calls = 0

    def forward(self, fields):
        return 0.5 * (fields.sum(1).square() - fields.square().sum(1)).sum(1, keepdim=True)

    def pair_scores(self, user_fields, item_fields):
        self.pair_calls += 1
        within_user, within_item = self(user_fields), self(item_fields).view(1, -1)
        return within_user + within_item + user_fields.sum(1) @ item_fields.sum(1).T


class OlderForwardPairs(Interaction):
    """A layer from before pair_path: defines forward_pairs, declares nothing. Each field's coordinates summed."""

    def __init__(self, num_fields, dim):
        super().__init__(num_fields, dim)
        self.out_dim = num_fields
        self.pair_calls = 0

    def forward(self, fields):
        return fields.sum(2)

    def forward_pairs(self, user_fields, item_fields):
        self.pair_calls += 1
        n_u, n_i = len(user_fields), len(item_fields)
        return torch.cat([user_fields.sum(2).unsqueeze(1).expand(n_u, n_i, -1),
                          item_fields.sum(2).unsqueeze(0).expand(n_u, n_i, -1)], dim=2)
