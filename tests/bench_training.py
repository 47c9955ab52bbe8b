"""Speed of one training step (DeepFM, xDeepFM) and of one full-ranking evaluation on the real ML-100K
(run: make bench, or pytest tests/bench_training.py --benchmark-only)."""

import pytest
import torch
from conftest import benchmark_training_step, require_ml100k

import registry
from bench.config import ModelConfig, TrainConfig
from bench.data.pipeline import prepare
from bench.eval.evaluator import evaluate
from bench.runner import build_model
from bench.train.trainer import make_adam


@pytest.fixture(scope="module")
def ml100k():
    return prepare(registry.create("dataset", "ml-100k", data_dir=require_ml100k()).load())


@pytest.mark.parametrize("name,batch_size", [("deepfm", 256), ("deepfm", 4096), ("xdeepfm", 256)])
def test_one_training_step(benchmark, ml100k, name, batch_size):
    torch.manual_seed(0)
    model = build_model(ModelConfig(name), ml100k)
    optimizer = make_adam(model, TrainConfig())  # the trainer's optimizer
    samples = registry.create("sampler", "uniform", num_negatives=4, seed=0).fit(ml100k).sample(1)
    rows = torch.randperm(len(samples), generator=torch.Generator().manual_seed(0))[:batch_size]
    states = torch.from_numpy(ml100k.train.states)[samples.positives[rows]]
    user_x, item_x = ml100k.user_rows()(states), ml100k.item_features[samples.items[rows]]
    labels = samples.labels[rows]

    benchmark_training_step(benchmark, lambda: model(user_x, item_x), labels, optimizer)


@pytest.mark.parametrize("name", ["deepfm", "autoint", "xdeepfm"])
def test_full_ranking_evaluation(benchmark, ml100k, name):
    torch.manual_seed(0)
    model = build_model(ModelConfig(name), ml100k)
    result = benchmark.pedantic(evaluate, args=(model, ml100k), kwargs={"split": "test"}, rounds=3, iterations=1)
    assert len(result.users) == 942 and 0 <= result.metrics["NDCG@10"] <= 1
