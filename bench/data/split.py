"""Temporal leave-one-out on implicit positives: each user's last positive is the test item.

Positives are interactions with rating >= threshold. Per user they are ordered by timestamp; ties
(two ratings in the same second, which ML-100K has for the last two positives of 305 of its 942
users) are broken by *file order*: sorting on (user, timestamp, position in the interactions frame) is
a stable sort on (user, timestamp), so of two tied rows the later one in the file counts as later
(the test item). Then last -> test, second last -> validation, the rest -> train; a user with fewer
than `min_interactions` positives goes to train entirely. Done with one sort and a group-wise count,
no per-user loop. A (user, item) pair liked more than once (click logs) counts once, at its latest
occurrence: otherwise an earlier copy of the held-out item would sit in the training data.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.config import MIN_INTERACTIONS, THRESHOLD

TRAIN, VAL, TEST = "train", "val", "test"
REQUIRED = ("user_id", "item_id", "rating", "timestamp")


def implicit_positives(interactions: pd.DataFrame, threshold: float = THRESHOLD) -> pd.DataFrame:
    """Rows with rating >= threshold plus their file position (column `position`), in file order."""
    missing = [c for c in REQUIRED if c not in interactions.columns]
    if missing:
        raise ValueError(f"interactions frame lacks columns {missing}; expected {list(REQUIRED)}")
    ratings = pd.to_numeric(interactions["rating"], errors="coerce")
    if ratings.isna().any():
        row = int(np.flatnonzero(ratings.isna().to_numpy())[0])
        raise ValueError(
            f"interactions row {row}: rating {interactions['rating'].iloc[row]!r} is missing or not a number"
        )
    keep = (ratings >= threshold).to_numpy()
    if not keep.any():
        raise ValueError(
            f"threshold {threshold} leaves no positives: ratings range from {ratings.min()} to "
            f"{ratings.max()}; choose a threshold within that range"
        )
    positives = interactions.loc[keep, list(REQUIRED)].reset_index(drop=True)
    positives["position"] = np.flatnonzero(keep)
    if positives["timestamp"].isna().any():
        row = int(positives.loc[positives["timestamp"].isna(), "position"].iloc[0])
        raise ValueError(f"interactions row {row}: a positive without a timestamp cannot be ordered in time")
    return positives


def temporal_split(
    interactions: pd.DataFrame, threshold: float = THRESHOLD, min_interactions: int = MIN_INTERACTIONS
) -> pd.DataFrame:
    """The positives sorted by (user, time, file position), with a column `split`: train / val / test."""
    if min_interactions < 2:
        raise ValueError(f"min_interactions must be >= 2 (one validation and one test item), got {min_interactions}")
    positives = implicit_positives(interactions, threshold)
    # position is unique, so this order is total: timestamp ties fall back to file order
    positives = positives.sort_values(["user_id", "timestamp", "position"])
    positives = positives.drop_duplicates(["user_id", "item_id"], keep="last").reset_index(drop=True)
    users = positives.groupby("user_id", sort=False)
    count = users["user_id"].transform("size").to_numpy()
    from_end = count - 1 - users.cumcount().to_numpy()
    eligible = count >= min_interactions
    split = np.full(len(positives), TRAIN, dtype=object)
    split[eligible & (from_end == 1)] = VAL
    split[eligible & (from_end == 0)] = TEST
    positives["split"] = split
    return positives
