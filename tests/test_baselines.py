"""The closed-form baselines against direct computations: EASE against a numpy solve, ItemKNN against a
brute-force cosine; memory refused by size; fit time recorded."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import SYNTH

from bench.cli import main
from bench.data.features import FeatureSpec
from bench.data.types import Csr, InteractionData, Pairs
from bench.nn.item_item import require_memory
from bench.nn.model import create_model
from bench.results.store import ResultStore

N_USERS, N_ITEMS = 9, 8


def random_data(seed: int = 0) -> tuple[InteractionData, np.ndarray]:
    """Users 1..8 with random training positives (no history: a state is its user); X the 0/1 matrix."""
    rng = np.random.default_rng(seed)
    x = (rng.random((N_USERS, N_ITEMS)) < 0.4).astype(np.float64)
    x[0], x[:, 0] = 0, 0  # padding rows
    users, items = np.nonzero(x)
    spec = FeatureSpec.build([dict(name="user_id", side="user", vocab_size=N_USERS, is_id=True),
                              dict(name="item_id", side="item", vocab_size=N_ITEMS, is_id=True)])
    csr = Csr.from_pairs(users, items, N_USERS, N_ITEMS)
    none = Pairs(np.zeros(0, np.int64), np.zeros(0, np.int64))
    data = InteractionData(spec, torch.arange(N_USERS)[:, None], torch.arange(N_ITEMS)[:, None],
                           Pairs(users, items), none, none, csr, csr, np.arange(N_USERS), np.arange(N_ITEMS))
    return data, x


@pytest.mark.parametrize("heavy, pair_chunk", [(1.0, 1 << 22), (1.0, 1), (1.0, 7), (0.0, 1 << 22), (0.5, 5)])
def test_the_gram_matrix_equals_xtx_whichever_way_each_user_is_added(heavy, pair_chunk, monkeypatch):
    """Light users add their item pairs (in chunks of whole users), heavy ones dense rows: the same X^T X."""
    import bench.nn.item_item as item_item

    monkeypatch.setattr(item_item, "HEAVY_USER", heavy)  # 1.0: all pairs; 0.0: all dense; 0.5: a mix
    monkeypatch.setattr(item_item, "PAIR_CHUNK", pair_chunk)
    data, x = random_data(2)
    counts = data.train_csr.counts()
    if heavy == 0.5:
        assert 0 < (counts >= heavy * N_ITEMS).sum() < (counts > 0).sum()  # both ways at once
    for dtype in (torch.float32, torch.float64):
        gram = item_item.item_gram(data, dtype)
        assert gram.dtype == dtype and np.array_equal(gram.numpy(), x.T @ x)


def test_ease_equals_a_direct_numpy_solve():
    data, x = random_data()
    reg = 3.0
    model = create_model("ease", data.spec, reg=reg)
    model.fit(data)
    p = np.linalg.inv(x.T @ x + reg * np.eye(N_ITEMS))
    b = np.eye(N_ITEMS) - p / np.diag(p)  # B = I - P diag(1 / diag(P))
    assert np.allclose(np.diag(b), 0)
    assert np.allclose(model.matrix.numpy(), b, atol=1e-6)
    scores = model.score(torch.arange(1, N_USERS), torch.arange(N_ITEMS))
    assert np.allclose(scores.numpy(), x[1:] @ b, atol=1e-5)


@pytest.mark.parametrize("k, shrink, columns", [(N_ITEMS, 0.0, 1024), (3, 2.0, 1024), (3, 2.0, 3)])
def test_itemknn_equals_a_brute_force_cosine(k, shrink, columns, monkeypatch):
    import plugins.models.itemknn as itemknn

    monkeypatch.setattr(itemknn, "COLUMNS", columns)  # 3: the columns in chunks, as at scale
    data, x = random_data(1)
    model = create_model("itemknn", data.spec, k=k, shrink=shrink)
    model.fit(data)
    sim = np.zeros((N_ITEMS, N_ITEMS))
    for i in range(N_ITEMS):
        for j in range(N_ITEMS):
            both, norm = (x[:, i] * x[:, j]).sum(), np.sqrt(x[:, i].sum() * x[:, j].sum())
            sim[i, j] = 0.0 if i == j or norm + shrink == 0 else both / (norm + shrink)
    for j in range(N_ITEMS):  # each item keeps its k most similar items
        if k < N_ITEMS:
            sim[np.argsort(-sim[:, j], kind="stable")[k:], j] = 0.0
    got = model.matrix.numpy()
    assert np.allclose(got, sim, atol=1e-6)
    assert ((got > 0).sum(axis=0) <= k).all()
    scores = model.score(torch.arange(1, N_USERS), torch.arange(N_ITEMS))
    assert np.allclose(scores.numpy(), x[1:] @ sim, atol=1e-5)


def test_a_dense_item_matrix_that_would_not_fit_is_refused_by_size():
    with pytest.raises(MemoryError, match=r"ease: 3 dense 10,000,000 x 10,000,000 item matrices \(float64\) need"):
        require_memory("ease", 10_000_000, copies=3, dtype=torch.float64)
    require_memory("ease", 1_000, copies=3, dtype=torch.float64)  # 24 MB: fine


def test_fitted_baselines_run_record_their_fit_time_and_beat_nothing_by_accident(tmp_path):
    res = CliRunner().invoke(main, ["run", "--models", "ease,itemknn,mostpop", "--baseline", "mostpop", *SYNTH,
                                    "--no-progress", "--results-dir", str(tmp_path), "--format", "json"])
    assert res.exit_code == 0, res.output
    runs = {r.model: r for r in ResultStore(tmp_path).runs()}
    assert runs["ease"].timings["fit_s"] > 0 and runs["ease"].timings["epochs"] == 0
    assert runs["ease"].config["model"]["params"] == {} and runs["itemknn"].status == "finished"
