"""A DeepFM training step against the size of the id tables, dense Adam vs lazy Adam (train.optimizer);
run: pytest tests/bench_lazy_adam.py --benchmark-only.

Dense Adam reads and writes every row of every table each step, lazy Adam only the rows a batch looked
up, so only the first grows with the users and items. Sizes: bench.scale's 1M and 20M shapes, then 4x and
16x ML-20M's users; the fields of the synthetic dataset; batches of 1024 with uniformly drawn ids (a new
batch every step, as in training)."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from bench.config import TrainConfig
from bench.data.features import FeatureSpec
from bench.nn.model import create_model
from bench.train.trainer import make_optimizers, optimizer_step

BATCH, BATCHES = 1024, 64


def spec(users: int, items: int) -> FeatureSpec:
    return FeatureSpec.build([
        {"name": "user_id", "side": "user", "vocab_size": users + 1, "is_id": True},
        {"name": "age", "side": "user", "vocab_size": 8},
        {"name": "gender", "side": "user", "vocab_size": 3},
        {"name": "occupation", "side": "user", "vocab_size": 22},
        {"name": "item_id", "side": "item", "vocab_size": items + 1, "is_id": True},
        {"name": "genres", "side": "item", "vocab_size": 19, "multi_valued": True, "max_len": 3},
    ])


@pytest.mark.parametrize("optimizer", ["adam", "lazy_adam"])
@pytest.mark.parametrize("users,items", [(6_900, 6_037), (138_000, 27_000), (552_000, 54_000),
                                         (2_208_000, 108_000)])
def test_training_step_against_table_size(benchmark, users, items, optimizer):
    torch.manual_seed(0)
    model = create_model("deepfm", spec(users, items))
    optimizers = make_optimizers(model, TrainConfig(batch_size=BATCH, optimizer=optimizer))
    g = torch.Generator().manual_seed(0)
    n = BATCH * BATCHES
    user_x = torch.stack([torch.randint(1, v, (n,), generator=g) for v in (users + 1, 8, 3, 22)], dim=1)
    item_x = torch.cat([torch.randint(1, items + 1, (n, 1), generator=g), torch.randint(0, 19, (n, 3), generator=g)],
                       dim=1)
    labels = (user_x[:, 1] > 4).float()  # learnable from the age field
    batches = itertools.cycle([slice(s, s + BATCH) for s in range(0, n, BATCH)])

    def step() -> float:
        rows = next(batches)
        loss = F.binary_cross_entropy_with_logits(model(user_x[rows], item_x[rows]), labels[rows])
        optimizer_step(optimizers, loss)
        return loss.item()

    first = sum(step() for _ in range(BATCHES)) / BATCHES
    later = sum(step() for _ in range(BATCHES)) / BATCHES
    assert later < first  # the timed step really trains
    benchmark(step)
