"""Beyond accuracy: what every test user's top-K list says about exposure and popularity, not about hits.

Computed over the top-K lists the full-ranking evaluator ranks for test (`EvalResult.top`: each evaluated user's K
best candidates at their test-time state, the same masks as the accuracy metrics; ties by the lower item row,
`bench.eval.metrics.top_items`), for each cutoff K of `--k`. The pool is every item row 1..n_items-1; an item's
popularity is its count of training positives (`InteractionData.item_counts`).

    Coverage@K   distinct items in all the lists / items in the pool (1: every item is recommended to someone)
    Gini@K       Gini index of the pool items' recommendation counts, unrecommended items included (0: every item
                 equally exposed; near 1: a few items fill every list)
    AvgPop@K     mean training popularity (count) of a user's recommended items, averaged over users
    Novelty@K    mean self-information -log2(p_i) of a user's recommended items, p_i the item's share of the
                 training positives (count_i / all training positives; an item with no training positive counts
                 as one, so its self-information stays finite), averaged over users; higher: less popular items

Coverage and Gini describe the whole set of lists (one value per run); AvgPop and Novelty have a value per user
(kept with the per-user accuracy metrics, so they get intervals and paired tests). The sampled protocol ranks
each user's held-out item among sampled negatives, so there is no full list: none of these is computed there.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bench.eval.metrics import check_ks

BEYOND_METRICS = ("Coverage", "Gini", "AvgPop", "Novelty")
PER_USER = ("AvgPop", "Novelty")  # the others are one value per run


def beyond_names(ks: Sequence[int]) -> list[str]:
    """The names `beyond_accuracy` returns, in its order: each metric at each cutoff."""
    return [f"{name}@{k}" for name in BEYOND_METRICS for k in check_ks(ks)]


def gini(counts: np.ndarray) -> float:
    """The Gini index of non-negative counts (0: all equal; (n - 1) / n: one item holds everything)."""
    counts = np.sort(np.asarray(counts, dtype=np.float64))
    n, total = len(counts), counts.sum()
    if n == 0 or total == 0:
        return float("nan")
    rank = np.arange(1, n + 1, dtype=np.float64)
    return float(((2 * rank - n - 1) * counts).sum() / (n * total))


def self_information(popularity: np.ndarray) -> np.ndarray:
    """-log2 of each item's share of the training positives, an item without one counted as one."""
    popularity = np.asarray(popularity, dtype=np.float64)
    total = popularity[1:].sum()
    return -np.log2(np.maximum(popularity, 1.0) / max(total, 1.0))


def beyond_accuracy(top: np.ndarray, popularity: np.ndarray,
                    ks: Sequence[int]) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """(metrics, per-user values) of top-K lists: `top` (users, width) item rows best first, 0 where a user had
    fewer candidates than the width; `popularity` the training count of each item row (row 0: padding). A cutoff
    beyond the width takes the whole lists."""
    top = np.asarray(top, dtype=np.int64)
    popularity = np.asarray(popularity, dtype=np.float64)
    pool = len(popularity) - 1
    if top.ndim != 2 or (top.size and (top.min() < 0 or top.max() > pool)):
        raise ValueError(f"top: expected (users, K) item rows in 0..{pool}, got shape {top.shape}")
    information = self_information(popularity)
    metrics: dict[str, float] = {}
    per_user: dict[str, np.ndarray] = {}
    for k in check_ks(ks):
        lists = top[:, :k]
        real = lists > 0
        shown = np.maximum(real.sum(axis=1), 1)
        exposure = np.bincount(lists[real], minlength=pool + 1)[1:]
        metrics[f"Coverage@{k}"] = float((exposure > 0).sum() / pool)
        metrics[f"Gini@{k}"] = gini(exposure)
        per_user[f"AvgPop@{k}"] = np.where(real, popularity[lists], 0.0).sum(axis=1) / shown
        per_user[f"Novelty@{k}"] = np.where(real, information[lists], 0.0).sum(axis=1) / shown
    for name, values in per_user.items():
        metrics[name] = float(values.mean()) if values.size else float("nan")
    order = beyond_names(ks)
    return {name: metrics[name] for name in order}, per_user
