"""Training negative samplers (uniform, popularity) and the fixed evaluation negatives."""

import numpy as np
import pandas as pd
import pytest

import registry
from bench.data import eval_negatives
from bench.data.eval_negatives import sample_eval_negatives
from bench.data.pipeline import prepare
from bench.data.types import ColumnSchema, DatasetFrames

SCHEMA = [ColumnSchema("user_id", "user", "label", is_id=True), ColumnSchema("item_id", "item", "label", is_id=True)]


def frames_of(rows):
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    users = pd.DataFrame({"user_id": inter["user_id"].unique()})
    items = pd.DataFrame({"item_id": inter["item_id"].unique()})
    return DatasetFrames("hand-made", inter, users, items, SCHEMA)


def random_data(n_users, n_items, liked, rated, seed=0, fan=False):
    """Each pair rated with probability `rated`, liked (5 stars, else 1) with `liked`; user 0 a fan of all."""
    rng = np.random.default_rng(seed)
    likes = rng.random((n_users, n_items)) < liked
    likes |= np.eye(n_users, n_items, dtype=bool)  # every item liked by someone
    likes[0] |= fan
    u, i = np.nonzero(likes | (rng.random((n_users, n_items)) < rated))
    ratings = np.where(likes[u, i], 5, 1)
    times = rng.permutation(len(u))
    return prepare(frames_of(list(zip(u, i, ratings, times, strict=True))))


def skewed():
    """Item k is liked by k users (k = 1..12), each user likes few items: popularity varies 12-fold."""
    rows = [(f"u{k}-{j}", k, 5, j) for k in range(1, 13) for j in range(k)]
    return prepare(frames_of(rows))


@pytest.fixture(scope="module")
def data():
    """Dense: every user rated every item, most liked; user 0 (row 1) likes them all."""
    return random_data(n_users=20, n_items=15, liked=0.7, rated=1.0, fan=True)


@pytest.mark.parametrize("name", ["uniform", "popularity"])
def test_negatives_are_pool_items_never_training_positives(data, name):
    sampler = registry.create("sampler", name, num_negatives=3, seed=1).fit(data)
    n_pos = len(data.train)
    for epoch in range(30):
        s = sampler.sample(epoch)
        users, items = data.train.users[s.positives.numpy()[n_pos:]], s.items.numpy()[n_pos:]
        assert ((items >= 1) & (items < data.n_items)).all()
        assert not data.train_csr.contains(users, items).any()


@pytest.mark.parametrize("name", ["uniform", "popularity"])
def test_validation_and_test_items_may_be_training_negatives(data, name):
    # user row 1 (raw id 0) likes every item: only its val and test items are left to draw
    sampler = registry.create("sampler", name, num_negatives=4).fit(data)
    held_out = {int(data.val.items[data.val.users == 1][0]), int(data.test.items[data.test.users == 1][0])}
    drawn = set()
    for epoch in range(10):
        s = sampler.sample(epoch)
        users = data.train.users[s.positives.numpy()]
        drawn |= set(s.items.numpy()[len(data.train):][users[len(data.train):] == 1].tolist())
    assert drawn == held_out


@pytest.mark.parametrize("name", ["uniform", "popularity"])
def test_exclude_held_out_never_draws_validation_or_test_items(sparse, name):
    """The notebook's (leaky) protocol, on request only: each user's held-out items are never negatives."""
    held_out = {(int(u), int(i)) for split in (sparse.val, sparse.test)
                for u, i in zip(split.users, split.items, strict=True)}
    for exclude, expect_held_out in ((True, False), (False, True)):
        sampler = registry.create("sampler", name, num_negatives=8, seed=3, exclude_held_out=exclude).fit(sparse)
        drawn = set()
        for epoch in range(20):
            s, n_pos = sampler.sample(epoch), len(sparse.train)
            users = sparse.train.users[s.positives.numpy()]
            drawn |= set(zip(users[n_pos:].tolist(), s.items.numpy()[n_pos:].tolist(), strict=True))
        assert bool(drawn & held_out) == expect_held_out
        assert not any(sparse.train_csr.contains(np.array([u]), np.array([i]))[0] for u, i in drawn)


def test_exclude_held_out_leaves_a_fan_of_every_item_no_negative(data):
    # user row 1 likes every item: without its val and test items nothing is left to draw
    with pytest.raises(ValueError, match=r"user row 1 \(raw id 0\) has positives on all"):
        registry.create("sampler", "uniform", exclude_held_out=True).fit(data)


def test_layout_positives_then_k_negatives_each(data):
    k = 4
    s = registry.create("sampler", "uniform", num_negatives=k).fit(data).sample(0)
    n_pos = len(data.train)
    assert len(s) == (1 + k) * n_pos
    assert s.labels[:n_pos].eq(1).all() and s.labels[n_pos:].eq(0).all()
    assert s.positives[:n_pos].numpy().tolist() == list(range(n_pos))  # each positive once, in order
    assert s.items[:n_pos].numpy().tolist() == data.train.items.tolist()
    assert s.positives[n_pos:].numpy().tolist() == np.repeat(np.arange(n_pos), k).tolist()  # then k negatives each


@pytest.mark.parametrize("name", ["uniform", "popularity"])
def test_redrawn_each_epoch_and_reproducible_per_seed(name):
    data = skewed()
    a = registry.create("sampler", name, seed=3).fit(data)
    b = registry.create("sampler", name, seed=3).fit(data)
    c = registry.create("sampler", name, seed=4).fit(data)
    assert np.array_equal(a.sample(5).items.numpy(), b.sample(5).items.numpy())
    assert not np.array_equal(a.sample(5).items.numpy(), a.sample(6).items.numpy())
    assert not np.array_equal(a.sample(5).items.numpy(), c.sample(5).items.numpy())


def negative_counts(name, data, epochs=20, **options):
    sampler = registry.create("sampler", name, num_negatives=10, **options).fit(data)
    n_pos = len(data.train)
    drawn = np.concatenate([sampler.sample(e).items.numpy()[n_pos:] for e in range(epochs)])
    return np.bincount(drawn, minlength=data.n_items)


def test_popularity_sampler_skews_toward_popular_items():
    data = skewed()
    counts = data.item_counts()
    most, least = int(np.argmax(counts)), int(np.argmin(np.where(counts > 0, counts, counts.max() + 1)))
    uniform, popular = negative_counts("uniform", data), negative_counts("popularity", data, alpha=1.0)
    assert popular[most] > 5 * popular[least]  # 12x the training count -> ~12x the draws
    assert popular[most] > 1.5 * uniform[most]  # 12/78 of the mass instead of 1/12
    assert uniform[most] < 2 * uniform[least]


def test_popularity_alpha_zero_is_uniform_and_unpopular_items_need_alpha_zero():
    # 'v' and 'w' are liked only as u1's validation and test items: no training count
    data = prepare(frames_of([("u1", "x", 5, 1), ("u1", "v", 5, 2), ("u1", "w", 5, 3), ("u2", "y", 5, 1)]))
    zero = np.flatnonzero(data.item_counts() == 0)[1:]  # row 0 aside
    assert len(zero) == 2
    assert negative_counts("popularity", data, alpha=0.75)[zero].sum() == 0
    assert (negative_counts("popularity", data, alpha=0.0)[zero] > 0).all()


def test_user_covering_the_pool_is_an_error_naming_the_user():
    data = prepare(frames_of([("alice", "x", 5, 1), ("alice", "y", 5, 2), ("bob", "x", 5, 1)]))
    with pytest.raises(ValueError, match=r"user row 1 \(raw id 'alice'\) has training positives on all 2 items"):
        registry.create("sampler", "uniform").fit(data)
    # popularity can draw only trained items: bob's x is all there is once v/w have no training count
    data = prepare(frames_of([("u1", "x", 5, 1), ("u1", "v", 5, 2), ("u1", "w", 5, 3), ("bob", "x", 5, 1)]))
    registry.create("sampler", "uniform").fit(data)
    with pytest.raises(ValueError, match=r"raw id 'bob'"):
        registry.create("sampler", "popularity").fit(data)


def test_sampler_option_errors():
    with pytest.raises(TypeError, match=r"unknown options \['alpha'\]; known: exclude_held_out"):
        registry.create("sampler", "uniform", alpha=0.5)
    with pytest.raises(TypeError, match=r"unknown options \['beta'\]; known: alpha, exclude_held_out"):
        registry.create("sampler", "popularity", beta=0.5)
    with pytest.raises(ValueError, match="exclude_held_out must be true or false"):
        registry.create("sampler", "uniform", exclude_held_out="yes")
    with pytest.raises(ValueError, match="alpha"):
        registry.create("sampler", "popularity", alpha=-1)
    with pytest.raises(ValueError, match="num_negatives"):
        registry.create("sampler", "uniform", num_negatives=0)
    with pytest.raises(RuntimeError, match="fit"):
        registry.create("sampler", "uniform").sample(0)


# --- evaluation negatives ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def sparse():
    """Each user rated about a third of 300 items, liked about a tenth."""
    return random_data(n_users=40, n_items=300, liked=0.1, rated=0.3, seed=2)


def test_eval_negatives_distinct_unseen_pool_items(sparse):
    users = np.arange(1, sparse.n_users)
    eligible = (sparse.n_items - 1) - sparse.seen_csr.counts()[users]
    n = int(eligible.min())  # the tightest user gets every item it has not seen
    neg = sample_eval_negatives(sparse, users, n=n, seed=0)
    assert neg.shape == (len(users), n) and neg.dtype == np.int64
    assert ((neg >= 1) & (neg < sparse.n_items)).all()
    assert all(len(set(row)) == n for row in neg.tolist())
    assert not sparse.seen_csr.contains(users[:, None], neg).any()


def test_eval_negatives_fixed_by_seed_and_per_user(sparse, monkeypatch):
    users = np.arange(1, sparse.n_users)
    first = sample_eval_negatives(sparse, users, n=30, seed=7)
    assert np.array_equal(first, sample_eval_negatives(sparse, users, n=30, seed=7))
    assert not np.array_equal(first, sample_eval_negatives(sparse, users, n=30, seed=8))
    # a user's negatives do not depend on who else is asked for, nor on the chunking
    assert np.array_equal(sample_eval_negatives(sparse, users[::-1][:5], n=30, seed=7), first[::-1][:5])
    monkeypatch.setattr(eval_negatives, "CHUNK_ELEMENTS", 1)
    assert np.array_equal(sample_eval_negatives(sparse, users, n=30, seed=7), first)


def test_eval_negatives_too_few_unseen_items_names_the_user():
    data = prepare(frames_of([("ann", "x", 5, 1), ("ann", "y", 5, 2), ("ann", "z", 1, 3),
                              ("bo", "x", 5, 1), ("bo", "w", 5, 2)]))
    # ann saw x, y, z: only w is left
    assert sample_eval_negatives(data, np.array([1]), n=1).tolist() == [[data.item_ids.tolist().index("w")]]
    with pytest.raises(ValueError, match=r"user row 1 \(raw id 'ann'\) has only 1 unseen pool items, fewer than n=2"):
        sample_eval_negatives(data, np.array([1, 2]), n=2)
    # allow_fewer (the evaluator's choice): the short user gets every unseen item, padded with 0
    w = data.item_ids.tolist().index("w")
    padded = sample_eval_negatives(data, np.array([1, 2]), n=2, allow_fewer=True)
    assert padded[0].tolist() == [w, 0]
    ids = data.item_ids.tolist()
    assert padded[1].tolist() == [ids.index("y"), 0]  # pool is x, y, w (z was never liked); bo saw x, w


def test_eval_negatives_allow_fewer_keeps_full_rows_intact(sparse):
    users = np.arange(1, sparse.n_users)
    eligible = (sparse.n_items - 1) - sparse.seen_csr.counts()[users]
    n = int(eligible.max())  # every user but the loosest is short
    neg = sample_eval_negatives(sparse, users, n=n, seed=0, allow_fewer=True)
    assert ((neg != 0).sum(axis=1) == np.minimum(eligible, n)).all()
    real = neg != 0
    assert not sparse.seen_csr.contains(np.broadcast_to(users[:, None], neg.shape)[real], neg[real]).any()
    n_small = int(eligible.min())
    assert np.array_equal(sample_eval_negatives(sparse, users, n=n_small, seed=3, allow_fewer=True),
                          sample_eval_negatives(sparse, users, n=n_small, seed=3))
