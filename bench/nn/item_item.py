"""Dense item x item matrices of the closed-form baselines (EASE, ItemKNN): the co-occurrence Gram matrix of
the training positives, built from each user's item pairs, and a memory check that refuses before allocating.

A dense I x I matrix takes I^2 floats: 1,447 items (ML-100K) 8 MB in float32, 3,706 (ML-1M) 55 MB, 26,744
(ML-20M's rated movies) 2.9 GB, 59,047 (ML-25M) 13.9 GB. EASE needs two copies while it solves (in float64
where three copies fit, else in float32), ItemKNN one and a chunk; a model whose copies would not fit in
70% of the memory available is refused with its size.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from bench.data.features import FeatureSpec
from bench.data.types import Csr, InteractionData, concat_ranges
from bench.nn.model import FittedModel, known_matrix

GRAM_CHUNK = 1 << 24  # floats of one chunk of heavy users' dense rows (64 MB in float32)
PAIR_CHUNK = 1 << 22  # item pairs counted at once (a few int64 arrays of this length)
HEAVY_USER = 0.05  # a user with at least this share of the items adds a dense row instead of its pairs


def available_bytes() -> int:
    """Memory this process may still take: MemAvailable from /proc/meminfo, else physical memory."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


HEADROOM = 0.7  # the share of the available memory a dense computation may take (the data and torch need the rest)


def require_memory(model: str, n_items: int, copies: int, dtype: torch.dtype) -> None:
    """Refuse, naming the size, a dense item x item computation that would not fit in memory."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    needed = copies * n_items * n_items * itemsize
    available = int(HEADROOM * available_bytes())
    if needed > available:
        raise MemoryError(f"{model}: {copies} dense {n_items:,} x {n_items:,} item matrices "
                          f"({str(dtype).replace('torch.', '')}) need {needed / 2**30:.1f} GiB; "
                          f"{available / 2**30:.1f} GiB may be taken ({HEADROOM:.0%} of what is available)")


def item_gram(data: InteractionData, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """X^T X (n_items x n_items) of the 0/1 user x item matrix X of training positives: co-occurrence
    counts, the diagonal each item's count; X is never dense whole. Each user adds x_u x_u^T, computed
    the cheaper way: a user with p items as its p^2 item pairs counted into the matrix (a few ns each), a
    heavy user (p at least HEAVY_USER x n_items) as a dense row in a matrix product (2 n_items^2 fast
    flops). At scale pairs take seconds where dense rows for everyone took most of an hour (results/scale.md)."""
    csr, n = data.train_csr, data.n_items
    gram = torch.zeros(n, n, dtype=dtype)
    counts = csr.counts()
    heavy = counts >= HEAVY_USER * n
    _add_pairs(gram, csr, counts, np.flatnonzero(~heavy & (counts > 0)))
    _add_dense_rows(gram, csr, np.flatnonzero(heavy))
    return gram


def _add_pairs(gram: torch.Tensor, csr: Csr, counts: np.ndarray, users: np.ndarray) -> None:
    """gram += sum of x_u x_u^T over `users`, as every (item, item) pair of each user, PAIR_CHUNK at a time."""
    n, flat = gram.shape[0], gram.view(-1)
    pairs = counts[users] ** 2
    ends = np.cumsum(pairs)
    start = 0
    while start < len(users):  # chunks of whole users, each at most PAIR_CHUNK pairs (or one user)
        stop = max(start + 1, int(np.searchsorted(ends, ends[start] - pairs[start] + PAIR_CHUNK, side="right")))
        chunk = users[start:stop]
        p = counts[chunk]
        first = np.repeat(csr.indptr[chunk], p)  # per entry of these users: its user's first position
        left = np.repeat(csr.indices[concat_ranges(csr.indptr[chunk], p)], np.repeat(p, p))
        right = csr.indices[concat_ranges(first, np.repeat(p, p))]  # each entry with every item of its user
        keys = torch.from_numpy(left * n + right)
        flat.index_add_(0, keys, torch.ones(len(keys), dtype=gram.dtype))
        start = stop


def _add_dense_rows(gram: torch.Tensor, csr: Csr, users: np.ndarray) -> None:
    """gram += X_u^T X_u for `users` as dense rows, GRAM_CHUNK floats at a time."""
    n = gram.shape[0]
    chunk = max(1, GRAM_CHUNK // n)
    for start in range(0, len(users), chunk):
        some = users[start:start + chunk]
        rows, items = csr.rows_pairs(some)
        x = torch.zeros(len(some), n, dtype=gram.dtype)
        x[torch.from_numpy(rows), torch.from_numpy(items)] = 1.0
        gram.addmm_(x.T, x)


class ItemItemModel(FittedModel):
    """A fitted model that scores a user state x_u M, with x_u what its user liked strictly before it and M a
    dense item x item matrix that `fit` sets (EASE's B, ItemKNN's S)."""

    def __init__(self, spec: FeatureSpec):
        super().__init__(spec)
        self.register_buffer("matrix", torch.zeros(0, 0))
        self.data: Any = None

    def score(self, states: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        if self.data is None:
            raise RuntimeError(f"{type(self).__name__}: call fit(data) with the training data before scoring")
        return known_matrix(self.data, states) @ self.matrix[:, items]
