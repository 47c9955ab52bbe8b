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
