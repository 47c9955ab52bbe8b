"""An encoder, a dataset that uses it, and a negative sampler, as the guide documents them."""

import numpy as np
import pandas as pd

from bench.data.base import DatasetPlugin, NegativeSampler, TrainSamples
from bench.data.encoding import Encoder
from bench.data.types import ColumnSchema, DatasetFrames


class HashEncoder(Encoder):
    """The guide's encoder: values hashed into `buckets` indices (1..buckets, 0 for an empty value)."""

    name = "compat-hash"

    def __init__(self, buckets=1000):
        self.buckets = int(buckets)

    def fit(self, values):
        return self

    def transform(self, values):
        text = pd.Series(values).astype(str)
        codes = pd.util.hash_pandas_object(text, index=False).to_numpy() % self.buckets + 1
        return np.where(text.to_numpy() == "", 0, codes).astype(np.int64)

    fitted = True

    @property
    def vocab_size(self):
        return self.buckets + 1

    def state(self):
        return {"buckets": self.buckets}

    @classmethod
    def from_state(cls, state):
        return cls(**state)


class TinyRatings(DatasetPlugin):
    """Small random ratings (options n_users, n_items, seed): users with a city (encoded by `city_encoder`, the
    hashing one by default), items with tags."""

    name = "compat-tiny"

    def load(self):
        n_users, n_items = int(self.options.get("n_users", 40)), int(self.options.get("n_items", 60))
        rng = np.random.default_rng(int(self.options.get("seed", 0)))
        per_user = 25
        users = np.repeat(np.arange(1, n_users + 1), per_user)
        items = np.concatenate([rng.choice(n_items, per_user, replace=False) + 1 for _ in range(n_users)])
        interactions = pd.DataFrame({"user_id": users, "item_id": items,
                                     "rating": rng.integers(1, 6, len(users)).astype(float),
                                     "timestamp": rng.permutation(len(users)) + 1_000_000})
        cities = np.array(["oslo", "lima", "pune", ""])
        tags = np.array(["a", "b", "c", "d"])
        user_frame = pd.DataFrame({"user_id": np.arange(1, n_users + 1), "city": cities[rng.integers(0, 4, n_users)]})
        item_frame = pd.DataFrame({"item_id": np.arange(1, n_items + 1),
                                   "tags": ["|".join(rng.choice(tags, rng.integers(0, 3), replace=False))
                                            for _ in range(n_items)]})
        encoder = self.options.get("city_encoder", "compat-hash")
        schema = [ColumnSchema("user_id", "user", "label", is_id=True),
                  ColumnSchema("city", "user", encoder, {"buckets": 7} if encoder == "compat-hash" else {}),
                  ColumnSchema("item_id", "item", "label", is_id=True),
                  ColumnSchema("tags", "item", "multihot", {"sep": "|"})]
        return DatasetFrames(self.name, interactions, user_frame, item_frame, schema)


class EasyNegatives(NegativeSampler):
    """The guide's sampler: negatives weighted toward unpopular items, never a training positive."""

    name = "compat-easy"

    def fit(self, data):
        self.data = data
        weights = 1.0 / (1.0 + data.item_counts())
        weights[0] = 0.0
        self.p = weights / weights.sum()
        return self

    def sample(self, epoch):
        rng = np.random.default_rng((self.seed, epoch))
        train = self.data.train
        owners = np.repeat(np.arange(len(train)), self.num_negatives)
        users = train.users[owners]
        items = rng.choice(len(self.p), size=len(owners), p=self.p)
        redraw = np.flatnonzero(self.data.train_csr.contains(users, items))
        while redraw.size:
            items[redraw] = rng.choice(len(self.p), size=redraw.size, p=self.p)
            redraw = redraw[self.data.train_csr.contains(users[redraw], items[redraw])]
        positives = np.concatenate([np.arange(len(train)), owners])
        labels = np.concatenate([np.ones(len(train)), np.zeros(len(owners))])
        return TrainSamples(positives, np.concatenate([train.items, items]), labels)


class UserRowNegatives(NegativeSampler):
    """A sampler as the guide wrote it before user states (41c5827): TrainSamples(users, items, labels), the
    first array holding user rows. Retired without a warning: see test_compat.py."""

    name = "compat-user-rows"

    def fit(self, data):
        self.data = data
        return self

    def sample(self, epoch):
        rng = np.random.default_rng((self.seed, epoch))
        train = self.data.train
        users = np.repeat(train.users, self.num_negatives)
        items = rng.integers(1, self.data.n_items, size=len(users))
        redraw = np.flatnonzero(self.data.train_csr.contains(users, items))
        while redraw.size:
            items[redraw] = rng.integers(1, self.data.n_items, size=redraw.size)
            redraw = redraw[self.data.train_csr.contains(users[redraw], items[redraw])]
        labels = np.concatenate([np.ones(len(train)), np.zeros(len(users))])
        return TrainSamples(np.concatenate([train.users, users]), np.concatenate([train.items, items]), labels)
