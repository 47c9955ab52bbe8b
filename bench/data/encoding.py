"""The encoder contract: a raw column -> int indices, index 0 reserved for unknown / padding."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


class Encoder(ABC):
    """Base of the encoder plugins. Subclasses define fit, transform, vocab_size, state/from_state.

    transform returns int64 of shape (n,) for single-valued encoders and (n, max_len) for
    multi-valued ones (padded with 0). vocab_size counts index 0.
    """

    name = "encoder"
    multi_valued = False
    max_len = 1

    @abstractmethod
    def fit(self, values: pd.Series) -> "Encoder":
        """Learn the vocabulary (or bins) from a column."""

    @abstractmethod
    def transform(self, values: pd.Series) -> np.ndarray:
        """Indices of a column's values; 0 where unknown."""

    @property
    def fitted(self) -> bool:
        """Whether fit (or from_state) has given this encoder its vocabulary or bins. An encoder that does not say
        (the first plugin guide's form) is taken as fitted, as it always was."""
        return True

    def require_fitted(self, action: str) -> None:
        """One clear error for every use of an unfitted encoder."""
        if not self.fitted:
            raise RuntimeError(f"{self.name} encoder: call fit() before {action}")

    def fit_transform(self, values: pd.Series) -> np.ndarray:
        return self.fit(values).transform(values)

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of indices, 0 included."""

    @abstractmethod
    def state(self) -> dict[str, Any]:
        """JSON-serialisable fitted state (constructor options included)."""

    @classmethod
    @abstractmethod
    def from_state(cls, state: dict[str, Any]) -> "Encoder":
        """The encoder `state()` describes."""

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"encoder": self.name, "state": self.state()}))

    @classmethod
    def load(cls, path: str | Path) -> "Encoder":
        payload = json.loads(Path(path).read_text())
        if payload.get("encoder") != cls.name:
            raise ValueError(f"{path}: holds a {payload.get('encoder')!r} encoder, not {cls.name!r}")
        return cls.from_state(payload["state"])


class VocabularyEncoder(Encoder):
    """An encoder whose indices 1..n stand for the values of a sorted vocabulary, `classes` (0: unknown)."""

    classes: pd.Index | None = None

    @property
    def fitted(self) -> bool:
        return self.classes is not None

    @property
    def vocab_size(self) -> int:
        self.require_fitted("vocab_size")
        return len(self.classes) + 1


def check_encoder(encoder: Any) -> list[str]:
    """What `encoder` lacks of the encoder contract (empty when it meets it)."""
    missing = [f"a {m}() method" for m in ("fit", "transform", "fit_transform", "state")
               if not callable(getattr(encoder, m, None))]
    if not hasattr(type(encoder), "vocab_size"):
        missing.append("a vocab_size property (indices, 0 included)")
    if not isinstance(getattr(encoder, "multi_valued", None), bool):
        missing.append("a bool attribute multi_valued")
    return missing
