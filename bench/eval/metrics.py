"""Ranking metrics of one held-out item per user, from its rank, with ties handled explicitly.

Every metric here is a discount d(r) of the held-out item's 0-based position r (0 beyond a cutoff K):

    HR@K = Recall@K = [r < K]     NDCG@K = [r < K] / log2(r + 2)     MAP@K = [r < K] / (r + 1)
    MRR = 1 / (r + 1)             (one relevant item: Recall is HR and AP is the reciprocal rank)

A user is summarised by `greater` (candidates scored strictly above the held-out item) and `ties`
(other candidates scored exactly equal). Which position the item takes among its ties is a choice,
and a consequential one: a model that scores everything equal must not look perfect. Policies:

    expected     the exact mean over uniformly random orders of the tied candidates: r is uniform on
                 {g, ..., g + t}, so the metric is (D[g + t + 1] - D[g]) / (t + 1) with D the
                 cumulative table of d; O(users), computed, not sampled
    pessimistic  r = g + t (the item comes last among its ties)
    optimistic   r = g (first among its ties; what a naive `argsort` often reports)

All three are the same formula over a window [lo, hi) of positions, which is how they are computed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

TIE_POLICIES = ("expected", "pessimistic", "optimistic")
DEFAULT_KS = (5, 10, 20)


def _hit(r: np.ndarray) -> np.ndarray:
    return np.ones(r.shape, dtype=np.float64)


def _dcg(r: np.ndarray) -> np.ndarray:
    return 1.0 / np.log2(r + 2.0)


def _reciprocal(r: np.ndarray) -> np.ndarray:
    return 1.0 / (r + 1.0)


# name -> discount of a 0-based position; every one of these takes a cutoff K
CUTOFF_METRICS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "HR": _hit,
    "NDCG": _dcg,
    "Recall": _hit,
    "MAP": _reciprocal,
}


def _cumulative(discount: Callable[[np.ndarray], np.ndarray], length: int) -> np.ndarray:
    """D[n] = sum of discount(r) for r < n, n = 0..length."""
    table = np.zeros(length + 1, dtype=np.float64)
    np.cumsum(discount(np.arange(length, dtype=np.float64)), out=table[1:])
    return table


def _window(greater: np.ndarray, ties: np.ndarray, policy: str) -> tuple[np.ndarray, np.ndarray]:
    """Positions [lo, hi) the held-out item is averaged over under a tie policy."""
    if policy == "expected":
        return greater, greater + ties + 1
    if policy == "pessimistic":
        return greater + ties, greater + ties + 1
    if policy == "optimistic":
        return greater, greater + 1
    raise ValueError(f"ties={policy!r}: expected one of {', '.join(TIE_POLICIES)}")


def _as_counts(values: object, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array over users, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name}: expected integer candidate counts, got dtype {array.dtype}")
    array = array.astype(np.int64, copy=False)
    if array.size and array.min() < 0:
        raise ValueError(f"{name}: counts must be >= 0, got {array.min()}")
    return array


def check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    """The cutoffs as a sorted tuple of distinct positive ints, or a clear error."""
    ks = tuple(ks)
    if not ks or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 for k in ks):
        raise ValueError(f"ks={ks!r}: expected one or more positive integer cutoffs, e.g. (5, 10, 20)")
    return tuple(sorted({int(k) for k in ks}))


def metric_names(ks: Sequence[int] = DEFAULT_KS) -> list[str]:
    """The names `ranking_metrics` returns, in its order."""
    return [f"{name}@{k}" for name in CUTOFF_METRICS for k in check_ks(ks)] + ["MRR"]


def ranking_metrics(greater: object, ties: object, ks: Sequence[int] = DEFAULT_KS,
                    policy: str = "expected") -> dict[str, np.ndarray]:
    """Per-user float64 metrics ("HR@10", "NDCG@10", "Recall@10", "MAP@10", ..., "MRR") from rank counts."""
    greater, ties = _as_counts(greater, "greater"), _as_counts(ties, "ties")
    if greater.shape != ties.shape:
        raise ValueError(f"greater and ties must be aligned over users: {greater.shape} vs {ties.shape}")
    lo, hi = _window(greater, ties, policy)
    width = (hi - lo).astype(np.float64)
    out: dict[str, np.ndarray] = {}
    for name, discount in CUTOFF_METRICS.items():
        for k in check_ks(ks):
            table = _cumulative(discount, k)  # D[n] for n <= K; beyond K the discount is 0
            out[f"{name}@{k}"] = (table[np.minimum(hi, k)] - table[np.minimum(lo, k)]) / width
    longest = int(hi.max()) if hi.size else 0
    table = _cumulative(_reciprocal, longest)
    out["MRR"] = (table[hi] - table[lo]) / width
    return out


def rank_counts(scores: torch.Tensor, target: torch.Tensor,
                candidates: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(greater, ties) per row of a (U, C) score matrix; `target` holds each row's held-out column.

    `candidates` (U, C) bool marks the columns that compete (None: all). The target column itself is
    never counted, masked or not. A NaN or infinite score among the compared ones is an error: NaN
    compares false with everything, so it would silently rank the held-out item first, and infinities
    (a diverged model) tie with each other.
    """
    if scores.ndim != 2 or target.shape != (scores.shape[0],):
        raise ValueError(f"rank_counts: expected scores (U, C) and target (U,), got {tuple(scores.shape)} "
                         f"and {tuple(target.shape)}")
    if candidates is not None and candidates.shape != scores.shape:
        raise ValueError(f"rank_counts: candidates mask {tuple(candidates.shape)} != scores "
                         f"{tuple(scores.shape)}")
    target = target.long().unsqueeze(1)
    held_out = scores.gather(1, target)
    infinite = ~scores.isfinite()
    if candidates is not None:
        infinite &= candidates
    bad = infinite.any(dim=1) | ~held_out.squeeze(1).isfinite()
    if bool(bad.any()):
        raise ValueError(f"the model produced NaN or infinite scores for {int(bad.sum())} of {scores.shape[0]} users "
                         f"(first at row {int(bad.nonzero()[0, 0])}); they cannot be ranked")
    above, equal = scores > held_out, scores == held_out
    if candidates is not None:
        above, equal = above & candidates, equal & candidates
    equal.scatter_(1, target, False)  # the held-out item does not tie with itself
    return above.sum(dim=1), equal.sum(dim=1)


def top_items(scores: torch.Tensor, candidates: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's `k` best candidate columns, best first, and their scores: (U, k) column indices, 0 (the padding
    row, never a candidate) where a row has fewer than `k` candidates, and (U, k) scores (-inf there).

    One explicit order, so a list is the same wherever it is computed: a higher score first, and among equal
    scores the lower column (item row) first. `torch.topk` picks the k best; only rows where a tie straddles the
    k-th place (more columns equal to the k-th score than were taken) are fully sorted, stably, to take the
    lowest columns of that tie, so the cost stays topk's."""
    k = min(k, scores.shape[1])
    masked = torch.where(candidates, scores, torch.tensor(float("-inf"), dtype=scores.dtype, device=scores.device))
    values, columns = masked.topk(k, dim=1)
    kth = values[:, -1:]
    straddles = (masked == kth).sum(dim=1) > (values == kth).sum(dim=1)
    if bool(straddles.any()):
        rows = straddles.nonzero().squeeze(1)
        ordered = masked[rows].sort(dim=1, descending=True, stable=True)
        values[rows], columns[rows] = ordered.values[:, :k], ordered.indices[:, :k]
    columns, by_column = columns.sort(dim=1)  # ties in column order, then a stable sort by score keeps it
    values = values.gather(1, by_column)
    values, by_score = values.sort(dim=1, descending=True, stable=True)
    columns = columns.gather(1, by_score)
    return torch.where(values > float("-inf"), columns, torch.zeros_like(columns)), values
