"""The temporal leave-one-out split and prepare(): hand-made frames, then the real ML-100K counts."""

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import require_ml100k

import registry
from bench.data.pipeline import prepare
from bench.data.split import temporal_split
from bench.data.types import ColumnSchema, DatasetFrames


def interactions(rows):
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])


def split_of(frame, **kw):
    out = temporal_split(frame, **kw)
    return {(u, i): s for u, i, s in out[["user_id", "item_id", "split"]].itertuples(index=False)}


def test_last_positive_is_test_second_last_is_val():
    frame = interactions([(1, 10, 5, 300), (1, 11, 4, 100), (1, 12, 5, 200), (1, 13, 4, 400), (1, 14, 2, 999)])
    assert split_of(frame) == {(1, 11): "train", (1, 12): "train", (1, 10): "val", (1, 13): "test"}


def test_timestamp_ties_are_broken_by_file_order():
    tied = [(7, 1, 5, 100), (7, 2, 4, 200), (7, 3, 5, 200)]
    assert split_of(interactions(tied)) == {(7, 1): "train", (7, 2): "val", (7, 3): "test"}
    swapped = [tied[0], tied[2], tied[1]]  # same data, the tied rows in the other file order
    assert split_of(interactions(swapped)) == {(7, 1): "train", (7, 3): "val", (7, 2): "test"}


def test_a_pair_liked_twice_counts_once_at_its_last_time():
    # item 5 liked early and again last: an early copy left in train would leak the test answer
    frame = interactions([(1, 5, 5, 100), (1, 6, 4, 200), (1, 7, 5, 300), (1, 5, 4, 400)])
    out = temporal_split(frame)
    assert len(out) == 3
    assert split_of(frame) == {(1, 6): "train", (1, 7): "val", (1, 5): "test"}


def test_users_below_min_interactions_go_to_train():
    frame = interactions([(1, 1, 5, 1), (1, 2, 5, 2), (2, 1, 5, 1), (2, 2, 5, 2), (2, 3, 5, 3)])
    assert split_of(frame) == {(1, 1): "train", (1, 2): "train", (2, 1): "train", (2, 2): "val", (2, 3): "test"}
    assert split_of(frame, min_interactions=2)[(1, 2)] == "test"
    assert set(split_of(frame, min_interactions=4).values()) == {"train"}


def test_threshold_decides_the_positives():
    frame = interactions([(1, 1, 3, 1), (1, 2, 4, 2), (1, 3, 5, 3), (1, 4, 3.5, 4)])
    assert sorted(i for _, i in split_of(frame, min_interactions=5)) == [2, 3]
    assert sorted(i for _, i in split_of(frame, threshold=3, min_interactions=5)) == [1, 2, 3, 4]


def test_split_keeps_file_positions():
    frame = interactions([(2, 5, 5, 9), (1, 6, 1, 1), (1, 7, 5, 3)])
    out = temporal_split(frame)
    assert dict(zip(out["item_id"], out["position"], strict=True)) == {7: 2, 5: 0}


def test_threshold_without_positives_names_threshold_and_range():
    with pytest.raises(ValueError, match=r"threshold 6 leaves no positives: ratings range from 1(\.0)? to 5"):
        temporal_split(interactions([(1, 1, 1, 1), (1, 2, 5, 2)]), threshold=6)


def test_bad_interactions_are_clear_errors():
    with pytest.raises(ValueError, match=r"lacks columns \['timestamp'\]"):
        temporal_split(pd.DataFrame({"user_id": [1], "item_id": [1], "rating": [5]}))
    with pytest.raises(ValueError, match="row 1: rating 'five'"):
        temporal_split(interactions([(1, 1, 5, 1), (1, 2, "five", 2)]))
    with pytest.raises(ValueError, match="min_interactions must be >= 2"):
        temporal_split(interactions([(1, 1, 5, 1)]), min_interactions=1)


# --- prepare() on a hand-made dataset -----------------------------------------------------------

SCHEMA = [
    ColumnSchema("user_id", "user", "label", is_id=True),
    ColumnSchema("age", "user", "bucket", {"bins": [0, 18, 35, 100]}),
    ColumnSchema("item_id", "item", "label", is_id=True),
    ColumnSchema("genres", "item", "multihot", {"sep": "|"}),
]


def hand_made(**changes):
    inter = interactions([
        # user 30: four positives -> train, train, val, test; item 'd' is never liked -> not in the pool
        (30, "a", 5, 1), (30, "b", 4, 2), (30, "c", 5, 3), (30, "e", 4, 4), (30, "d", 1, 5),
        # user 10: two positives -> train only (below min_interactions), and a low rating on pool item 'b'
        (10, "c", 5, 1), (10, "a", 4, 2), (10, "b", 2, 3),
        # user 20: only low ratings -> dropped; item 'f' never liked -> not in the pool
        (20, "f", 2, 1), (20, "a", 3, 2),
    ])
    users = pd.DataFrame({"user_id": [20, 30, 10, 99], "age": [50, 40, 16, 20]})
    items = pd.DataFrame({"item_id": ["f", "e", "d", "c", "b", "a"],
                          "genres": ["X", "Y|X", "Z", "", "X|Z", "Y"]})
    parts = {"name": "toy", "interactions": inter, "users": users, "items": items, "schema": SCHEMA}
    return DatasetFrames(**{**parts, **changes})


@pytest.fixture
def toy():
    return prepare(hand_made())


def test_row_r_holds_id_r_and_row_zero_is_unknown(toy):
    for side, features in (("user", toy.user_features), ("item", toy.item_features)):
        col = toy.spec.id_field(side).column
        assert features.dtype == torch.int64
        assert features[:, col].tolist() == list(range(features.shape[0]))
        assert features[0].abs().sum() == 0
    assert toy.user_ids.tolist() == [None, 10, 30]  # user 20 has no positive, 99 no interaction
    assert toy.item_ids.tolist() == [None, "a", "b", "c", "e"]  # 'd' and 'f' were never liked


def test_shapes_and_spec(toy):
    assert [(f.name, f.side, f.vocab_size, f.max_len, f.column) for f in toy.spec] == [
        ("user_id", "user", 3, 1, 0), ("age", "user", 4, 1, 1),
        ("item_id", "item", 5, 1, 0), ("genres", "item", 4, 2, 1),
    ]
    assert tuple(toy.user_features.shape) == (3, 2) and tuple(toy.item_features.shape) == (5, 3)
    assert (toy.n_users, toy.n_items) == (3, 5)


def test_feature_rows_follow_their_raw_ids(toy):
    ages = {10: 1, 30: 3}  # 16 -> [0, 18), 40 -> [35, 100)
    assert [ages[u] for u in toy.user_ids[1:]] == toy.user_features[1:, 1].tolist()
    genre = {"X": 1, "Y": 2, "Z": 3}  # vocabulary of the kept items a..e
    expected = {"a": [2, 0], "b": [1, 3], "c": [0, 0], "e": [2, 1]}
    for row, raw in enumerate(toy.item_ids[1:], start=1):
        assert toy.item_features[row, 1:].tolist() == expected[raw]
    assert set(genre) == set(toy.info["encoders"]["genres"].classes)


def test_pairs_and_csrs(toy):
    def raw(pairs):
        return sorted(zip(toy.user_ids[pairs.users], toy.item_ids[pairs.items], strict=True))

    assert raw(toy.train) == [(10, "a"), (10, "c"), (30, "a"), (30, "b")]
    assert raw(toy.val) == [(30, "c")]
    assert raw(toy.test) == [(30, "e")]
    u30, u10 = 2, 1
    assert toy.train_csr.indices[toy.train_csr.indptr[u30]:toy.train_csr.indptr[u30 + 1]].tolist() == [1, 2]
    # seen: every interaction of kept users on pool items, any rating and split (user 10's 2-star 'b' too)
    assert toy.seen_csr.indices[toy.seen_csr.indptr[u30]:toy.seen_csr.indptr[u30 + 1]].tolist() == [1, 2, 3, 4]
    assert toy.seen_csr.indices[toy.seen_csr.indptr[u10]:toy.seen_csr.indptr[u10 + 1]].tolist() == [1, 2, 3]
    assert toy.seen_csr.counts()[0] == 0


def test_info_counts_and_encoders(toy):
    info = toy.info
    assert (info["n_positives"], info["n_users"], info["n_items"], info["n_users_eval"]) == (6, 2, 4, 1)
    assert (info["n_train"], info["n_val"], info["n_test"]) == (4, 1, 1)
    assert sorted(info["encoders"]) == ["age", "genres", "item_id", "user_id"]
    assert info["encoders"]["age"].transform(pd.Series([16])).tolist() == [1]


def test_field_dims_are_applied_and_checked():
    data = prepare(hand_made(), field_dims={"genres": 8})
    assert data.spec.field("genres").dim == 8 and data.spec.field("age").dim is None
    with pytest.raises(ValueError, match=r"unknown fields \['genre'\]"):
        prepare(hand_made(), field_dims={"genre": 8})


def test_prepare_errors_name_the_problem():
    frames = hand_made()
    with pytest.raises(ValueError, match=r"user_ids of the interactions are absent from the users frame, e.g. \[30\]"):
        prepare(hand_made(users=frames.users[frames.users.user_id != 30]))
    bad = [*SCHEMA[:1], ColumnSchema("age", "user", "bucket", {"edges": [0, 1]}), *SCHEMA[2:]]
    with pytest.raises(TypeError, match="column 'age': encoder 'bucket' rejects options"):
        prepare(hand_made(schema=bad))
    with pytest.raises(ValueError, match="lacks schema columns"):
        prepare(hand_made(schema=[*SCHEMA, ColumnSchema("zip", "user", "label")]))
    with pytest.raises(ValueError, match="exactly one item column as is_id"):
        prepare(hand_made(schema=[SCHEMA[0], SCHEMA[1], SCHEMA[3]]))
    with pytest.raises(ValueError, match="repeats item_id 'a'"):
        prepare(hand_made(items=pd.concat([frames.items, frames.items.tail(1)])))


# --- the real MovieLens-100K ------------------------------------------------------------------


@pytest.mark.integration
def test_ml100k_split_counts():
    frames = registry.create("dataset", "ml-100k", data_dir=require_ml100k()).load()
    split = temporal_split(frames.interactions, threshold=4.0, min_interactions=3)
    assert len(split) == 55_375
    val, test = split[split["split"] == "val"], split[split["split"] == "test"]
    assert len(val) == len(test) == 942
    assert (split.groupby("user_id").size() >= 3).sum() == 942
    last_two = val.merge(test, on="user_id", suffixes=("_val", "_test"))
    tied = last_two[last_two["timestamp_val"] == last_two["timestamp_test"]]
    assert len(tied) == 305
    assert (tied["position_test"] > tied["position_val"]).all()  # the later row in the file is the test item

    data = prepare(frames, threshold=4.0, min_interactions=3)
    assert (data.info["n_positives"], len(data.val), len(data.test)) == (55_375, 942, 942)
    assert len(data.train) == 55_375 - 2 * 942
    assert np.array_equal(np.sort(data.test.users), np.arange(1, 943))


@pytest.mark.parametrize("size, high", [(0, 5), (1, 5), (50, 7), (10_000, 1 << 40)])
def test_unique_ints_equals_numpys_unique_with_the_inverse(size, high):
    """The split's sort-based unique (numpy's hash-based one was 100x slower at scale) gives numpy's answer."""
    from bench.data.types import unique_ints

    keys = np.random.default_rng(size).integers(0, high, size)
    expected, inverse = np.unique(keys, return_inverse=True)
    assert np.array_equal(unique_ints(keys), expected)
    got, got_inverse = unique_ints(keys, return_inverse=True)
    assert np.array_equal(got, expected) and np.array_equal(got_inverse, inverse)
    assert np.array_equal(got[got_inverse], keys)
