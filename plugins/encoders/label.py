"""`label`: each distinct value -> 1..n in sorted order, so the same data always gives the same indices."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bench.data.encoding import VocabularyEncoder


class LabelEncoder(VocabularyEncoder):
    """One index per distinct value (sorted); 0 = missing or unseen at transform time."""

    name = "label"

    def __init__(self) -> None:
        self.classes: pd.Index | None = None

    def fit(self, values: pd.Series) -> LabelEncoder:
        known = pd.Series(values).dropna().unique()
        try:
            self.classes = pd.Index(np.sort(known))
        except TypeError as exc:
            raise TypeError(
                f"label encoder: column {getattr(values, 'name', None)!r} mixes value types that cannot be "
                f"sorted ({exc}); convert it to one type first"
            ) from exc
        return self

    def transform(self, values: pd.Series) -> np.ndarray:
        self.require_fitted("transform()")
        # get_indexer gives -1 for unseen and missing values, hence +1 -> 0
        return self.classes.get_indexer(pd.Series(values)).astype(np.int64) + 1

    def state(self) -> dict[str, Any]:
        self.require_fitted("state()")
        return {"classes": self.classes.tolist()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> LabelEncoder:
        encoder = cls()
        encoder.classes = pd.Index(state["classes"])
        return encoder
