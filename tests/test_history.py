"""History features: each row's history holds only its user's positives strictly earlier than it, the
history shares the item id's table, and full ranking with history equals pairwise scoring."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import registry
from bench.config import EvalConfig, ModelConfig, TrainConfig
from bench.data.pipeline import prepare
from bench.data.types import ColumnSchema, DatasetFrames
from bench.nn.model import known_matrix
from bench.runner import build_model
from bench.train.trainer import train

L = 3


def frames(rows) -> DatasetFrames:
    """Hand-made interactions (user, item, rating, timestamp), ids as given, no features but the ids."""
    interactions = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    users = pd.DataFrame({"user_id": sorted(interactions.user_id.unique())})
    items = pd.DataFrame({"item_id": sorted(interactions.item_id.unique())})
    schema = [ColumnSchema("user_id", "user", "label", is_id=True),
              ColumnSchema("item_id", "item", "label", is_id=True)]
    return DatasetFrames("hand", interactions, users, items, schema)


def raw_history(data, split, row):
    """The raw item ids in the history columns of one row of a split."""
    pairs = getattr(data, split)
    x = data.user_rows()(torch.tensor([pairs.states[row]]))[0]
    field = data.spec.field("history")
    return [data.item_ids[i] for i in x[field.columns].tolist() if i]


# user 1: items 101..106 at 10, 20, 20, 30, 40(val), 50(test); user 2: val and test in one second
ROWS = [(1, 101, 5, 10), (1, 102, 5, 20), (1, 103, 4, 20), (1, 104, 5, 30), (1, 105, 4, 40), (1, 106, 5, 50),
        (2, 201, 5, 10), (2, 202, 4, 20), (2, 203, 5, 30), (2, 204, 5, 30)]


def test_training_rows_hold_only_strictly_earlier_positives_most_recent_last():
    data = prepare(frames(ROWS), history=L)
    seen = {}
    for row in range(len(data.train)):
        user, item = data.user_ids[data.train.users[row]], data.item_ids[data.train.items[row]]
        seen[(user, item)] = raw_history(data, "train", row)
    assert seen[(1, 101)] == []
    assert seen[(1, 102)] == [101] and seen[(1, 103)] == [101]  # 102 and 103 are simultaneous: neither is history
    assert seen[(1, 104)] == [101, 102, 103]
    assert seen[(2, 202)] == [201] and seen[(2, 201)] == []
    assert all(105 not in h and 106 not in h for h in seen.values())  # held-out items never reach training rows


def test_validation_and_test_rows_get_exactly_the_earlier_positives():
    data = prepare(frames(ROWS), history=L)
    by_user = {data.user_ids[u]: r for r, u in enumerate(data.val.users)}
    assert raw_history(data, "val", by_user[1]) == [102, 103, 104]  # the last L before 40; not 105 itself
    assert raw_history(data, "test", by_user[1]) == [103, 104, 105]  # the validation item, strictly earlier
    # user 2's last two positives share a second: the validation item is not history to the test item
    assert raw_history(data, "val", by_user[2]) == [201, 202]
    assert raw_history(data, "test", by_user[2]) == [201, 202]


def test_every_row_of_a_synthetic_dataset_matches_a_brute_force_history(small_frames):
    data = prepare(small_frames, history=5)
    interactions = small_frames.interactions
    positives = interactions[interactions.rating >= 4]
    for split in ("train", "val", "test"):
        pairs = getattr(data, split)
        picks = np.random.default_rng(0).choice(len(pairs), size=min(60, len(pairs)), replace=False)
        for row in picks:
            user, item = data.user_ids[pairs.users[row]], data.item_ids[pairs.items[row]]
            mine = positives[positives.user_id == user]
            mine = mine.assign(pos=mine.index).sort_values(["timestamp", "pos"])
            mine = mine.drop_duplicates("item_id", keep="last")  # a pair liked twice counts at its last time
            moment = mine[mine.item_id == item].timestamp.item()
            earlier = mine[mine.timestamp < moment]
            assert raw_history(data, split, row) == earlier.item_id.tolist()[-5:], (split, user, item)


def test_fitted_models_know_exactly_what_the_history_rule_allows():
    data = prepare(frames(ROWS), history=0)
    by_user = {data.user_ids[u]: r for r, u in enumerate(data.test.users)}
    known = known_matrix(data, torch.from_numpy(data.test.states))
    items = lambda r: sorted(data.item_ids[i] for i in torch.nonzero(known[r]).flatten().tolist())  # noqa: E731
    assert items(by_user[1]) == [101, 102, 103, 104, 105]  # training positives and the earlier validation item
    assert items(by_user[2]) == [201, 202]  # the validation item shares the test's second: not known


def test_the_history_shares_the_item_tables_one_parameter_tensor(small_frames):
    data = prepare(small_frames, history=5)
    model = build_model(ModelConfig("deepfm", embed_dim=8), data)
    item_tables = [p for p in model.parameters() if p.shape[0] == data.n_items]
    assert len(item_tables) == 2  # the item id's vectors and first-order weights, nothing for the history
    history = data.user_rows()(torch.from_numpy(data.test.states[:4]))
    before = model.embedding.embed("user", history).field_embeddings.detach().clone()
    with torch.no_grad():
        model.embedding.item.groups[0].vectors.weight.add_(1.0)  # move the item table
    after = model.embedding.embed("user", history).field_embeddings
    field = [f.name for f in model.embedding.spec.side("user")].index("history")
    assert not torch.allclose(before[:, field], after[:, field])  # the history moved with it
    assert torch.equal(before[:, :field], after[:, :field])


@pytest.mark.parametrize("name", ["fm", "deepfm", "xdeepfm", "autoint"])
@pytest.mark.parametrize("encoder", ["mean", "recency", "target", "transformer", "gru"])
def test_full_ranking_with_history_equals_pairwise_scoring(small_frames, name, encoder):
    data = prepare(small_frames, history=4, history_encoder=encoder)
    torch.manual_seed(0)
    model = build_model(ModelConfig(name, embed_dim=8), data)
    train(model, data, TrainConfig(epochs=1, batch_size=128), EvalConfig(), torch.device("cpu"))
    model.eval()
    user_x = data.user_rows()(torch.from_numpy(data.test.states[:5]))
    with torch.no_grad():
        full = model.score_all(user_x, data.item_features)
        pairs = model(user_x.repeat_interleave(data.n_items, 0), data.item_features.repeat(5, 1))
    assert torch.allclose(full.flatten(), pairs, atol=1e-5)


def test_recency_pooling_weighs_the_last_items_most_and_ignores_padding():
    w = registry.create("history_encoder", "recency", dim=4, length=4).bag_weights(
        torch.tensor([[0, 0, 5, 7], [3, 4, 5, 6], [0, 0, 0, 0]]))
    assert w[0, :2].sum() == 0 and torch.isclose(w[0].sum(), torch.tensor(1.0)) and w[0, 3] > w[0, 2]
    assert (w[1].diff() > 0).all() and w[2].sum() == 0


def test_history_reaches_every_feature_model_unchanged_and_the_id_models_ignore_it(small_frames):
    data = prepare(small_frames, history=4)
    assert data.spec.field("history").shares == "item_id"
    for name in ("mf", "neumf"):
        model = build_model(ModelConfig(name, embed_dim=8), data)
        x = data.user_rows()(torch.from_numpy(data.val.states[:3]))
        other = x.clone()
        other[:, data.spec.field("history").columns] = 0
        model.eval()
        with torch.no_grad():
            assert torch.equal(model.score_all(x, data.item_features), model.score_all(other, data.item_features))
