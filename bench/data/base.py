"""Bases of the dataset and sampler plugins."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.data.types import DatasetFrames, InteractionData


class DatasetPlugin(ABC):
    """A dataset: `DatasetPlugin(data_dir=None, cache_dir=None, download=True, **options).load()`.

    data_dir: a local directory with the files (also BENCH_DATA_DIR); otherwise the official archive is
    downloaded once into cache_dir (default ~/.cache/deepfm-bench, or BENCH_CACHE_DIR) and verified.
    Unknown options are an error naming the dataset and the options it takes.
    """

    name = "dataset"

    def __init__(self, data_dir: str | Path | None = None, cache_dir: str | Path | None = None,
                 download: bool = True, **options: Any):
        self.data_dir = Path(data_dir) if data_dir else None
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.download = download
        self.options = options

    @abstractmethod
    def load(self) -> DatasetFrames:
        """The frames and column schema."""


class TrainSamples:
    """One epoch of training rows (the trainer shuffles them). Each row names the training positive it
    belongs to (`positives`: an index into `data.train`, whose user state gives the row's user features, so
    a negative shares its positive's history), the item, and the label: 1 for the positive's own item, 0
    for a negative drawn for it."""

    def __init__(self, positives: np.ndarray, items: np.ndarray, labels: np.ndarray):
        self.positives = torch.from_numpy(np.ascontiguousarray(positives, dtype=np.int64))
        self.items = torch.from_numpy(np.ascontiguousarray(items, dtype=np.int64))
        self.labels = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.float32))

    def __len__(self) -> int:
        return len(self.positives)


class NegativeSampler(ABC):
    """Draws `num_negatives` items per training positive, never one of the user's training positives.

    `fit(data)` once, then `sample(epoch)` gives that epoch's TrainSamples; the draw depends only on
    (seed, epoch), so runs are reproducible and negatives change every epoch.
    """

    name = "sampler"

    def __init__(self, num_negatives: int = 4, seed: int = 0, **options: Any):
        if num_negatives < 1:
            raise ValueError(f"num_negatives must be >= 1, got {num_negatives}")
        self.num_negatives = num_negatives
        self.seed = seed
        self.options = options

    @abstractmethod
    def fit(self, data: InteractionData) -> "NegativeSampler":
        """Index the training positives and the item pool once."""

    @abstractmethod
    def sample(self, epoch: int) -> TrainSamples:
        """That epoch's positives and freshly drawn negatives."""


class SamplerContractError(ValueError):
    """A sampler's epoch broke the sampler contract; the run fails with what it returned."""


def check_samples(drawn: Any, data: InteractionData, sampler: str) -> None:
    """Refuse an epoch of samples that breaks the contract the trainer relies on: a TrainSamples of aligned
    int64 / float tensors; positives indexing `data.train`; items in the pool (rows 1..n_items-1); labels
    exactly 0 or 1; a label-1 row holds its positive's own item; a label-0 row never holds one of its user's
    training positives (it would train that pair as both 1 and 0). Vectorised: one membership test per epoch."""
    def refuse(problem: str) -> None:
        raise SamplerContractError(f"sampler {sampler!r}: {problem}; a sampler's sample(epoch) must return "
                                   "TrainSamples(positives, items, labels) as bench.data.base.NegativeSampler says")

    if not all(isinstance(getattr(drawn, a, None), torch.Tensor) for a in ("positives", "items", "labels")):
        refuse(f"sample(epoch) returned {type(drawn).__name__}, not TrainSamples")
    positives, items, labels = drawn.positives, drawn.items, drawn.labels
    if not (positives.dim() == items.dim() == labels.dim() == 1 and len(positives) == len(items) == len(labels)):
        refuse(f"positives, items and labels have shapes {tuple(positives.shape)}, {tuple(items.shape)}, "
               f"{tuple(labels.shape)}; expected three aligned 1-d arrays")
    if len(labels) == 0:
        refuse("it returned no samples")
    if positives.is_floating_point() or items.is_floating_point():
        refuse("positives and items must be integer indices")
    positives, items, labels = positives.numpy(), items.numpy(), labels.numpy()
    for what, values, low, high in (("positives", positives, 0, len(data.train) - 1),
                                    ("items", items, 1, data.n_items - 1)):
        bad = (values < low) | (values > high)
        if bad.any():
            refuse(f"{what} must be in {low}..{high}, got {values[bad][0].item()} ({int(bad.sum())} such rows)")
    bad = (labels != 0) & (labels != 1)
    if bad.any():
        refuse(f"labels must be 0 or 1, got {labels[bad][0].item()!r} ({int(bad.sum())} such rows)")
    positive = labels == 1
    own = data.train.items[positives[positive]]
    if (items[positive] != own).any():
        wrong = np.flatnonzero(items[positive] != own)
        refuse(f"a label-1 row must hold its positive's own item: {len(wrong)} rows do not (e.g. item row "
               f"{items[positive][wrong[0]]} for a positive of item row {own[wrong[0]]})")
    negative = ~positive
    users = data.train.users[positives[negative]]
    leaked = data.train_csr.contains(users, items[negative])
    if leaked.any():
        first = int(np.flatnonzero(leaked)[0])
        user, item = int(users[first]), int(items[negative][first])
        refuse(f"{int(leaked.sum())} negatives are training positives of their user (e.g. user "
               f"{data.user_ids[user]!r}, item {data.item_ids[item]!r}): each such pair would train as both 1 and 0")


def check_sampler(sampler: Any) -> list[str]:
    """What `sampler` lacks of the sampler contract (empty when it meets it)."""
    missing = []
    if not callable(getattr(sampler, "fit", None)):
        missing.append("a fit(data) method")
    if not callable(getattr(sampler, "sample", None)):
        missing.append("a sample(epoch) method returning TrainSamples")
    return missing


def check_dataset(dataset: Any) -> list[str]:
    """What `dataset` lacks of the dataset contract (empty when it meets it)."""
    return [] if callable(getattr(dataset, "load", None)) else ["a load() method returning DatasetFrames"]
