"""Our DeepFM's training step against a plain-PyTorch DeepFM on the same batches (issue: a step at the
plain-PyTorch limit): ML-100K with the notebook's 24 fields (19 binary genres), D=16, MLP 128-64-32,
dropout 0.2, fused Adam for both. Run: pytest tests/bench_plain_deepfm.py --benchmark-only."""

import pytest
import torch
from conftest import benchmark_training_step, require_ml100k
from torch import nn

import registry
from bench.config import ModelConfig, TrainConfig
from bench.data.pipeline import prepare
from bench.runner import build_model
from bench.train.trainer import make_adam


class PlainDeepFM(nn.Module):
    """DeepFM as every peer writes it: one table with per-field offsets, 0.5 * ((sum v)^2 - sum v^2), an MLP."""

    def __init__(self, vocab_sizes: list[int], dim: int = 16, hidden=(128, 64, 32), dropout: float = 0.2):
        super().__init__()
        offsets = torch.tensor([0, *vocab_sizes[:-1]]).cumsum(0)
        self.register_buffer("offsets", offsets.view(1, -1))
        self.vectors = nn.Embedding(sum(vocab_sizes), dim)
        self.weights = nn.Embedding(sum(vocab_sizes), 1)
        layers, width = [], len(vocab_sizes) * dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        self.mlp = nn.Sequential(*layers, nn.Linear(width, 1))
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idx = x + self.offsets
        v = self.vectors(idx)
        s = v.sum(1)
        fm = 0.5 * (s.pow(2) - v.pow(2).sum(1)).sum(1, keepdim=True)
        return (self.bias + self.weights(idx).sum(1) + fm + self.mlp(v.flatten(1))).squeeze(1)


@pytest.fixture(scope="module")
def ml100k():
    frames = registry.create("dataset", "ml-100k", data_dir=require_ml100k(), genre_encoding="binary").load()
    return prepare(frames)


def batches(data, batch_size: int):
    samples = registry.create("sampler", "uniform", num_negatives=4, seed=0).fit(data).sample(1)
    rows = torch.randperm(len(samples), generator=torch.Generator().manual_seed(0))[:batch_size]
    states = torch.from_numpy(data.train.states)[samples.positives[rows]]
    return data.user_rows()(states), data.item_features[samples.items[rows]], samples.labels[rows]


@pytest.mark.parametrize("batch_size", [256, 4096])
@pytest.mark.parametrize("impl", ["plain", "ours"])
def test_deepfm_training_step(benchmark, ml100k, impl, batch_size):
    torch.manual_seed(0)
    user_x, item_x, labels = batches(ml100k, batch_size)
    assert len(ml100k.spec) == 24
    if impl == "ours":
        model = build_model(ModelConfig("deepfm"), ml100k)
        optimizer = make_adam(model, TrainConfig())

        def logits():
            return model(user_x, item_x)
    else:
        model = PlainDeepFM([f.vocab_size for f in ml100k.spec])
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5, fused=True)
        x = torch.cat([user_x, item_x], dim=1)  # field-local indices, user fields then item fields

        def logits():
            return model(x)

    benchmark_training_step(benchmark, logits, labels, optimizer)
