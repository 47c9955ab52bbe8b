"""The leakage audit: how much of the training data lies after the interactions a split evaluates.

A per-user split (leave-one-out) trains on other users' interactions from after a user's test interaction:
the model learns the future (what became popular later; Ji et al., ACM TOIS 2023). For each evaluated
interaction at time t, the audit asks whether training holds an interaction of *another* user later than t,
and how much later the latest one is (the lag). A global-timeline split has none by construction.
"""

from __future__ import annotations

import numpy as np

DAY = 86_400


def leakage_audit(train_users: np.ndarray, train_times: np.ndarray, eval_users: np.ndarray,
                  eval_times: np.ndarray, seconds_per_unit: float | None = None) -> dict[str, float | int | None]:
    """For evaluated interactions (user row, time): the share preceded in the training data by a later
    interaction of another user, and the median lag of the latest such one (in days when `seconds_per_unit`
    says how many seconds a timestamp unit is, else in the data's own unit). Vectorised: each user's latest
    training time, and the two largest over users (another user's latest is the largest unless it is the
    user's own)."""
    if len(eval_users) == 0 or len(train_users) == 0:
        return {"evaluated": int(len(eval_users)), "with_later_training": 0, "share": 0.0, "median_lag": None,
                "lag_unit": "days" if seconds_per_unit else "timestamp units"}
    train_users, eval_users = np.asarray(train_users, np.int64), np.asarray(eval_users, np.int64)
    latest = np.full(int(max(train_users.max(), eval_users.max())) + 1, -np.inf)
    np.maximum.at(latest, train_users, np.asarray(train_times, np.float64))
    top, second = np.argsort(latest)[::-1][:2] if len(latest) > 1 else (0, 0)
    others = np.where(eval_users == top, latest[second], latest[top])  # the latest training time of another user
    lag = others - np.asarray(eval_times, np.float64)
    later = lag > 0
    scale = seconds_per_unit / DAY if seconds_per_unit else 1.0
    return {"evaluated": int(len(lag)), "with_later_training": int(later.sum()), "share": float(later.mean()),
            "median_lag": float(np.median(lag[later]) * scale) if later.any() else None,
            "lag_unit": "days" if seconds_per_unit else "timestamp units"}
