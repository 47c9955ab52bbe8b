"""`bucket`: a numeric column -> the index of its interval, so age 23 and 24 share an embedding.

Either explicit right-open `bins` (edges [0, 18, 25, 100] give [0,18) -> 1, [18,25) -> 2, [25,100) -> 3;
values outside [bins[0], bins[-1]) -> 0), or `quantiles=q`: q roughly equal-count buckets fitted on the
data (repeated edges merged), whose outer buckets are open-ended so every number gets a bucket.
Missing values -> 0. A non-numeric value is an error, never a silent 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from bench.data.encoding import Encoder


class BucketEncoder(Encoder):
    """Interval index of a number: explicit right-open `bins`, or `quantiles` fitted from the data."""

    name = "bucket"

    def __init__(self, bins: Sequence[float] | None = None, quantiles: int | None = None) -> None:
        if (bins is None) == (quantiles is None):
            raise ValueError("bucket encoder: give exactly one of the options bins=[edges] or quantiles=q")
        if bins is not None:
            edges = np.asarray(bins, dtype=float)
            if edges.ndim != 1 or len(edges) < 2 or not np.all(np.isfinite(edges)) or np.any(np.diff(edges) <= 0):
                raise ValueError(
                    f"bucket encoder: option bins must be >= 2 finite, strictly increasing edges, got {list(bins)}"
                )
        if quantiles is not None and (not isinstance(quantiles, int) or quantiles < 2):
            raise ValueError(f"bucket encoder: option quantiles must be an int >= 2, got {quantiles!r}")
        self.bins = None if bins is None else [float(b) for b in bins]
        self.quantiles = quantiles
        self.edges: np.ndarray | None = None if bins is None else np.asarray(self.bins)

    @staticmethod
    def _numbers(values: pd.Series) -> np.ndarray:
        values = pd.Series(values)
        numbers = pd.to_numeric(values, errors="coerce")
        bad = numbers.isna() & values.notna()
        if bad.any():
            raise ValueError(
                f"bucket encoder: column {values.name!r} holds non-numeric value {values[bad].iloc[0]!r} "
                f"(row {values.index[bad][0]!r}); bucket takes numbers"
            )
        return numbers.to_numpy(dtype=float, na_value=np.nan)

    def fit(self, values: pd.Series) -> BucketEncoder:
        if self.quantiles is None:
            return self
        numbers = self._numbers(values)
        numbers = numbers[~np.isnan(numbers)]
        edges = np.unique(np.quantile(numbers, np.linspace(0, 1, self.quantiles + 1))) if len(numbers) else []
        if len(edges) < 2:
            raise ValueError(
                f"bucket encoder: quantiles={self.quantiles} needs >= 2 distinct numbers in column "
                f"{getattr(values, 'name', None)!r}; use the label encoder for a constant column"
            )
        self.edges = edges
        return self

    def transform(self, values: pd.Series) -> np.ndarray:
        self.require_fitted("transform()")
        numbers = self._numbers(values)
        index = np.searchsorted(self.edges, numbers, side="right")
        if self.quantiles is not None:  # open-ended outer buckets
            index = np.clip(index, 1, len(self.edges) - 1)
        else:
            index[index == len(self.edges)] = 0  # at or above the last (right-open) edge
        index[np.isnan(numbers)] = 0
        return index.astype(np.int64)

    @property
    def fitted(self) -> bool:
        return self.edges is not None

    @property
    def vocab_size(self) -> int:
        self.require_fitted("vocab_size")
        return len(self.edges)  # len - 1 buckets, plus index 0

    def state(self) -> dict[str, Any]:
        self.require_fitted("state()")
        return {"bins": self.bins, "quantiles": self.quantiles, "edges": self.edges.tolist()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> BucketEncoder:
        encoder = cls(bins=state["bins"], quantiles=state["quantiles"])
        encoder.edges = np.asarray(state["edges"], dtype=float)
        return encoder
