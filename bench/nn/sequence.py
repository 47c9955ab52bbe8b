"""Sequential recommenders over the same user states: the history window encoded, scored against the item table.

    score(u, i) = h_u . e_i,    h_u = Encoder(e_{h_1}, ..., e_{h_L})

where h_1..h_L are the user's last L positives strictly before the row (the `history` field, the same window
every model reads) and e the item id embeddings, shared by the input and the output as in SASRec. The
encoder is a history encoder plugin (`transformer` for SASRec, `gru` for GRU4Rec). The user side is
computed once per user state, so full ranking is one matrix product per chunk, and so is the softmax over
all items that these models are best trained with (`--loss softmax`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

import registry
from bench.data.features import FeatureSpec
from bench.nn.model import RankingModel

HISTORY = 50  # the window these models read when --history does not say


class SequenceModel(RankingModel):
    """h_u . e_i with h_u the `encoder`'s reading of the history window; see the module docstring."""

    needs_history = HISTORY  # a model of this kind always gets the history field (this long unless --history)
    all_items = True  # its scores for every item of a batch cost one matrix product: --loss softmax is cheap
    encoder_name = "transformer"

    def __init__(self, spec: FeatureSpec, embed_dim: int = 64, **encoder_options: Any):
        super().__init__(spec)
        if "history" not in {f.name for f in spec}:
            raise ValueError(f"{type(self).__name__} reads the user's history: give it --history L (it takes "
                             f"{HISTORY} when --history is 0 and it is run through bench run or bench tune)")
        history, item = spec.field("history"), spec.id_field("item")
        self.history_cols, self.item_col = history.columns, item.column
        self.items = nn.Embedding(item.vocab_size, embed_dim, padding_idx=0)
        nn.init.normal_(self.items.weight, std=embed_dim ** -0.5)
        with torch.no_grad():
            self.items.weight[0].zero_()
        self.encoder = registry.create("history_encoder", self.encoder_name, dim=embed_dim, length=history.max_len,
                                       **encoder_options)

    def user_vector(self, user_x: torch.Tensor) -> torch.Tensor:
        """h_u of each user row, (B, D)."""
        window = user_x[:, self.history_cols]
        return self.encoder(self.items(window), window > 0)

    def forward(self, user_x: torch.Tensor, item_x: torch.Tensor) -> torch.Tensor:
        return (self.user_vector(user_x) * self.items(item_x[:, self.item_col])).sum(1)

    def item_scorer(self, item_x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        items = self.items(item_x[:, self.item_col])
        return lambda user_x: self.user_vector(user_x) @ items.T

    def floats_per_row(self) -> int:
        return 2 * self.items.embedding_dim + self.encoder.floats_per_row()

    def floats_per_pair(self) -> int:
        return 1  # a pair is one dot product

    def floats_per_user(self) -> int:
        return self.encoder.floats_per_row()  # each user's window is encoded once per chunk
