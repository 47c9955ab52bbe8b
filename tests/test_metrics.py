"""The vectorised metrics against a plain per-user textbook implementation, and the tie policies."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench.eval.metrics import TIE_POLICIES, metric_names, rank_counts, ranking_metrics

KS = (1, 3, 5, 10, 20)


def textbook(name: str, k: int | None, r: int) -> float:
    """One metric at 0-based position r, one relevant item."""
    if k is not None and r >= k:
        return 0.0
    if name in ("HR", "Recall"):
        return 1.0
    if name == "NDCG":
        return 1.0 / math.log2(r + 2)
    return 1.0 / (r + 1)  # MAP@K with one relevant item, and MRR


def reference(scores: np.ndarray, target: int, candidates: np.ndarray, policy: str) -> dict[str, float]:
    """Sort the candidates, find the held-out item's possible positions, average the textbook values."""
    mine = scores[target]
    ranked = sorted((scores[c] for c in range(len(scores)) if candidates[c] or c == target), reverse=True)
    first = ranked.index(mine)
    last = len(ranked) - 1 - ranked[::-1].index(mine)
    positions = {"expected": range(first, last + 1), "pessimistic": [last], "optimistic": [first]}[policy]
    out = {}
    for name in ("HR", "NDCG", "Recall", "MAP"):
        for k in KS:
            out[f"{name}@{k}"] = float(np.mean([textbook(name, k, r) for r in positions]))
    out["MRR"] = float(np.mean([textbook("MRR", None, r) for r in positions]))
    return out


@pytest.mark.parametrize("policy", TIE_POLICIES)
def test_metrics_match_textbook_reference_with_many_ties(policy):
    rng = np.random.default_rng(7)
    n_users, n_items = 60, 40
    scores = rng.integers(0, 5, size=(n_users, n_items)).astype(np.float32)  # five levels: ties everywhere
    target = rng.integers(0, n_items, size=n_users)
    candidates = rng.random((n_users, n_items)) < 0.8
    candidates[::7, target[::7]] = False  # a masked target column still competes as the answer

    greater, ties = rank_counts(torch.from_numpy(scores), torch.from_numpy(target),
                                torch.from_numpy(candidates))
    got = ranking_metrics(greater, ties, KS, policy)

    assert list(got) == metric_names(KS)
    assert ties.sum() > n_users  # the fixture really exercises ties
    for u in range(n_users):
        want = reference(scores[u], int(target[u]), candidates[u], policy)
        for name, value in want.items():
            assert got[name][u] == pytest.approx(value, abs=1e-12), (name, u)


def test_expected_policy_over_long_tie_ranges_matches_brute_force_average():
    greater = np.array([0, 3, 9, 15, 400])
    ties = np.array([999, 1000, 0, 4, 2500])
    got = ranking_metrics(greater, ties, ks=(10,), policy="expected")
    for u in range(len(greater)):
        positions = range(greater[u], greater[u] + ties[u] + 1)
        assert got["NDCG@10"][u] == pytest.approx(np.mean([textbook("NDCG", 10, r) for r in positions]))
        assert got["MAP@10"][u] == pytest.approx(np.mean([textbook("MAP", 10, r) for r in positions]))
        assert got["MRR"][u] == pytest.approx(np.mean([textbook("MRR", None, r) for r in positions]))


@pytest.mark.parametrize("n_candidates", [10, 37, 1682])
def test_constant_scores_give_hr_equal_to_k_over_candidates(n_candidates):
    scores = torch.zeros(3, n_candidates)
    greater, ties = rank_counts(scores, torch.tensor([0, 5, n_candidates - 1]))
    assert ties.tolist() == [n_candidates - 1] * 3
    got = ranking_metrics(greater, ties, ks=(10,))
    np.testing.assert_allclose(got["HR@10"], min(10, n_candidates) / n_candidates)
    assert ranking_metrics(greater, ties, ks=(10,), policy="optimistic")["HR@10"].tolist() == [1.0] * 3


def test_policies_are_ordered_pessimistic_expected_optimistic():
    rng = np.random.default_rng(3)
    greater, ties = rng.integers(0, 30, size=500), rng.integers(0, 30, size=500)
    low, mid, high = (ranking_metrics(greater, ties, policy=p) for p in ("pessimistic", "expected", "optimistic"))
    for name in mid:
        assert np.all(low[name] <= mid[name] + 1e-15), name
        assert np.all(mid[name] <= high[name] + 1e-15), name
    untied = ties == 0
    for name in mid:
        np.testing.assert_array_equal(low[name][untied], high[name][untied])


def test_exact_values_at_known_ranks():
    got = ranking_metrics(np.array([0, 4, 9, 10, 499]), np.zeros(5, dtype=np.int64), ks=(10,))
    np.testing.assert_allclose(got["HR@10"], [1, 1, 1, 0, 0])
    np.testing.assert_allclose(got["Recall@10"], got["HR@10"])
    np.testing.assert_allclose(got["NDCG@10"], [1, 1 / math.log2(6), 1 / math.log2(11), 0, 0])
    np.testing.assert_allclose(got["MAP@10"], [1, 1 / 5, 1 / 10, 0, 0])
    np.testing.assert_allclose(got["MRR"], [1, 1 / 5, 1 / 10, 1 / 11, 1 / 500])  # no cutoff
    assert all(v.dtype == np.float64 for v in got.values())


def test_rank_counts_exclude_the_target_and_masked_columns():
    scores = torch.tensor([[5.0, 3.0, 3.0, 3.0, 9.0, 1.0]])
    mask = torch.tensor([[True, True, True, False, False, True]])
    greater, ties = rank_counts(scores, torch.tensor([1]), mask)
    assert (greater.item(), ties.item()) == (1, 1)  # 5.0 above; one other 3.0 left after masking
    greater, ties = rank_counts(scores, torch.tensor([1]))
    assert (greater.item(), ties.item()) == (2, 2)


def test_nan_scores_are_an_error_not_a_perfect_rank():
    with pytest.raises(ValueError, match="NaN"):
        rank_counts(torch.tensor([[float("nan"), 1.0, 2.0]]), torch.tensor([0]))
    with pytest.raises(ValueError, match="NaN"):
        rank_counts(torch.tensor([[0.5, float("nan"), 2.0]]), torch.tensor([0]))
    # a NaN in a column that does not compete is harmless
    greater, _ = rank_counts(torch.tensor([[0.5, float("nan"), 2.0]]), torch.tensor([0]),
                             torch.tensor([[True, False, True]]))
    assert greater.item() == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"greater": [1, 2], "ties": [0]}, "aligned"),
        ({"greater": [-1], "ties": [0]}, ">= 0"),
        ({"greater": [1.5], "ties": [0]}, "integer"),
        ({"greater": [1], "ties": [0], "policy": "random"}, "expected, pessimistic, optimistic"),
        ({"greater": [1], "ties": [0], "ks": (0, 10)}, "positive integer"),
        ({"greater": [1], "ties": [0], "ks": ()}, "positive integer"),
    ],
)
def test_bad_input_is_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ranking_metrics(**kwargs)
