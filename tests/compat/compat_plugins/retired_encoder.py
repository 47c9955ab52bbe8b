"""The encoder form of the first plugin guide (README at eb2280b): a bench.encoding.Encoder subclass with fit,
transform, vocab_size, state and from_state. Its module moved (bench.data.encoding) and `fitted` became abstract:
kept working: the bench.encoding shim warns (FutureWarning), `fitted` defaults to True (see test_compat.py)."""

import numpy as np
import pandas as pd

from bench.encoding import Encoder


class LengthEncoder(Encoder):
    """A value's length in characters, capped: 1..cap, 0 for an empty value."""

    name = "compat-length"

    def __init__(self, cap=5):
        self.cap = int(cap)

    def fit(self, values):
        return self

    def transform(self, values):
        return np.minimum(pd.Series(values).astype(str).str.len().to_numpy(), self.cap).astype(np.int64)

    @property
    def vocab_size(self):
        return self.cap + 1

    def state(self):
        return {"cap": self.cap}

    @classmethod
    def from_state(cls, state):
        return cls(**state)
