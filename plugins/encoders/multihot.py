"""`multihot`: a joined string of values ("Action|Comedy") -> a 0-padded row of value indices.

The vocabulary is over the individual values, sorted (1..n), so it is deterministic. A row's values
keep their order, duplicates and unseen values are dropped, and rows longer than `max_len` are cut
(first values kept). `max_len` defaults to the longest row seen by fit.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bench.data.encoding import VocabularyEncoder


class MultiHotEncoder(VocabularyEncoder):
    """A set-valued column as a padded index list (EmbeddingBag input); "" or missing = no value."""

    name = "multihot"
    multi_valued = True

    def __init__(self, sep: str = "|", max_len: int | None = None) -> None:
        if not isinstance(sep, str) or not sep:
            raise ValueError(f"multihot encoder: option sep must be a non-empty string, got {sep!r}")
        if max_len is not None and (not isinstance(max_len, int) or max_len < 1):
            raise ValueError(f"multihot encoder: option max_len must be a positive int, got {max_len!r}")
        self.sep = sep
        self.max_len = max_len  # type: ignore[assignment]  # instance value overrides the class default
        self.classes: pd.Index | None = None

    def _tokens(self, values: pd.Series) -> pd.DataFrame:
        """Distinct (row position, value) pairs in row order; empty values removed."""
        text = pd.Series(values).astype("string").fillna("").reset_index(drop=True)
        tokens = text.str.split(self.sep, regex=False).explode()
        tokens = tokens[tokens.notna() & (tokens != "")].astype(str)
        pairs = pd.DataFrame({"row": tokens.index.to_numpy(np.int64), "token": tokens.to_numpy()})
        return pairs.drop_duplicates()

    def fit(self, values: pd.Series) -> MultiHotEncoder:
        pairs = self._tokens(values)
        self.classes = pd.Index(np.sort(pairs["token"].unique()))
        if self.max_len is None:
            longest = pairs["row"].value_counts().max() if len(pairs) else 1
            self.max_len = int(longest)
        return self

    def transform(self, values: pd.Series) -> np.ndarray:
        self.require_fitted("transform()")
        pairs = self._tokens(values)
        codes = self.classes.get_indexer(pairs["token"]).astype(np.int64) + 1
        frame = pd.DataFrame({"row": pairs["row"].to_numpy(), "code": codes})[codes > 0]
        slot = frame.groupby("row").cumcount().to_numpy()
        keep = slot < self.max_len
        out = np.zeros((len(values), self.max_len), dtype=np.int64)
        out[frame["row"].to_numpy()[keep], slot[keep]] = frame["code"].to_numpy()[keep]
        return out

    def state(self) -> dict[str, Any]:
        self.require_fitted("state()")
        return {"sep": self.sep, "max_len": self.max_len, "classes": self.classes.tolist()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> MultiHotEncoder:
        encoder = cls(sep=state["sep"], max_len=state["max_len"])
        encoder.classes = pd.Index(state["classes"])
        return encoder
