"""Beyond-accuracy metrics: coverage, Gini, average popularity and novelty of every test user's top-K list, each
checked against a brute-force computation; the evaluator's top-K lists against a brute-force ranking; stored with
a run and selectable in the tables."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from bench.config import EvalConfig, ExperimentConfig, ModelConfig, TrainConfig
from bench.eval.beyond import beyond_accuracy, beyond_names
from bench.eval.evaluator import evaluate
from bench.eval.metrics import top_items
from bench.results import tables
from bench.results.store import ResultStore
from bench.runner import build_model, run_benchmark


def brute_gini(counts):
    """Gini as the relative mean absolute difference over all pairs: sum |x_i - x_j| / (2 n^2 mean)."""
    n = len(counts)
    return sum(abs(a - b) for a in counts for b in counts) / (2 * n * n * (sum(counts) / n))


def test_each_metric_equals_a_brute_force_computation():
    popularity = np.array([0, 9, 5, 5, 1, 0, 3, 2])  # item rows 1..7 form the pool; item 5 never trained on
    top = np.array([[1, 2, 3], [1, 5, 0], [2, 6, 1], [7, 4, 2]])  # user 1 had two candidates only (0 pads)
    metrics, per_user = beyond_accuracy(top, popularity, ks=(2, 3))
    assert list(metrics) == beyond_names((2, 3))
    total = popularity.sum()
    for k in (2, 3):
        lists = [[item for item in row[:k] if item] for row in top]
        recommended = [item for row in lists for item in row]
        assert metrics[f"Coverage@{k}"] == pytest.approx(len(set(recommended)) / 7)
        exposure = [recommended.count(item) for item in range(1, 8)]
        assert metrics[f"Gini@{k}"] == pytest.approx(brute_gini(exposure))
        average = [sum(popularity[i] for i in row) / len(row) for row in lists]
        novelty = [sum(-math.log2(max(popularity[i], 1) / total) for i in row) / len(row) for row in lists]
        assert per_user[f"AvgPop@{k}"] == pytest.approx(average) and per_user[f"Novelty@{k}"] == pytest.approx(novelty)
        assert metrics[f"AvgPop@{k}"] == pytest.approx(np.mean(average))
        assert metrics[f"Novelty@{k}"] == pytest.approx(np.mean(novelty))


def test_gini_is_zero_for_equal_exposure_and_high_when_one_item_takes_everything():
    metrics, _ = beyond_accuracy(np.array([[1, 2], [3, 4]]), np.ones(5), ks=(2,))
    assert metrics["Gini@2"] == 0.0 and metrics["Coverage@2"] == 1.0
    metrics, _ = beyond_accuracy(np.array([[1], [1], [1]]), np.ones(5), ks=(1,))
    assert metrics["Gini@1"] == pytest.approx(3 / 4) and metrics["Coverage@1"] == pytest.approx(1 / 4)


def brute_top(scores, candidates, k):
    """Each row's candidates sorted by (-score, column), the first k, 0-padded."""
    out = []
    for row, allowed in zip(scores.tolist(), candidates.tolist(), strict=True):
        ranked = sorted((c for c in range(len(row)) if allowed[c]), key=lambda c: (-row[c], c))[:k]
        out.append(ranked + [0] * (k - len(ranked)))
    return out


def test_top_items_orders_by_score_then_lower_item_even_when_a_tie_straddles_the_cut():
    generator = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 4, (50, 30), generator=generator).float()  # many ties at every place
    candidates = torch.rand(50, 30, generator=generator) > 0.3
    candidates[:, 0] = False
    candidates[7] = False
    candidates[7, [3, 9]] = True  # fewer candidates than k
    for k in (1, 5, 12):
        items, values = top_items(scores, candidates, k)
        assert items.tolist() == brute_top(scores, candidates, k)
        assert torch.equal(values[items > 0], scores.gather(1, items)[items > 0])


@pytest.mark.parametrize("name", ["mostpop", "itemknn", "fm"])
def test_the_evaluators_top_lists_are_the_brute_force_ranking_and_accuracy_is_unchanged(small_data, name):
    torch.manual_seed(0)
    model = build_model(ModelConfig(name, embed_dim=8), small_data).eval()
    config = EvalConfig(ks=(5, 10))
    plain = evaluate(model, small_data, "test", config)
    ranked = evaluate(model, small_data, "test", config, top=True, batch_users=7)  # chunks end mid-way
    for metric, values in plain.per_user.items():
        assert np.array_equal(ranked.per_user[metric], values) and ranked.metrics[metric] == plain.metrics[metric]
    assert plain.top is None and ranked.top.shape == (len(small_data.test), 10)
    states = torch.from_numpy(np.asarray(small_data.test.states, np.int64))
    with torch.no_grad():
        if model.trainable:
            scores = model.item_scorer(small_data.item_features)(small_data.user_rows()(states))
        else:
            scores = model.score(states, torch.arange(small_data.n_items))
    candidates = torch.ones(scores.shape, dtype=torch.bool)
    for csr in small_data.eval_masks("test"):
        rows, items = csr.rows_pairs(small_data.test.users)
        candidates[torch.from_numpy(rows), torch.from_numpy(items)] = False
    candidates[:, 0] = False
    candidates[torch.arange(len(states)), torch.from_numpy(small_data.test.items)] = True
    assert ranked.top.tolist() == brute_top(scores, candidates, 10)
    metrics, per_user = beyond_accuracy(ranked.top, small_data.item_counts(), (5, 10))
    assert {m: ranked.metrics[m] for m in metrics} == metrics
    assert all(np.array_equal(ranked.per_user[m], v) for m, v in per_user.items())


def test_the_sampled_protocol_has_no_full_list_and_no_beyond_accuracy_metric(small_data):
    model = build_model(ModelConfig("mostpop"), small_data)
    result = evaluate(model, small_data, "test", EvalConfig(protocol="sampled", eval_negatives=20), top=True)
    assert result.top is None and not set(result.metrics) & set(beyond_names((5, 10, 20)))


@pytest.fixture(scope="module")
def stored(small_data, tmp_path_factory):
    """Finished runs of two models, as the store keeps them."""
    store = ResultStore(tmp_path_factory.mktemp("beyond"))
    config = ExperimentConfig(train=TrainConfig(epochs=1, batch_size=512), eval=EvalConfig(ks=(5, 10)),
                              models=(ModelConfig("mostpop"), ModelConfig("fm", embed_dim=8)))
    outcome = run_benchmark(config, store, data=small_data, log=lambda line: None, checkpoints=False)
    return store.runs(ids=outcome.finished)


def test_a_run_stores_them_with_per_user_values_where_a_user_has_one(stored):
    for run in stored:
        assert set(beyond_names((5, 10))) <= set(run.metrics)
        assert {"AvgPop@10", "Novelty@10"} <= set(run.per_user) and "Coverage@10" not in run.per_user
        assert run.per_user["AvgPop@10"].shape == run.users.shape
        assert run.metrics["AvgPop@10"] == pytest.approx(run.per_user["AvgPop@10"].mean())
        assert 0 < run.metrics["Coverage@10"] <= 1 and 0 <= run.metrics["Gini@10"] < 1


def test_the_tables_keep_the_default_columns_and_show_them_when_asked(stored):
    assert tables.display_metrics(stored) == ["HR@10", "NDCG@10", "MRR"]
    names = tables.metric_names(stored)
    assert names.index("MRR") < names.index("Coverage@5") and names[-1] == "Novelty@10"
    board = tables.leaderboard(stored, "github", ["Coverage@10", "AvgPop@10"])
    header = board.splitlines()[0]
    assert "Coverage@10" in header and "AvgPop@10" in header and "HR@10" not in header
    rows = {row["model"]: row for row in json.loads(tables.leaderboard(stored, "json"))}
    assert rows["mostpop"]["Gini@10"]["mean"] == next(r for r in stored if r.model == "mostpop").metrics["Gini@10"]
    assert "ci_low" in rows["fm"]["Novelty@10"] and "ci_low" not in rows["fm"]["Coverage@10"]  # per run: no interval
    assert "Coverage@10 mean" in tables.leaderboard(stored, "csv").splitlines()[0]


def test_no_list_is_more_popular_than_mostpops(stored):
    """MostPop's list is each user's most popular candidates: no model's average popularity can pass it."""
    mostpop, fm = sorted(stored, key=lambda r: r.model != "mostpop")
    assert np.array_equal(mostpop.users, fm.users)
    assert (mostpop.per_user["AvgPop@10"] >= fm.per_user["AvgPop@10"]).all()
    assert mostpop.metrics["AvgPop@10"] > fm.metrics["AvgPop@10"]


def test_a_bad_top_array_is_refused():
    with pytest.raises(ValueError, match="item rows in 0..3"):
        beyond_accuracy(np.array([[1, 4]]), np.ones(4), ks=(2,))
    with pytest.raises(ValueError, match="expected one or more positive integer cutoffs"):
        beyond_accuracy(np.array([[1, 2]]), np.ones(4), ks=(0,))
