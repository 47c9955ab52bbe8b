"""Shared fixtures: small generated data in the real formats, run through the real pipeline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import registry
from bench.data.pipeline import prepare

REPO = Path(__file__).resolve().parent.parent


def ml100k_dir() -> Path | None:
    """The real MovieLens-100K: BENCH_DATA_DIR, else the verified copy beside the checkout, else None:
    the loader then downloads the official archive into its cache (checksum-verified), as for a user."""
    candidates = [os.environ.get("BENCH_DATA_DIR"), REPO.parent / "shared" / "data" / "ml-100k"]
    for c in candidates:
        if c and (Path(c) / "u.data").exists():
            return Path(c)
        if c and (Path(c) / "ml-100k" / "u.data").exists():
            return Path(c) / "ml-100k"
    return None


SMALL = dict(n_users=60, n_items=90, n_interactions=3000, seed=0)


@pytest.fixture(scope="session")
def small_data():
    """A small synthetic dataset (ML-100K schema) through the real encoders, split and pipeline."""
    frames = registry.create("dataset", "synthetic", **SMALL).load()
    return prepare(frames, threshold=4.0, min_interactions=3)
