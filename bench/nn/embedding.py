"""FeatureEmbedding: the one contract every model shares.

One forward pass gives three views of the same vectors (the DeepFM idea: FM and MLP share them):

    first_order      (B, 1)             sum of per-value scalar weights (the FM linear term)
    field_embeddings (B, F, embed_dim)  one vector per field, projected to embed_dim where a field's dim differs
    flat_embeddings  (B, total_dim)     the raw field vectors concatenated, for the MLP

Index 0 (unknown / padding) contributes exactly zero to all three. Single-valued fields of equal dim
share one table (one gather for all of them); multi-valued fields are pooled bags (mean, or weighted by
recency), and a field may look its values up in another field's table (the history in the item id's).
Each side (user, item) can be embedded alone, so full ranking embeds every user and every item once
and scores the pairs from the two sides (`Embedded.pairs`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bench.config import check_number
from bench.data.features import FeatureSpec, FieldSpec
from bench.nn.pairs import Pairs


class _Rows(torch.autograd.Function):
    """table[idx] with nn.Embedding's padding_idx=0 (row 0 takes no gradient), its backward one index_add: on
    CPU several times cheaper than F.embedding's dense backward (docs/performance.md), which sorts the indices."""

    @staticmethod
    def forward(ctx, table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(idx)
        ctx.rows = table.shape[0]
        return table.index_select(0, idx.reshape(-1)).view(*idx.shape, table.shape[1])

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        (idx,) = ctx.saved_tensors
        width = grad.shape[-1]
        table = grad.new_zeros(ctx.rows, width).index_add_(0, idx.reshape(-1), grad.reshape(-1, width))
        table[0].zero_()
        return table, None


def lookup(table: torch.Tensor, idx: torch.Tensor, sparse: bool = False) -> torch.Tensor:
    """Rows `idx` of an embedding table, (*idx.shape, dim), row 0 the padding (no gradient). F.embedding where
    the gradient is sparse or off the CPU (its CUDA backward is deterministic; an index_add there is not)."""
    if sparse or table.device.type != "cpu":
        return F.embedding(idx, table, padding_idx=0, sparse=sparse)
    return _Rows.apply(table, idx)


@dataclass
class Embedded:
    """The three views of a batch of rows; in full ranking (`pairs`), of every (user, item) pair, with
    `field_embeddings` and `flat_embeddings` kept as their two sides (`Pairs`)."""

    first_order: torch.Tensor  # (B, 1)
    field_embeddings: torch.Tensor | Pairs  # (B, F, embed_dim)
    flat_embeddings: torch.Tensor | Pairs  # (B, total_dim)

    @staticmethod
    def concat(user: "Embedded", item: "Embedded") -> "Embedded":
        """User and item halves of the same batch rows."""
        return Embedded(
            user.first_order + item.first_order,
            torch.cat([user.field_embeddings, item.field_embeddings], dim=1),
            torch.cat([user.flat_embeddings, item.flat_embeddings], dim=1),
        )

    @staticmethod
    def pairs(user: "Embedded", item: "Embedded", memo: dict | None = None) -> "Embedded":
        """Every (user, item) pair, row u * I + i, each side embedded once: the first order summed for
        every pair, the other two views left as `Pairs` for the layers to score without forming them
        (`memo`: see `Pairs`)."""
        return Embedded(Pairs(user.first_order, item.first_order).add(),
                        Pairs(user.field_embeddings, item.field_embeddings, memo),
                        Pairs(user.flat_embeddings, item.flat_embeddings, memo))

    def materialize(self) -> "Embedded":
        """The pairs formed, (U * I, ...) per view: what a layer without a pairs path needs."""
        def formed(view: torch.Tensor | Pairs) -> torch.Tensor:
            return view.materialize() if isinstance(view, Pairs) else view

        return Embedded(self.first_order, formed(self.field_embeddings), formed(self.flat_embeddings))


class _SideEmbedding(nn.Module):
    """The fields of one side (user or item)."""

    def __init__(self, fields: tuple[FieldSpec, ...], embed_dim: int):
        super().__init__()
        self.embed_dim = embed_dim
        single = [f for f in fields if not f.multi_valued]
        multi = [f for f in fields if f.multi_valued]
        dims = sorted({f.dim or embed_dim for f in single})
        # one table per distinct dim; local index k>0 of a field maps to offset_f + k, 0 stays 0
        self.groups = nn.ModuleList()
        self.group_fields: list[list[FieldSpec]] = []
        storage: list[FieldSpec] = []
        for d in dims:
            members = [f for f in single if (f.dim or embed_dim) == d]
            self.group_fields.append(members)
            storage += members
            self.groups.append(_FieldGroup(members, d, embed_dim))
        self.bags = nn.ModuleList(_BagField(f, embed_dim) for f in multi)
        storage += multi
        order = [storage.index(f) for f in fields]
        self.register_buffer("order", torch.tensor(order, dtype=torch.long), persistent=False)
        self.reorder = order != sorted(order)
        self.num_fields = len(fields)
        self.total_dim = sum(f.dim or embed_dim for f in fields)

    def table_of(self, name: str) -> tuple["_FieldGroup", int] | None:
        """The group holding single-valued field `name`, and the field's offset in its table (None if absent)."""
        for group, members in zip(self.groups, self.group_fields, strict=True):
            for f, offset in zip(members, group.offsets.view(-1).tolist(), strict=True):
                if f.name == name:
                    return group, offset
        return None

    def forward(self, x: torch.Tensor, candidate: torch.Tensor | None = None) -> Embedded:
        firsts, vectors, flats = [], [], []
        for part in [*self.groups, *self.bags]:
            first, field, flat = part(x, candidate) if isinstance(part, _BagField) else part(x)
            firsts.append(first)
            vectors.append(field)
            flats.append(flat)
        if not vectors:
            b = x.shape[0]
            empty = torch.zeros(b, 0, self.embed_dim, device=x.device)
            return Embedded(torch.zeros(b, 1, device=x.device), empty, torch.zeros(b, 0, device=x.device))
        first = firsts[0] if len(firsts) == 1 else torch.stack(firsts, 0).sum(0)
        field = vectors[0] if len(vectors) == 1 else torch.cat(vectors, dim=1)
        if self.reorder:
            field = field.index_select(1, self.order)
        flat = flats[0] if len(flats) == 1 else torch.cat(flats, dim=1)
        return Embedded(first, field, flat)


class _FieldGroup(nn.Module):
    """Single-valued fields sharing one dim: one gather for all of them."""

    def __init__(self, fields: list[FieldSpec], dim: int, embed_dim: int):
        super().__init__()
        offsets, total = [], 0
        for f in fields:
            offsets.append(total)
            total += f.vocab_size - 1
        columns = [f.column for f in fields]
        self.register_buffer("columns", torch.tensor(columns), persistent=False)
        # contiguous columns (the usual case) are a slice, a view: no gather of the index matrix
        self.span = (columns[0], columns[-1] + 1) if columns == list(range(columns[0], columns[-1] + 1)) else None
        self.register_buffer("offsets", torch.tensor(offsets).view(1, -1), persistent=False)
        self.vectors = nn.Embedding(total + 1, dim, padding_idx=0)
        self.weights = nn.Embedding(total + 1, 1, padding_idx=0)
        nn.init.normal_(self.vectors.weight, std=0.01)
        nn.init.zeros_(self.weights.weight)
        with torch.no_grad():
            self.vectors.weight[0].zero_()
        # per-field projection to embed_dim, bias-free so a zero vector stays zero
        self.projection = (
            nn.Parameter(torch.randn(len(fields), dim, embed_dim) / dim**0.5) if dim != embed_dim else None
        )

    def forward(self, x: torch.Tensor):
        local = x[:, self.span[0]:self.span[1]] if self.span else x.index_select(1, self.columns)
        idx = torch.where(local > 0, local + self.offsets, 0)  # index 0 (unknown) stays the zero row
        vec = lookup(self.vectors.weight, idx, self.vectors.sparse)  # (B, n, dim)
        first = lookup(self.weights.weight, idx, self.weights.sparse).sum(dim=1)  # (B, 1)
        field = vec if self.projection is None else torch.einsum("bnd,nde->bne", vec, self.projection)
        return first, field, vec.flatten(1)


class _BagField(nn.Module):
    """A multi-valued field (genres, history): its values read by a history encoder plugin (`field.pooling`,
    `bench.nn.history`), padding excluded. An encoder declaring `pooling` is a weighted mean, computed by one
    `embedding_bag` (mean, recency); any other gets the (B, L, dim) window and its mask (transformer, gru), and a
    target-aware one (target) also the candidate item's vector. A field that shares another field's table
    (history shares item_id's) looks its values up there: one table, one meaning. The first-order term is the
    mean of the values' weights, or the encoder's weighted mean of them."""

    def __init__(self, field: FieldSpec, embed_dim: int):
        import registry

        super().__init__()
        dim = field.dim or embed_dim
        self.cols, self.shares, self.name = field.columns, field.shares, field.name
        self.encoder = registry.create("history_encoder", field.pooling, dim=dim, length=field.max_len,
                                       **dict(field.options))
        self.bag = bool(getattr(self.encoder, "pooling", False))
        self.target_aware = bool(getattr(self.encoder, "target_aware", False))
        self._table: list[nn.Module] = []  # the owner's group, when shared (a plain list: not a submodule)
        self.offset = 0
        self.sparse = False  # sparse gradients for the table (FeatureEmbedding.use_sparse_gradients)
        if field.shares is None:
            self.vectors = nn.EmbeddingBag(field.vocab_size, dim, mode="mean", padding_idx=0)
            self.weights = nn.EmbeddingBag(field.vocab_size, 1, mode="mean", padding_idx=0)
            nn.init.normal_(self.vectors.weight, std=0.01)
            nn.init.zeros_(self.weights.weight)
            with torch.no_grad():
                self.vectors.weight[0].zero_()
        self.projection = nn.Linear(dim, embed_dim, bias=False) if dim != embed_dim else None

    def share(self, group: "_FieldGroup", offset: int) -> None:
        """Look values up in `group`'s tables, local index k > 0 at row offset + k."""
        self._table, self.offset = [group], offset

    def _tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        owner = self._table[0] if self._table else self
        return owner.vectors.weight, owner.weights.weight

    def _rows(self, idx: torch.Tensor) -> torch.Tensor:
        return torch.where(idx > 0, idx + self.offset, torch.zeros_like(idx)) if self.offset else idx

    def candidate(self, ids: torch.Tensor) -> torch.Tensor:
        """The vectors of these values (B,) in this field's table: a target-aware encoder's candidate items."""
        return lookup(self._tables()[0], self._rows(ids), self.sparse)

    def forward(self, x: torch.Tensor, candidate: torch.Tensor | None = None):
        idx = x[:, self.cols]
        rows = self._rows(idx)
        vectors, weights = self._tables()
        w = self.encoder.bag_weights(idx) if self.bag else None
        mode = "mean" if w is None else "sum"
        first = F.embedding_bag(rows, weights, per_sample_weights=w, mode=mode, padding_idx=0, sparse=self.sparse)
        if self.bag:
            vec = F.embedding_bag(rows, vectors, per_sample_weights=w, mode=mode, padding_idx=0, sparse=self.sparse)
        else:
            window = lookup(vectors, rows, self.sparse)  # (B, L, dim)
            if self.target_aware:
                if candidate is None:
                    raise ValueError(f"field {self.name!r}: its encoder is target-aware, so the user side cannot be "
                                     "embedded alone: embed (user, item) rows together")
                vec = self.encoder(window, idx > 0, candidate)
            else:
                vec = self.encoder(window, idx > 0)
        field = vec if self.projection is None else self.projection(vec)
        return first, field.unsqueeze(1), vec


class FeatureEmbedding(nn.Module):
    """Shared embeddings of all fields of a FeatureSpec; see the module docstring for the views."""

    def __init__(self, spec: FeatureSpec, embed_dim: int = 16):
        super().__init__()
        embed_dim = int(check_number("embed_dim", embed_dim, low=1, integer=True))
        self.spec = spec
        self.embed_dim = embed_dim
        self.user = _SideEmbedding(spec.side("user"), embed_dim)
        self.item = _SideEmbedding(spec.side("item"), embed_dim)
        sides = (self.user, self.item)
        for bag in (b for side in sides for b in side.bags if b.shares is not None):
            bag.share(*next(found for side in sides if (found := side.table_of(bag.shares)) is not None))
        self.num_fields = len(spec)
        self.total_dim = self.user.total_dim + self.item.total_dim
        self.target_aware = any(b.target_aware for b in self.user.bags)
        self._item_id = spec.id_field("item").column if self.target_aware else None

    def use_sparse_gradients(self, enabled: bool = True) -> list[nn.Parameter]:
        """Make every lookup table's gradient sparse (only the rows a batch looked up) or dense again, and
        return the tables: a sparse optimizer then updates those rows alone, so a step's cost follows the
        batch rather than the tables' size (`train.optimizer=lazy_adam`)."""
        tables: list[nn.Parameter] = []
        for side in (self.user, self.item):
            for group in side.groups:
                group.vectors.sparse = group.weights.sparse = enabled
                tables += [group.vectors.weight, group.weights.weight]
            for bag in side.bags:
                bag.sparse = enabled
                if bag.shares is None:
                    tables += [bag.vectors.weight, bag.weights.weight]
        return tables

    def embed(self, side: str, x: torch.Tensor) -> Embedded:
        """One side alone: x is that side's feature matrix rows (B, columns) (not the user side of a
        target-aware history: that needs the rows' items)."""
        return (self.user if side == "user" else self.item)(x)

    def forward(self, user_x: torch.Tensor, item_x: torch.Tensor) -> Embedded:
        candidate = None
        if self.target_aware:  # the row's item, looked up in the history's table (the item id's)
            bag = next(b for b in self.user.bags if b.target_aware)
            candidate = bag.candidate(item_x[:, self._item_id])
        return Embedded.concat(self.user(user_x, candidate), self.item(item_x))

    def history_floats(self) -> int:
        """Peak floats one row's history encoders need beyond the embeddings (0 for pooling ones)."""
        return sum(b.encoder.floats_per_row() for b in self.user.bags if not b.bag
                   and callable(getattr(b.encoder, "floats_per_row", None)))
