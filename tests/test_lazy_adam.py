"""train.optimizer=lazy_adam: the tables get sparse gradients and Adam on the looked-up rows, the rest plain Adam."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import SMALL

import bench.train.trainer as trainer_mod
import registry
from bench.config import EvalConfig, ModelConfig, TrainConfig
from bench.data.pipeline import prepare
from bench.runner import build_model
from bench.train.trainer import make_optimizers, optimizer_step, train

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def history_data():
    """With a history field: its bags look rows up in the item id's table, which must stay sparse too."""
    frames = registry.create("dataset", "synthetic", **SMALL).load()
    return prepare(frames, threshold=4.0, min_interactions=3, history=5)


def batch(data, rows: slice):
    user_x = data.user_rows()(torch.from_numpy(data.train.states[rows]))
    item_x = data.item_features[torch.from_numpy(data.train.items[rows])]
    return user_x, item_x, torch.ones(len(item_x))


def step(model, optimizers, user_x, item_x, labels) -> None:
    optimizer_step(optimizers, F.binary_cross_entropy_with_logits(model(user_x, item_x), labels))


def tables(model):
    return {name: p for name, p in model.named_parameters() if name.endswith(("vectors.weight", "weights.weight"))}


def test_the_first_lazy_step_is_adams_step_on_the_rows_looked_up(history_data):
    """From zero moments, Adam's first step and LazyAdam's agree on every row a batch looked up (weight
    decay included) and on every dense parameter; rows not looked up move under Adam (their decay) only."""
    torch.manual_seed(0)
    dense = build_model(ModelConfig("deepfm", embed_dim=8), history_data)
    lazy = build_model(ModelConfig("deepfm", embed_dim=8), history_data)
    lazy.load_state_dict(dense.state_dict())
    before = {name: p.detach().clone() for name, p in tables(lazy).items()}
    optimizers = make_optimizers(lazy, TrainConfig(weight_decay=0.1, lr=1e-2, optimizer="lazy_adam"))
    assert [type(o).__name__ for o in optimizers] == ["Adam", "LazyAdam"]
    data = batch(history_data, slice(0, 64))
    for model, chosen in ((dense, make_optimizers(dense, TrainConfig(weight_decay=0.1, lr=1e-2))), (lazy, optimizers)):
        torch.manual_seed(1)  # the same dropout masks
        step(model, chosen, *data)
    lazy_tables = tables(lazy)
    assert lazy_tables and all(p.grad is None or p.grad.is_sparse for p in lazy_tables.values())
    for (name, a), b in zip(dense.state_dict().items(), lazy.state_dict().values(), strict=True):
        if name not in lazy_tables:
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)
            continue
        grad = lazy_tables[name].grad
        seen = torch.zeros(len(b), dtype=torch.bool)
        if grad is not None:
            seen[grad.coalesce().indices()[0]] = True
        torch.testing.assert_close(a[seen], b[seen], rtol=0, atol=1e-6, msg=name)
        assert torch.equal(b[~seen], before[name][~seen]), name
        if (~seen[1:]).any() and before[name][~seen][1:].abs().sum() > 0:
            assert not torch.equal(a[~seen], before[name][~seen]), name  # Adam's weight decay moved them


def test_lazy_adam_follows_adams_formula_row_by_row_over_several_steps():
    """Three steps on a toy table against Adam's formula written out (bias correction by the table's step
    count, as TensorFlow's LazyAdam): rows seen at steps 1 and 3 but not 2 keep their moments through 2."""
    from bench.train.lazy_adam import LazyAdam

    torch.manual_seed(0)
    table = torch.nn.Embedding(6, 3, sparse=True)
    expected = table.weight.detach().clone()
    m, v = torch.zeros(6, 3), torch.zeros(6, 3)
    lr, (b1, b2), eps, wd = 0.05, (0.9, 0.999), 1e-8, 0.01
    optimizer = LazyAdam(table.parameters(), lr=lr, weight_decay=wd)
    for t, rows in enumerate(([1, 2, 2], [3], [1, 4]), start=1):
        optimizer.zero_grad(set_to_none=True)
        idx = torch.tensor(rows)
        upstream = torch.randn(len(rows), 3)
        (table(idx) * upstream).sum().backward()
        g = torch.zeros(6, 3).index_add_(0, idx, upstream)
        seen = torch.unique(idx)
        g = g[seen] + wd * expected[seen]
        m[seen] = b1 * m[seen] + (1 - b1) * g
        v[seen] = b2 * v[seen] + (1 - b2) * g * g
        expected[seen] -= lr / (1 - b1 ** t) * m[seen] / ((v[seen] / (1 - b2 ** t)).sqrt() + eps)
        optimizer.step()
        torch.testing.assert_close(table.weight.detach(), expected, rtol=1e-5, atol=1e-7)


def test_lazy_adam_moves_only_the_rows_a_batch_looked_up(history_data):
    """Adam keeps moving rows an earlier batch touched (their moments); LazyAdam leaves them alone, and
    the padding row stays zero."""
    changed = {}
    for optimizer in ("adam", "lazy_adam"):
        torch.manual_seed(0)
        model = build_model(ModelConfig("deepfm", embed_dim=8), history_data)
        optimizers = make_optimizers(model, TrainConfig(weight_decay=0.0, optimizer=optimizer))
        step(model, optimizers, *batch(history_data, slice(0, 64)))
        before = {name: p.detach().clone() for name, p in tables(model).items()}
        step(model, optimizers, *batch(history_data, slice(500, 520)))
        for name, p in tables(model).items():
            moved = set((p.detach() != before[name]).any(dim=1).nonzero().view(-1).tolist())
            looked_up = (set(p.grad.coalesce().indices().view(-1).tolist()) if p.grad is not None and p.grad.is_sparse
                         else set((p.grad != 0).any(dim=1).nonzero().view(-1).tolist()) if p.grad is not None
                         else set())
            changed[optimizer, name] = (moved, looked_up)
            assert 0 not in moved and not p.detach()[0].any()
    for name in tables(model):
        moved, looked_up = changed["lazy_adam", name]
        assert moved == looked_up - {0}
    items = next(name for name in tables(model) if name.startswith("embedding.item") and "vectors" in name)
    dense_moved, dense_looked_up = changed["adam", items]
    assert dense_moved > dense_looked_up  # rows of the first batch kept moving under Adam


def test_training_with_lazy_adam_lowers_the_loss_and_anneals_both_optimizers(small_data, monkeypatch):
    made = []
    original = trainer_mod.make_optimizers

    def spy(model, config):
        made.extend(original(model, config))
        return made

    monkeypatch.setattr(trainer_mod, "make_optimizers", spy)
    torch.manual_seed(0)
    model = build_model(ModelConfig("deepfm", embed_dim=8), small_data)
    config = TrainConfig(epochs=3, patience=10, batch_size=128, lr=3e-3, schedule="cosine", optimizer="lazy_adam")
    result = train(model, small_data, config, EvalConfig(), CPU)
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert result.history[-1]["val_NDCG@10"] > 0
    assert [type(o).__name__ for o in made] == ["Adam", "LazyAdam"]
    assert all(o.param_groups[0]["lr"] < 1e-12 for o in made)  # cos(pi) after all 3 epochs


def test_an_unknown_optimizer_or_a_model_without_tables_is_refused():
    with pytest.raises(ValueError, match="--optimizer .*: expected one of adam, lazy_adam"):
        TrainConfig(optimizer="sgd")
    with pytest.raises(ValueError, match="has no FeatureEmbedding tables"):
        make_optimizers(torch.nn.Linear(3, 1), TrainConfig(optimizer="lazy_adam"))


def test_adam_after_lazy_adam_makes_the_tables_dense_again(small_data):
    model = build_model(ModelConfig("deepfm", embed_dim=8), small_data)
    make_optimizers(model, TrainConfig(optimizer="lazy_adam"))
    optimizers = make_optimizers(model, TrainConfig())
    step(model, optimizers, *batch(small_data, slice(0, 32)))
    assert all(p.grad is None or not p.grad.is_sparse for p in tables(model).values())
