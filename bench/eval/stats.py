"""Is model A really better than model B on these users? A paired sign-flip permutation test.

Both models are scored on the same users, so the per-user differences d carry the comparison. Under
the null hypothesis (no difference) each d is as likely to have the opposite sign; flipping signs at
random gives the null distribution of the mean difference without assuming normality (per-user
ranking metrics are far from normal: mostly zeros with a few large values).
"""

from __future__ import annotations

import numpy as np

SIGN_BLOCK = 2**22  # sign-matrix entries per chunk (~32 MB as float64)


def paired_permutation_test(a: object, b: object, n_permutations: int = 10000, seed: int = 0) -> float:
    """Two-sided p-value of mean(a - b) == 0, by `n_permutations` random sign flips of a - b.

    p = (1 + #{|permuted mean| >= |observed mean|}) / (1 + n_permutations), so never 0; identical
    inputs give 1.0. Deterministic for a given seed.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"paired_permutation_test: expected two aligned 1-D arrays, got {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("paired_permutation_test: no pairs to compare")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("paired_permutation_test: inputs contain NaN or inf")
    if isinstance(n_permutations, bool) or not isinstance(n_permutations, int) or n_permutations < 1:
        raise ValueError(f"n_permutations must be a positive int, got {n_permutations!r}")
    diff = a - b
    observed = abs(diff.sum())
    # permuted sums equal to the observed one up to rounding must count as "at least as extreme"
    tolerance = 1e-9 * np.abs(diff).sum()
    rng = np.random.default_rng(seed)
    block = max(1, SIGN_BLOCK // diff.size)
    extreme, done = 0, 0
    while done < n_permutations:
        rows = min(block, n_permutations - done)
        # from uniform doubles, not small ints: numpy buffers those, so the draw would depend on the block
        signs = np.where(rng.random((rows, diff.size)) < 0.5, 1.0, -1.0)
        extreme += int((np.abs(signs @ diff) >= observed - tolerance).sum())
        done += rows
    return (1 + extreme) / (1 + n_permutations)


def bootstrap_interval(values: object, level: float = 0.95, n_boot: int = 2000,
                       seed: int = 0) -> tuple[float, float]:
    """A percentile bootstrap interval of the mean of a (seeds, users) matrix of per-user metric values.

    Each replicate resamples the users (the same users for every seed: the seeds are paired on them) and the
    seeds, both with replacement, so the interval carries the noise of which users were sampled (942 on
    ML-100K: about 0.011 on HR@10 alone) and of the seeds' training runs. One seed: users only.
    Deterministic for a given seed; vectorised as resampling counts (no loop over replicates).
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 1:
        v = v[None, :]
    if v.ndim != 2 or v.size == 0:
        raise ValueError(f"bootstrap_interval: expected a (seeds, users) matrix, got shape {v.shape}")
    if not 0 < level < 1:
        raise ValueError(f"bootstrap_interval: level must be in (0, 1), got {level}")
    n_seeds, n_users = v.shape
    rng = np.random.default_rng(seed)
    user_counts = rng.multinomial(n_users, np.full(n_users, 1 / n_users), size=n_boot)  # (B, U)
    seed_counts = (rng.multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds), size=n_boot) if n_seeds > 1
                   else np.ones((n_boot, 1)))  # (B, S)
    means = np.einsum("bs,su,bu->b", seed_counts, v, user_counts) / (n_seeds * n_users)
    low, high = np.percentile(means, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def holm(p_values: object) -> np.ndarray:
    """Holm's step-down adjustment of p-values for several comparisons (each model against one baseline):
    the i-th smallest is multiplied by (m - i + 1), then made non-decreasing and capped at 1. It controls
    the chance of any false 'significant' among them, at no assumption about their dependence."""
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"holm: expected a 1-D array of p-values, got shape {p.shape}")
    order = np.argsort(p, kind="stable")
    scaled = p[order] * (len(p) - np.arange(len(p)))
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return adjusted
