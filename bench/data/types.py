"""The data contracts between dataset plugins, encoders, the split, samplers and the trainer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from bench.data.features import FeatureSpec


@dataclass(frozen=True)
class ColumnSchema:
    """How one raw column of the users or items frame becomes a field."""

    name: str  # column in DatasetFrames.users / .items
    side: str  # "user" or "item"
    encoder: str  # encoder plugin name: label, multihot, bucket, ...
    options: dict[str, Any] = field(default_factory=dict)  # encoder kwargs (bins, sep, ...)
    is_id: bool = False


@dataclass
class DatasetFrames:
    """What a dataset plugin returns.

    interactions: columns user_id, item_id, rating, timestamp (raw ids; file order kept: it breaks
    timestamp ties). users: column user_id + the user feature columns; items: column item_id + the item
    feature columns. Every feature column, the ids included, is listed in `schema`; the field's name is
    the column's name. A multi-valued column holds strings joined by its encoder's `sep` ("" = none).
    """

    name: str
    interactions: pd.DataFrame
    users: pd.DataFrame
    items: pd.DataFrame
    schema: list[ColumnSchema]


class Csr:
    """Per-user sorted item lists in CSR form, with vectorised membership tests."""

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, n_items: int):
        self.indptr = indptr
        self.indices = indices
        self.n_items = n_items
        rows = np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr))
        self._keys = rows * n_items + indices  # sorted, since rows and per-row items are sorted

    @classmethod
    def from_pairs(cls, users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> "Csr":
        keys = np.unique(np.asarray(users, np.int64) * n_items + np.asarray(items, np.int64))
        rows, cols = np.divmod(keys, n_items)
        indptr = np.zeros(n_users + 1, dtype=np.int64)
        np.add.at(indptr, rows + 1, 1)
        return cls(np.cumsum(indptr), cols.astype(np.int64), n_items)

    @property
    def n_users(self) -> int:
        return len(self.indptr) - 1

    @property
    def nnz(self) -> int:
        return len(self.indices)

    def counts(self) -> np.ndarray:
        """Number of items per user."""
        return np.diff(self.indptr)

    def contains(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Boolean array: is items[k] in users[k]'s list? Any shapes that broadcast."""
        keys = np.asarray(users, np.int64) * self.n_items + np.asarray(items, np.int64)
        if self._keys.size == 0:
            return np.zeros(keys.shape, dtype=bool)
        pos = np.searchsorted(self._keys, keys)
        return self._keys[np.minimum(pos, self._keys.size - 1)] == keys

    def rows_pairs(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row-in-`users`, item) pairs of the given users' lists, for building dense masks."""
        users = np.asarray(users, np.int64)
        starts, ends = self.indptr[users], self.indptr[users + 1]
        lengths = ends - starts
        rows = np.repeat(np.arange(len(users)), lengths)
        offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        return rows, self.indices[np.repeat(starts, lengths) + offsets]

    def dense_mask(self, users: np.ndarray) -> torch.Tensor:
        """(len(users), n_items) bool tensor, True where the item is in the user's list."""
        mask = torch.zeros(len(users), self.n_items, dtype=torch.bool)
        rows, cols = self.rows_pairs(users)
        mask[torch.from_numpy(rows), torch.from_numpy(cols)] = True
        return mask

    def union(self, other: "Csr") -> "Csr":
        u1, i1 = self.rows_pairs(np.arange(self.n_users))
        u2, i2 = other.rows_pairs(np.arange(other.n_users))
        return Csr.from_pairs(np.concatenate([u1, u2]), np.concatenate([i1, i2]), self.n_users, self.n_items)


@dataclass
class Pairs:
    """Aligned (user, item) index arrays."""

    users: np.ndarray
    items: np.ndarray

    def __len__(self) -> int:
        return len(self.users)


@dataclass
class InteractionData:
    """Everything training and evaluation need, as index arrays and feature matrices.

    Row 0 of both feature matrices is the unknown/padding row (all zeros); real users are rows
    1..n_users-1 and real items (the candidate pool) rows 1..n_items-1. Row r's id field holds r, so a
    row index *is* the id field's index (MostPop and NeuMF rely on this).
    """

    spec: FeatureSpec
    user_features: torch.Tensor  # (n_users, spec.num_columns("user")) int64
    item_features: torch.Tensor  # (n_items, spec.num_columns("item")) int64
    train: Pairs  # implicit positives used for training
    val: Pairs  # one held-out item per eligible user
    test: Pairs
    train_csr: Csr  # training positives per user
    seen_csr: Csr  # every interaction of the user (any rating, any split): excluded from eval negatives
    user_ids: np.ndarray  # raw id of each user row (row 0: unknown)
    item_ids: np.ndarray  # raw id of each item row
    name: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return self.user_features.shape[0]

    @property
    def n_items(self) -> int:
        return self.item_features.shape[0]

    def item_counts(self) -> np.ndarray:
        """Training popularity of each item row."""
        return np.bincount(self.train.items, minlength=self.n_items)

    def held_out_csr(self) -> Csr:
        """Validation items per user (masked, with training items, when ranking for test)."""
        return Csr.from_pairs(self.val.users, self.val.items, self.n_users, self.n_items)
