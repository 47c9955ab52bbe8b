"""The trainer: best state really restored, NaN reported, loss falls, negatives re-drawn."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import bench.train.trainer as trainer_mod
from bench.config import EvalConfig, ModelConfig, TrainConfig
from bench.eval.evaluator import EvalResult
from bench.runner import build_model
from bench.train.trainer import NaNLossError, train

CPU = torch.device("cpu")


def scripted_evaluate(values):
    """An evaluate() that returns the given val NDCG@10 per call, so the best epoch is known."""
    calls = iter(values)

    def fake(model, data, *args, **kw):
        v = next(calls)
        return EvalResult(metrics={"NDCG@10": v, "HR@10": v}, per_user={}, users=None, n_candidates=0.0,
                          protocol="full", ties="expected", num_negatives=None, split="val", seconds=0.0,
                          users_per_s=0.0)

    return fake


def test_early_stopping_restores_a_deep_copy_of_the_best_epoch(small_data, monkeypatch):
    monkeypatch.setattr(trainer_mod, "evaluate", scripted_evaluate([0.1, 0.3, 0.2, 0.1, 0.05]))
    model = build_model(ModelConfig("deepfm", embed_dim=8), small_data)
    snapshots = {}

    def snapshot(epoch, row):
        snapshots[epoch] = {k: v.detach().clone() for k, v in model.state_dict().items()}

    cfg = TrainConfig(epochs=10, patience=2, batch_size=512)
    result = train(model, small_data, cfg, EvalConfig(), CPU, on_epoch=snapshot)
    assert result.best_epoch == 2 and result.epochs_run == 4
    final = model.state_dict()
    # with a shallow copy (state_dict().copy()) the "best" tensors would have kept training: epoch 4
    for key, value in snapshots[2].items():
        assert torch.equal(final[key], value), key
    assert any(not torch.equal(final[k], v) for k, v in snapshots[4].items())


def test_nan_loss_is_an_error_with_its_reason(small_data):
    model = build_model(ModelConfig("deepfm", embed_dim=8), small_data)
    with torch.no_grad():
        model.bias.fill_(float("nan"))
    with pytest.raises(NaNLossError, match="loss became nan in epoch 1"):
        train(model, small_data, TrainConfig(epochs=2), EvalConfig(), CPU)


def test_loss_falls_and_validation_is_recorded(small_data):
    torch.manual_seed(0)
    model = build_model(ModelConfig("deepfm", embed_dim=8), small_data)
    result = train(model, small_data, TrainConfig(epochs=4, patience=10, batch_size=128, lr=3e-3), EvalConfig(), CPU)
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < losses[0]
    assert all("val_NDCG@10" in h and 0 <= h["val_NDCG@10"] <= 1 for h in result.history)
    assert result.samples == 4 * len(small_data.train) * 5
    assert result.samples_per_s > 0


def test_each_epoch_draws_new_negatives(small_data, monkeypatch):
    seen = []
    original = trainer_mod.make_sampler

    def spying_sampler(config):
        sampler = original(config)
        draw = sampler.sample

        def sample(epoch):
            drawn = draw(epoch)
            seen.append(drawn.items[drawn.labels == 0].clone())  # item rows of the negatives
            return drawn

        sampler.sample = sample
        return sampler

    monkeypatch.setattr(trainer_mod, "make_sampler", spying_sampler)
    model = build_model(ModelConfig("fm", embed_dim=8), small_data)
    train(model, small_data, TrainConfig(epochs=2, patience=5), EvalConfig(), CPU)
    assert len(seen) == 2 and not torch.equal(seen[0].sort().values, seen[1].sort().values)


def test_adam_falls_back_to_the_default_kernel_where_fused_is_missing(small_data, monkeypatch):
    """Fused Adam is used where torch has it; a torch or device without it still trains, same rule."""
    model = build_model(ModelConfig("deepfm", embed_dim=8), small_data)
    cfg = TrainConfig(lr=2e-3, weight_decay=1e-4)
    first = trainer_mod.make_adam(model, cfg)
    has_cpu_fused = tuple(int(p) for p in torch.__version__.split(".")[:2]) >= (2, 4)
    assert bool(first.defaults.get("fused")) == has_cpu_fused
    real_adam = torch.optim.Adam

    def no_fused(params, fused=None, **options):
        if fused:
            raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of "
                               "supported devices: ['cuda']")
        return real_adam(params, **options)

    monkeypatch.setattr(torch.optim, "Adam", no_fused)
    plain = trainer_mod.make_adam(model, cfg)
    assert not plain.defaults.get("fused") and plain.defaults["lr"] == 2e-3
    assert plain.defaults["weight_decay"] == 1e-4
    torch.manual_seed(0)
    result = train(model, small_data, TrainConfig(epochs=3, batch_size=128, lr=3e-3), EvalConfig(), CPU)
    assert result.history[-1]["loss"] < result.history[0]["loss"]


@pytest.mark.parametrize("metric", ["NDCG", "NDCG@", "NDCG@0", "ndcg@10", "AUC@10", "MRR@10"])
def test_a_bad_validation_metric_is_refused_before_training(metric):
    with pytest.raises(ValueError, match="--val-metric: expected MRR or one of HR, NDCG, Recall, MAP"):
        TrainConfig(val_metric=metric)


@pytest.mark.parametrize("metric", ["MRR", "HR@20"])
def test_early_stopping_can_follow_another_validation_metric(small_data, metric):
    torch.manual_seed(0)
    model = build_model(ModelConfig("deepfm", embed_dim=8), small_data)
    result = train(model, small_data, TrainConfig(epochs=2, batch_size=128, val_metric=metric), EvalConfig(),
                   CPU)
    values = [h[f"val_{metric}"] for h in result.history]
    assert result.best_value == max(values) and result.best_epoch == 1 + values.index(max(values))


def test_average_restores_the_mean_of_the_best_epoch_and_the_ones_before(small_data, monkeypatch):
    torch.manual_seed(0)
    model = build_model(ModelConfig("deepfm", embed_dim=8), small_data)
    snapshots = {}

    def snapshot(epoch, row):
        snapshots[epoch] = {k: v.detach().clone() for k, v in model.state_dict().items()}

    values = iter([0.1, 0.3, 0.2, 0.5, 0.4, 0.3, 0.2])  # the best raw value at epoch 4
    monkeypatch.setattr(trainer_mod, "evaluate", lambda *a, **k: _scripted(next(values)))
    cfg = TrainConfig(epochs=7, patience=3, batch_size=512, average=3)
    result = train(model, small_data, cfg, EvalConfig(), CPU, on_epoch=snapshot)
    assert result.best_epoch == 4
    key = "mlp.net.0.weight"
    expected = torch.stack([snapshots[e][key] for e in (2, 3, 4)]).mean(0)
    assert torch.allclose(model.state_dict()[key], expected)


def test_smoothing_chooses_and_stops_on_the_moving_average(small_data, monkeypatch):
    model = build_model(ModelConfig("fm", embed_dim=8), small_data)
    values = iter([0.5, 0.1, 0.1, 0.45, 0.45, 0.45, 0.45])  # raw best at epoch 1, smoothed best later
    monkeypatch.setattr(trainer_mod, "evaluate", lambda *a, **k: _scripted(next(values)))
    result = train(model, small_data, TrainConfig(epochs=7, patience=10, smoothing=0.5), EvalConfig(), CPU)
    smoothed = [0.5]
    for v in [0.1, 0.1, 0.45, 0.45, 0.45, 0.45]:
        smoothed.append(0.5 * smoothed[-1] + 0.5 * v)
    assert result.best_epoch == 1 + int(np.argmax(smoothed)) and result.best_value == max(smoothed)


def test_a_cosine_schedule_anneals_the_learning_rate_to_zero_over_the_epochs(small_data, monkeypatch):
    model = build_model(ModelConfig("fm", embed_dim=8), small_data)
    rates = []
    original = trainer_mod.make_adam

    def spy(model, config):
        optimizer = original(model, config)
        rates.append(optimizer)
        return optimizer

    monkeypatch.setattr(trainer_mod, "make_adam", spy)
    train(model, small_data, TrainConfig(epochs=4, patience=10, schedule="cosine", lr=1e-2), EvalConfig(), CPU)
    assert rates[0].param_groups[0]["lr"] < 1e-12  # cos(pi) after all 4 epochs
    with pytest.raises(ValueError, match="--schedule"):
        TrainConfig(schedule="step")


def _scripted(value):
    return EvalResult(metrics={"NDCG@10": value}, per_user={}, users=None, n_candidates=0.0, protocol="full",
                      ties="expected", num_negatives=None, split="val", seconds=0.0, users_per_s=0.0)


def test_validation_stays_within_its_budget_by_ranking_a_fixed_subset(small_data, monkeypatch):
    """When a full validation pass would cost more than --val-budget of a training epoch, early stopping ranks
    a fixed subset of validation users (the same every epoch), says so, and the run records how many."""
    monkeypatch.setattr(trainer_mod, "PROBE_USERS", 10)
    lines = []
    n = len(small_data.val)
    assert n > 10
    cases = [(TrainConfig(epochs=2, val_budget=1e-9), 10), (TrainConfig(epochs=2, val_budget=1e9), n),
             (TrainConfig(epochs=2, val_budget=0.0), n), (TrainConfig(epochs=2, val_users=7), 7)]
    for cfg, expected in cases:
        torch.manual_seed(0)
        model = build_model(ModelConfig("fm", embed_dim=8), small_data)
        seen = []
        original = trainer_mod.evaluate

        def spy(model, data, split, config, seen=seen, original=original, **kw):
            seen.append(kw.get("max_users"))
            return original(model, data, split, config, **kw)

        monkeypatch.setattr(trainer_mod, "evaluate", spy)
        result = train(model, small_data, cfg, EvalConfig(), CPU, log=lines.append)
        monkeypatch.setattr(trainer_mod, "evaluate", original)
        assert result.val_users == expected, cfg
        ranked = seen[-2:]  # the two epochs' validations (after the probe, when there was one)
        assert ranked == ([None, None] if expected == n else [expected, expected])
    assert len(lines) == 1 and f"a fixed subset of 10 of {n} users" in lines[0] and "test ranks every user" in lines[0]
