"""The splits of implicit positives: temporal leave-one-out (`loo`, the default) and a global timeline (`global`).

loo: each user's last positive is the test item.

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
LATER = "later"  # global split: a positive at or after the validation cutoff that is no target (history only)
SPLITS = ("loo", "global")
CUTOFFS = {"val": 0.8, "test": 0.9}  # global split: quantiles of the positives' timestamps (docs/protocol.md)
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


def global_split(interactions: pd.DataFrame, threshold: float = THRESHOLD, val: float | str = CUTOFFS["val"],
                 test: float | str = CUTOFFS["test"]) -> tuple[pd.DataFrame, dict]:
    """The positives sorted by (user, time, file position) with a column `split` on one global timeline, and the
    cutoffs as timestamps with what was evaluated.

    Two cutoffs t_val < t_test (each a quantile of the positives' timestamps when in (0, 1), else a timestamp
    in the data's own unit, or an ISO date when the timestamps are Unix seconds). Training is every positive
    strictly before t_val: nothing at or after it trains. A user's first positive in [t_val, t_test) is their
    validation target, their first at or after t_test their test target (ties by file order); their other
    positives after t_val are `later`: never trained on, but history for a later target, as for
    leave-one-out. A user with no positive before a cutoff is cold there: not evaluated (counted in the
    returned summary). Duplicated (user, item) pairs count once, at their latest occurrence, as for loo."""
    positives = implicit_positives(interactions, threshold)
    positives = positives.sort_values(["user_id", "timestamp", "position"])
    positives = positives.drop_duplicates(["user_id", "item_id"], keep="last").reset_index(drop=True)
    times = positives["timestamp"].to_numpy()
    t_val, t_test = cutoff(times, val, "val"), cutoff(times, test, "test")
    if not t_val < t_test:
        raise ValueError(f"--split-opt: the validation cutoff ({t_val}) must come before the test cutoff ({t_test})")
    users = positives["user_id"].to_numpy()
    first_of_user = np.ones(len(positives), dtype=bool)
    first_of_user[1:] = users[1:] != users[:-1]
    start = np.maximum.accumulate(np.where(first_of_user, np.arange(len(positives)), 0))
    split = np.where(times < t_val, TRAIN, LATER).astype(object)
    summary: dict = {"cutoffs": {"val": _plain(t_val), "test": _plain(t_test)}, "cold": {}}
    for name, low, high in ((VAL, t_val, t_test), (TEST, t_test, None)):
        inside = (times >= low) & (True if high is None else times < high)
        first = inside.copy()
        first[1:] &= ~(inside[:-1] & (users[1:] == users[:-1]))  # the first inside the window, per user
        # warm: the user has a positive before the cutoff (the position of their run's start is earlier)
        earlier = times[start] < low
        target = first & earlier
        split[target] = name
        summary["cold"][name] = int((first & ~earlier).sum())
    if not (split == TRAIN).any():
        raise ValueError(f"--split global: no positive before the validation cutoff {_plain(t_val)}: nothing to "
                         "train on; move the cutoffs later (--split-opt val=..., test=...)")
    positives["split"] = split
    return positives, summary


def cutoff(times: np.ndarray, value: float | str, name: str) -> float:
    """A cutoff as a timestamp: a quantile of `times` when in (0, 1), a number as given, an ISO date as Unix
    seconds; anything else a ValueError naming --split-opt."""
    if isinstance(value, str):
        try:
            return float(pd.Timestamp(value, tz="UTC").timestamp())
        except ValueError:
            raise ValueError(f"--split-opt {name}={value!r}: expected a quantile in (0, 1), a timestamp or an ISO "
                             "date") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise ValueError(f"--split-opt {name}={value!r}: expected a quantile in (0, 1), a timestamp or an ISO date")
    if 0 < value < 1:  # the "lower" quantile, taken from the sorted values themselves (exact for any integers)
        ordered = np.sort(times)
        return ordered[int(np.floor(value * (len(ordered) - 1)))].item()
    return value


def _plain(value: float) -> float | int:
    return int(value) if float(value).is_integer() else float(value)
