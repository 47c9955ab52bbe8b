"""Synthetic ratings in the ML-100K schema at any size, with signal a feature-aware model can learn.

Why it is learnable: users get latent taste vectors built from their age bucket, gender and occupation
(plus individual noise) and items get vectors from their genres (plus noise). Which items a user rates is
drawn without replacement with weight popularity x exp(taste . item) (Zipf-like popularity), and the
rating rises with the same affinity, so features and ids predict high ratings beyond popularity alone.
Fully vectorised numpy (users processed in blocks), deterministic by seed. Sizes whose generation would
need more memory than the machine has available are refused before anything is drawn.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd

from bench.data.base import DatasetPlugin
from bench.data.readers import check_memory, take_options
from bench.data.types import DatasetFrames
from plugins.datasets.movielens import AGE_BINS, GENRE_ENCODINGS, ML100K_GENRES, genre_fields, ml100k_schema

# ML-100K's occupations (u.occupation order) and how many of its users have each: realistic frequencies.
OCCUPATIONS = {
    "administrator": 79, "artist": 28, "doctor": 7, "educator": 95, "engineer": 67, "entertainment": 18,
    "executive": 32, "healthcare": 16, "homemaker": 7, "lawyer": 12, "librarian": 51, "marketing": 26,
    "none": 9, "other": 105, "programmer": 66, "retired": 14, "salesman": 12, "scientist": 31,
    "student": 196, "technician": 27, "writer": 45,
}
# Relative genre frequencies (Drama and Comedy common, "unknown" almost never).
GENRE_WEIGHTS = np.array([0.01, 2.5, 1.3, 0.4, 1.2, 5.0, 1.1, 0.5, 7.2, 0.2, 0.2, 0.9, 0.6, 0.6, 2.5,
                          1.0, 2.5, 0.7, 0.3])
RATING_SHARES = np.array([0.061, 0.114, 0.271, 0.342, 0.212])  # ML-100K's share of 1..5 stars
LATENT_DIM = 8
ZIPF_EXPONENT, ZIPF_OFFSET = 1.2, 0.024  # popularity ~ 1 / (rank + offset * n_items)^exponent (Zipf-Mandelbrot)
AFFINITY_WEIGHT = 1.5  # how strongly taste (vs popularity) decides what a user rates
MIN_PER_USER = 20  # as in ML-100K, every user rates at least this many items (when the total allows)
START, SPAN = 874_724_710, 214 * 86_400  # ML-100K's first timestamp and time span (seconds)
BLOCK = 2_000_000  # scores computed per block of users: block rows x n_items floats
# Peak memory of load() per user, item and interaction, measured (ru_maxrss) at 10^5-10^7 of each: the
# taste vectors and frames, the genre keys and ranks, and the interaction arrays and their gathered tastes.
BYTES_PER = {"n_users": 200, "n_items": 600, "n_interactions": 180}
BLOCK_BYTES = 4 * 8 * BLOCK  # one block's affinity, keys, Gumbel noise and ranking


class SyntheticDataset(DatasetPlugin):
    """Synthetic ML-100K-shaped data of any size (n_users, n_items, n_interactions, seed) with learnable signal."""

    name = "synthetic"
    defaults: ClassVar[dict[str, Any]] = {"n_users": 943, "n_items": 1682, "n_interactions": 100_000, "seed": 0,
                                          "genre_encoding": "multihot"}

    def load(self) -> DatasetFrames:
        opts = take_options(self.name, self.options, self.defaults, text=("genre_encoding",))
        n_users, n_items, n = (_int_option(opts, k) for k in ("n_users", "n_items", "n_interactions"))
        if n > n_users * n_items:
            raise ValueError(f"dataset 'synthetic': n_interactions={n} exceeds n_users * n_items = "
                             f"{n_users * n_items} (each user rates an item at most once)")
        _check_memory({"n_users": n_users, "n_items": n_items, "n_interactions": n})
        if opts["genre_encoding"] not in GENRE_ENCODINGS:
            raise ValueError(f"dataset 'synthetic': option genre_encoding must be one of {GENRE_ENCODINGS}, "
                             f"got {opts['genre_encoding']!r}")
        rng = np.random.default_rng(_int_option(opts, "seed", minimum=0))
        users, user_taste = _users(rng, n_users)
        genre_flags, item_taste = _items(rng, n_items)
        interactions = _interactions(rng, user_taste, item_taste, n)
        items = pd.DataFrame({"item_id": np.arange(1, n_items + 1),
                              **genre_fields(genre_flags, ML100K_GENRES, opts["genre_encoding"])})
        return DatasetFrames(self.name, interactions, users, items, ml100k_schema(opts["genre_encoding"]),
                             seconds_per_unit=1.0)


def _int_option(opts: dict, key: str, minimum: int = 1) -> int:
    """An integer option >= minimum; a string of digits (from a command line) is accepted too."""
    value = opts[key]
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"dataset 'synthetic': option {key} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_memory(sizes: dict[str, int]) -> None:
    """Refuse sizes whose generation would not fit in the available memory, naming the option that needs
    the most and the total, before anything is allocated."""
    parts = {key: BYTES_PER[key] * value for key, value in sizes.items()}
    largest = max(parts, key=parts.get)
    others = " and ".join(f"{key}={value:,}" for key, value in sizes.items() if key != largest)
    check_memory(sum(parts.values()) + BLOCK_BYTES, f"dataset 'synthetic': {largest}={sizes[largest]:,} with {others}",
                 f"choose a smaller {largest} (about {BYTES_PER[largest]} bytes each)")


def _users(rng: np.random.Generator, n: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Demographics drawn like ML-100K's, and a taste vector per user built from them."""
    age = np.clip(np.rint(rng.normal(34, 12, n)), 7, 73).astype(np.int64)
    male = rng.random(n) < 0.71
    counts = np.array(list(OCCUPATIONS.values()), dtype=np.float64)
    occupation = rng.choice(len(OCCUPATIONS), size=n, p=counts / counts.sum())
    bucket = np.digitize(age, AGE_BINS[1:-1])
    parts = [rng.standard_normal((k, LATENT_DIM)) for k in (len(AGE_BINS) - 1, 2, len(OCCUPATIONS))]
    shared = (parts[0][bucket] + parts[1][male.astype(int)] + parts[2][occupation]) / np.sqrt(3)
    taste = 0.8 * shared + 0.6 * rng.standard_normal((n, LATENT_DIM))
    frame = pd.DataFrame({
        "user_id": np.arange(1, n + 1),
        "age": age,
        "gender": np.where(male, "M", "F"),
        "occupation": np.array(list(OCCUPATIONS))[occupation],
    })
    return frame, taste


def _items(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """1-3 genres per item (Gumbel top-k by genre frequency) and a taste vector from them."""
    n_genres = len(ML100K_GENRES)
    k = 1 + rng.binomial(2, 0.35, n)
    keys = np.log(GENRE_WEIGHTS) + rng.gumbel(size=(n, n_genres))
    rank = np.argsort(np.argsort(-keys, axis=1), axis=1)
    flags = rank < k[:, None]
    genre_vectors = rng.standard_normal((n_genres, LATENT_DIM))
    taste = 0.8 * (flags @ genre_vectors) / np.sqrt(k)[:, None] + 0.6 * rng.standard_normal((n, LATENT_DIM))
    return flags, taste


def _per_user_counts(rng: np.random.Generator, n_users: int, n_items: int, n: int) -> np.ndarray:
    """How many items each user rates: a floor, then a heavy-tailed share of the rest, capped at n_items."""
    floor = min(MIN_PER_USER, n // n_users)
    activity = rng.lognormal(0.0, 0.75, n_users)
    counts = floor + rng.multinomial(n - floor * n_users, activity / activity.sum())
    while (excess := np.clip(counts - n_items, 0, None).sum()) > 0:  # converges: n <= n_users * n_items
        counts = np.minimum(counts, n_items)
        room = n_items - counts
        counts += rng.multinomial(excess, room / room.sum())
    return counts


def _top_k(keys: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each row's k largest keys, largest first."""
    if k < keys.shape[1]:
        part = np.argpartition(-keys, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(keys.shape[1]), keys.shape)
    return np.take_along_axis(part, np.argsort(-np.take_along_axis(keys, part, axis=1), axis=1), axis=1)


def _interactions(rng: np.random.Generator, user_taste: np.ndarray, item_taste: np.ndarray,
                  n: int) -> pd.DataFrame:
    n_users, n_items = len(user_taste), len(item_taste)
    counts = _per_user_counts(rng, n_users, n_items, n)
    log_popularity = -ZIPF_EXPONENT * np.log(rng.permutation(n_items) + max(1.0, ZIPF_OFFSET * n_items))
    quality = rng.standard_normal(n_items)  # some items are liked by everyone
    block = max(1, BLOCK // n_items)
    users, items = [], []
    for start in range(0, n_users, block):  # blocks of users, each fully vectorised
        rows = slice(start, min(start + block, n_users))
        affinity = user_taste[rows] @ item_taste.T / np.sqrt(LATENT_DIM)
        keys = log_popularity + AFFINITY_WEIGHT * affinity + rng.gumbel(size=affinity.shape)
        order = _top_k(keys, int(counts[rows].max()))  # Gumbel top-k: sampling without replacement
        take = np.arange(order.shape[1]) < counts[rows, None]
        users.append(np.nonzero(take)[0] + start)
        items.append(order[take])
    users, items = np.concatenate(users), np.concatenate(items)
    affinity = np.einsum("nd,nd->n", user_taste[users], item_taste[items]) / np.sqrt(LATENT_DIM)
    score = affinity + 0.4 * quality[items] + 0.6 * rng.standard_normal(len(users))
    thresholds = np.quantile(score, np.cumsum(RATING_SHARES)[:-1])
    rating = 1.0 + np.searchsorted(thresholds, score)
    shuffle = rng.permutation(len(users))  # file order = time order, users interleaved
    step = SPAN / len(users)
    noise = rng.normal(0.0, 20 * step, len(users))
    timestamp = START + np.maximum(np.rint(np.arange(len(users)) * step + noise), 0).astype(np.int64)
    return pd.DataFrame({
        "user_id": users[shuffle] + 1,
        "item_id": items[shuffle] + 1,
        "rating": rating[shuffle],
        "timestamp": timestamp,
    })
