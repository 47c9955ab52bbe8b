"""Fixed negatives for the sampled evaluation protocol: n pool items per user that the user never touched.

Sampling without replacement is vectorised as "the n smallest random keys per row": a keys matrix
(users x items) with the excluded items (row 0 and everything in `seen_csr`) set to the largest key,
then `np.argpartition`. The keys are a hash of (seed, user row, item row) rather than a generator
stream, so a user's negatives depend only on the seed and that user: not on the other users asked
for, their order, or the chunking that bounds memory.
"""

from __future__ import annotations

import numpy as np

from bench.data.types import InteractionData

CHUNK_ELEMENTS = 1 << 22  # keys per chunk (32 MiB of uint64)
_EXCLUDED = np.uint64(np.iinfo(np.uint64).max)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A well-mixed 64-bit hash (SplitMix64 finaliser), elementwise on uint64 arrays."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def sample_eval_negatives(data: InteractionData, users: np.ndarray, n: int = 999, seed: int = 0,
                          allow_fewer: bool = False) -> np.ndarray:
    """(len(users), n) int64 item rows: distinct, in the pool, outside the user's `seen_csr` items, sorted.

    A user with fewer than n unseen pool items is an error, or with `allow_fewer` gets all of them,
    the row padded with 0 (never a candidate): on ML-100K some users have seen all but 830 of the
    1,447 pool items, so the classic 999 negatives cannot all be distinct there.
    """
    users = np.asarray(users, dtype=np.int64)
    if n < 1:
        raise ValueError(f"eval negatives: n must be >= 1, got {n}")
    if users.ndim != 1 or (users.size and (users.min() < 1 or users.max() >= data.n_users)):
        raise ValueError(f"eval negatives: users must be a 1-d array of user rows in 1..{data.n_users - 1}")
    eligible = (data.n_items - 1) - data.seen_csr.counts()[users]
    short = np.flatnonzero(eligible < n)
    if short.size and not allow_fewer:
        user = int(users[short[0]])
        raise ValueError(
            f"eval negatives: user row {user} (raw id {data.user_ids[user]!r}) has only {int(eligible[short[0]])} "
            f"unseen pool items, fewer than n={n}; use a smaller number of evaluation negatives"
        )
    out = np.empty((len(users), n), dtype=np.int64)
    items = np.arange(data.n_items, dtype=np.uint64)
    salt = _splitmix64(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))[0]
    chunk = max(1, CHUNK_ELEMENTS // data.n_items)
    for start in range(0, len(users), chunk):
        block = users[start:start + chunk]
        cells = block.astype(np.uint64)[:, None] * np.uint64(data.n_items) + items[None, :]
        keys = _splitmix64(cells ^ salt) >> np.uint64(1)  # below _EXCLUDED, so excluded items sort last
        keys[:, 0] = _EXCLUDED
        rows, seen = data.seen_csr.rows_pairs(block)
        keys[rows, seen] = _EXCLUDED
        take = min(n, data.n_items)
        picked = np.argpartition(keys, take - 1, axis=1)[:, :take] if take < data.n_items else \
            np.argsort(keys, axis=1)
        kept = np.take_along_axis(keys, picked, axis=1) != _EXCLUDED
        rows_sorted = np.sort(np.where(kept, picked, data.n_items), axis=1)  # padding sorts last
        out[start:start + len(block)] = 0
        out[start:start + len(block), :take] = np.where(rows_sorted == data.n_items, 0, rows_sorted)
    return out
