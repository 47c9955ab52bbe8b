"""One DeepFM epoch (negatives drawn, one pass of training at batch 256, full-ranking validation) the way
the original notebook does it against ours, on ML-100K with its 24 fields. The notebook's way is written
here from its description: a Dataset that builds every sample's feature list in Python and draws negatives
one by one, a DataLoader making a tensor per sample, sigmoid + BCELoss, and validation that builds each
user's (items x 24) feature matrix and loops over users for the metrics.
Run: pytest tests/bench_notebook_epoch.py --benchmark-only --benchmark-columns=min,median,max,rounds"""

import numpy as np
import pytest
import torch
from bench_plain_deepfm import PlainDeepFM, ml100k  # noqa: F401  (the fixture)
from torch import nn
from torch.utils.data import DataLoader, Dataset

from bench.config import EvalConfig, ModelConfig, TrainConfig
from bench.runner import build_model
from bench.train.trainer import train


class NotebookTrainSet(Dataset):
    """Positives and their negatives, each a Python list of 24 field indices, drawn one by one."""

    def __init__(self, data, negatives: int = 4):
        self.data, self.negatives = data, negatives
        self.user_rows = data.user_features.tolist()
        self.item_rows = data.item_features.tolist()
        self.liked = {}
        for u, i in zip(data.train.users.tolist(), data.train.items.tolist(), strict=True):
            self.liked.setdefault(u, set()).add(i)
        self.pool = list(range(1, data.n_items))
        self.refresh()

    def refresh(self) -> None:
        self.samples = []
        for u, i in zip(self.data.train.users.tolist(), self.data.train.items.tolist(), strict=True):
            self.samples.append((self.user_rows[u] + self.item_rows[i], 1.0))
            drawn = 0
            while drawn < self.negatives:
                j = int(np.random.choice(self.pool))
                if j not in self.liked[u]:
                    self.samples.append((self.user_rows[u] + self.item_rows[j], 0.0))
                    drawn += 1

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, k):
        features, label = self.samples[k]
        return torch.tensor(features, dtype=torch.long), torch.tensor(label, dtype=torch.float32)


def notebook_validation(model, data, k: int = 10) -> float:
    """Per user: its (items x 24) features, scores in batches of 32 users, training items masked, top-k."""
    model.eval()
    item_x = data.item_features
    ndcgs = []
    with torch.no_grad():
        for start in range(0, len(data.val), 32):
            users = data.val.users[start:start + 32].tolist()
            feats = torch.stack([torch.cat([data.user_features[u].expand(len(item_x), -1), item_x], 1)
                                 for u in users])
            scores = torch.sigmoid(model(feats.reshape(-1, feats.shape[-1]))).reshape(len(users), -1)
            for row, u in enumerate(users):
                scores[row, data.train_csr.rows_pairs(np.array([u]))[1]] = float("-inf")
            top = torch.topk(scores, k, dim=1).indices
            for row, item in enumerate(data.val.items[start:start + 32].tolist()):
                hits = (top[row] == item).nonzero()
                ndcgs.append(1 / np.log2(hits[0, 0].item() + 2) if len(hits) else 0.0)
    return float(np.mean(ndcgs))


def notebook_epoch(data) -> float:
    torch.manual_seed(0)
    np.random.seed(0)
    model = PlainDeepFM([f.vocab_size for f in data.spec])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)
    criterion = nn.BCELoss()
    dataset = NotebookTrainSet(data)  # the negatives of this epoch
    model.train()
    for features, labels in DataLoader(dataset, batch_size=256, shuffle=True, num_workers=0):
        optimizer.zero_grad()
        loss = criterion(torch.sigmoid(model(features)), labels)
        loss.backward()
        optimizer.step()
    return notebook_validation(model, data)


def our_epoch(data) -> float:
    torch.manual_seed(0)
    model = build_model(ModelConfig("deepfm"), data)
    return train(model, data, TrainConfig(epochs=1, batch_size=256), EvalConfig(), torch.device("cpu")).best_value


@pytest.mark.parametrize("how", ["notebook", "ours"])
def test_one_epoch(benchmark, ml100k, how):  # noqa: F811
    epoch = notebook_epoch if how == "notebook" else our_epoch
    value = benchmark.pedantic(epoch, args=(ml100k,), rounds=3, iterations=1)
    assert 0 < value < 1  # both really trained and ranked
