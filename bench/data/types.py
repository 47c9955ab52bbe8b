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
    seconds_per_unit: float | None = None  # seconds in one timestamp unit (1: Unix seconds; None: not known)


def unique_ints(keys: np.ndarray, return_inverse: bool = False) -> Any:
    """np.unique of integer keys by one sort. numpy 2.4's np.unique hashes integer input and was about 100x
    slower on millions of int64 keys, which made the split superlinear at scale (docs/performance.md).
    Without the inverse, a value sort (vectorised, faster than a stable argsort); with it, an unstable
    argsort: equal keys get one index whatever their order."""
    keys = np.asarray(keys)
    order = None if not return_inverse else np.argsort(keys)
    ordered = np.sort(keys) if order is None else keys[order]
    first = np.ones(len(ordered), dtype=bool)
    first[1:] = ordered[1:] != ordered[:-1]
    unique = ordered[first]
    if not return_inverse:
        return unique
    inverse = np.empty(len(keys), dtype=np.int64)
    inverse[order] = np.cumsum(first) - 1
    return unique, inverse


def concat_ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """start, start + 1, ..., start + length - 1 for each (start, length), concatenated; vectorised."""
    return np.repeat(starts, lengths) + np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)


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
        keys = unique_ints(np.asarray(users, np.int64) * n_items + np.asarray(items, np.int64))
        rows, cols = np.divmod(keys, n_items)
        indptr = np.zeros(n_users + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n_users), out=indptr[1:])
        return cls(indptr, cols.astype(np.int64), n_items)

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
        return rows, self.indices[concat_ranges(starts, lengths)]

    def union(self, other: "Csr") -> "Csr":
        u1, i1 = self.rows_pairs(np.arange(self.n_users))
        u2, i2 = other.rows_pairs(np.arange(other.n_users))
        return Csr.from_pairs(np.concatenate([u1, u2]), np.concatenate([i1, i2]), self.n_users, self.n_items)


@dataclass
class Pairs:
    """Aligned rows: the user (ids, masks, popularity), the item, and the user state whose features the row
    sees (`states`; None: the user's own row, as in hand-built data without history)."""

    users: np.ndarray
    items: np.ndarray
    states: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.states is None:
            self.states = self.users

    def __len__(self) -> int:
        return len(self.users)


@dataclass
class UserStates:
    """The user side of every row: who, and what they had liked strictly before the row's moment.

    State s is user `user[s]` with the history `sequence[begin[user[s]]:end[s]]`: the user's positives with
    a timestamp strictly earlier than the state's interaction, oldest first. `sequence` holds every positive
    (training and held-out) grouped by user in time order, `begin[u]` where user u's run starts. A training
    positive, the validation interaction and the test interaction each have a state; a user's positives in
    one second share one (simultaneous, not history). Only (user, end) is kept per state: a history is a
    window into `sequence`, never copied, so a row's `length` history columns are gathered when needed.
    Without `sequence` (hand-built data) state s is user s with no history.
    """

    user: torch.Tensor  # (n_states,) int64; state 0 is padding: user 0, no history
    end: torch.Tensor | None = None  # (n_states,) int64 index into `sequence`
    sequence: torch.Tensor | None = None  # (n_positives,) int64 item rows
    begin: torch.Tensor | None = None  # (n_users + 1,) int64 start of each user's run in `sequence`
    length: int = 0  # history columns of a user row (the history field's max_len; 0: none)
    order_keys: torch.Tensor | None = None  # (n_positives,) a random key per positive: the shuffled-order control

    def __len__(self) -> int:
        return len(self.user)

    def to(self, device: torch.device | str) -> "UserStates":
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        return UserStates(move(self.user), move(self.end), move(self.sequence), move(self.begin), self.length,
                          move(self.order_keys))

    def history(self, states: torch.Tensor) -> torch.Tensor:
        """(B, length) item rows of each state's last `length` earlier positives, most recent last, 0-padded
        at the front; with `order_keys` (the shuffled-order control), `length` of its earlier positives (those
        with the smallest keys) in key order instead."""
        if self.length == 0 or self.sequence is None:
            return torch.zeros(len(states), self.length, dtype=torch.long, device=states.device)
        end = self.end[states].unsqueeze(1)
        start = self.begin[self.user[states]].unsqueeze(1)
        if self.order_keys is not None:
            return self._shuffled(start.squeeze(1), end.squeeze(1))
        positions = end - self.length + torch.arange(self.length, device=states.device)
        inside = positions >= start
        return torch.where(inside, self.sequence[positions.clamp(min=0)], torch.zeros_like(positions))

    def _shuffled(self, start: torch.Tensor, end: torch.Tensor, rows_at_once: int = 1 << 22) -> torch.Tensor:
        """Each row's `length` earlier positives with the smallest `order_keys`, the smallest last, 0-padded at
        the front. Rows are taken in slices so a slice's (rows, longest past) keys stay bounded."""
        out = torch.zeros(len(start), self.length, dtype=torch.long, device=start.device)
        past = end - start
        if len(start) == 0 or int(past.max()) == 0:
            return out
        longest = int(past.max())
        step = max(1, rows_at_once // longest)
        take = min(self.length, longest)
        offsets = torch.arange(longest, device=start.device)
        for lo in range(0, len(start), step):
            s, n = start[lo:lo + step].unsqueeze(1), past[lo:lo + step].unsqueeze(1)
            positions = (s + offsets).clamp(max=len(self.sequence) - 1)
            keys = torch.where(offsets < n, self.order_keys[positions], 2.0)  # keys are in [0, 1): 2 is "none"
            chosen = keys.topk(take, dim=1, largest=False).indices.flip(1)  # the smallest key last
            picked = positions.gather(1, chosen)
            valid = chosen < n
            out[lo:lo + step, self.length - take:] = torch.where(valid, self.sequence[picked], torch.zeros_like(picked))
        return out

    def known(self, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row in `states`, item row) of every positive strictly earlier than each state: everything the user
        had shown us at that moment (what closed-form models score from)."""
        states = np.asarray(states, np.int64)
        user, end = self.user.numpy()[states], self.end.numpy()[states]
        start = self.begin.numpy()[user]
        lengths = end - start
        rows = np.repeat(np.arange(len(states)), lengths)
        offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        return rows, self.sequence.numpy()[np.repeat(start, lengths) + offsets]


@dataclass
class InteractionData:
    """Everything training and evaluation need, as index arrays and feature matrices.

    Row 0 of both feature matrices is the unknown/padding row (all zeros); real users are rows
    1..n_users-1 and real items (the candidate pool) rows 1..n_items-1. Row r's id field holds r, so a
    row index *is* the id field's index (MostPop and NeuMF rely on this). A row's user side is a user
    state (`states`): the user's static features plus, with history, the items they liked before it.
    """

    spec: FeatureSpec
    user_features: torch.Tensor  # (n_users, static user columns) int64
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
    states: UserStates | None = None  # None: one state per user, no history (hand-built data)
    masks: dict[str, Csr] | None = None  # per split, the items masked at evaluation (None: leave-one-out's)

    def __post_init__(self) -> None:
        if self.states is None:
            self.states = UserStates(torch.arange(self.user_features.shape[0]))

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

    def eval_masks(self, split: str) -> list[Csr]:
        """The items masked when ranking for `split` (what the user had already shown us): leave-one-out's
        training items, and at test the validation item too; a split that says otherwise (global: every
        positive strictly before each target) gives its own."""
        if self.masks is not None:
            return [self.masks[split]]
        return [self.train_csr] + ([self.held_out_csr()] if split == "test" else [])

    def user_rows(self, device: torch.device | str = "cpu") -> "UserRows":
        """The feature rows of user states, on `device`."""
        return UserRows(self.user_features.to(device), self.states.to(device))

    def known(self, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row in `states`, item row) of what each state's user had liked before it: the positives strictly
        earlier (with a history sequence), else the user's training positives."""
        if self.states.sequence is not None:
            return self.states.known(states)
        return self.train_csr.rows_pairs(self.states.user.numpy()[np.asarray(states, np.int64)])


class UserRows:
    """Feature rows of user states on one device: the user's static columns, then the history columns."""

    def __init__(self, static: torch.Tensor, states: UserStates):
        self.static, self.states = static, states

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        static = self.static[self.states.user[rows]]
        if self.states.length == 0:
            return static
        return torch.cat([static, self.states.history(rows)], dim=1)
