"""The paired sign-flip permutation test: calibrated, exact-ish against enumeration, deterministic."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from bench.eval.stats import paired_permutation_test


def exact_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p over every one of the 2^n sign patterns (small n only)."""
    diff = a - b
    observed = abs(diff.sum())
    sums = [abs(np.dot(signs, diff)) for signs in itertools.product((-1, 1), repeat=len(diff))]
    return float(np.mean([s >= observed - 1e-12 for s in sums]))


def test_clear_shift_gives_a_small_p():
    rng = np.random.default_rng(0)
    b = rng.random(300)
    a = b + 0.05 + rng.normal(0, 0.05, 300)
    assert paired_permutation_test(a, b, n_permutations=2000) == pytest.approx(1 / 2001)


def test_pure_noise_gives_a_large_p():
    rng = np.random.default_rng(1)
    a, b = rng.random(300), rng.random(300)
    assert paired_permutation_test(a, b, n_permutations=2000) > 0.2


def test_identical_inputs_give_one():
    x = np.random.default_rng(2).random(50)
    assert paired_permutation_test(x, x.copy()) == 1.0
    assert paired_permutation_test(np.zeros(10), np.zeros(10), n_permutations=99) == 1.0


def test_matches_exact_enumeration_on_small_samples():
    rng = np.random.default_rng(3)
    for _ in range(3):
        a, b = rng.integers(0, 5, 10).astype(float), rng.integers(0, 5, 10).astype(float)
        assert paired_permutation_test(a, b, n_permutations=20000) == pytest.approx(exact_p(a, b), abs=0.015)


def test_deterministic_by_seed_symmetric_and_chunk_independent(monkeypatch):
    rng = np.random.default_rng(4)
    a, b = rng.random(41), rng.random(41) + 0.05
    p = paired_permutation_test(a, b, n_permutations=5000, seed=9)
    assert p == paired_permutation_test(a, b, n_permutations=5000, seed=9)
    assert p == paired_permutation_test(b, a, n_permutations=5000, seed=9)  # two-sided
    assert p != paired_permutation_test(a, b, n_permutations=5000, seed=10)
    assert 1 / 5001 <= p <= 1.0
    monkeypatch.setattr("bench.eval.stats.SIGN_BLOCK", 41 * 7)  # many small chunks, ragged last one
    assert paired_permutation_test(a, b, n_permutations=5000, seed=9) == p


@pytest.mark.parametrize(
    ("a", "b", "kwargs", "message"),
    [
        ([1.0, 2.0], [1.0], {}, "aligned"),
        ([], [], {}, "no pairs"),
        ([1.0, float("nan")], [1.0, 2.0], {}, "NaN"),
        ([1.0, 2.0], [1.0, 2.0], {"n_permutations": 0}, "n_permutations"),
    ],
)
def test_bad_input_is_a_clear_error(a, b, kwargs, message):
    with pytest.raises(ValueError, match=message):
        paired_permutation_test(a, b, **kwargs)


def test_bootstrap_intervals_cover_the_true_mean_at_about_the_stated_rate():
    """Per-user 0/1 hits (HR-like) with a per-seed shift, 942 users, 3 seeds: the 95% interval over users
    and seeds covers the true mean in about 95% of 300 simulated benchmarks."""
    from bench.eval.stats import bootstrap_interval

    rng = np.random.default_rng(7)
    true_mean, covered, trials = 0.13, 0, 300
    for t in range(trials):
        seed_shift = rng.normal(0, 0.005, size=(3, 1))
        values = (rng.random((1, 942)) < true_mean + seed_shift).astype(float)  # the users' hits, per seed
        low, high = bootstrap_interval(values, n_boot=400, seed=t)
        covered += low <= true_mean <= high
    assert 0.90 <= covered / trials <= 0.99, covered / trials


def test_bootstrap_interval_width_follows_the_users_standard_error():
    from bench.eval.stats import bootstrap_interval

    values = (np.random.default_rng(0).random((1, 942)) < 0.13).astype(float)
    low, high = bootstrap_interval(values)
    se = values.std() / np.sqrt(942)  # about 0.011: one test HR@10 on ML-100K's 942 users
    assert abs((high - low) / (2 * 1.96) - se) < 0.15 * se and low < values.mean() < high
    assert bootstrap_interval(values) == (low, high)  # deterministic by seed


def test_holm_multiplies_the_ith_smallest_by_m_minus_i_plus_1_monotone_and_capped():
    from bench.eval.stats import holm

    p = np.array([0.01, 0.04, 0.03, 0.005])
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> monotone: 0.02, 0.03, 0.06, 0.06
    assert np.allclose(holm(p), [0.03, 0.06, 0.06, 0.02])
    assert np.allclose(holm([0.5, 0.9]), [1.0, 1.0]) and np.allclose(holm([0.2]), [0.2])
