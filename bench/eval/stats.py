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
