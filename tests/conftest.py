"""Shared fixtures: small generated data in the real formats, run through the real pipeline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import registry
from bench.data.pipeline import prepare

REPO = Path(__file__).resolve().parent.parent

# `make test` runs the suite in one worker process per core (pytest-xdist): each worker, and every process a test
# starts, then keeps to one thread: two workers of two threads each would oversubscribe two cores
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    import torch

    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def ml100k_dir() -> Path | None:
    """The real MovieLens-100K where it already is: BENCH_DATA_DIR, else the download cache
    (BENCH_CACHE_DIR or ~/.cache/deepfm-bench); None when neither holds it. Nothing is downloaded."""
    from bench.data.download import cache_root

    for c in (os.environ.get("BENCH_DATA_DIR"), cache_root()):
        for folder in (Path(c), Path(c) / "ml-100k") if c else ():
            if (folder / "u.data").is_file():
                return folder
    return None


def require_ml100k() -> Path:
    """ml100k_dir() for the tests marked `integration`; without it they skip, naming how to provide the data,
    except under CI (the CI variable set), where a missing copy is a failure: CI never silently loses them."""
    folder = ml100k_dir()
    if folder is None:
        reason = ("the real MovieLens-100K is not here: set BENCH_DATA_DIR to a folder holding u.data (unzipped "
                  "https://files.grouplens.org/datasets/movielens/ml-100k.zip), or run `bench data` once online "
                  "to fill the cache")
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the real-data tests: {reason}")
        pytest.skip(reason)
    return folder


def worker_env() -> dict[str, str]:
    """The environment of a `bench` process a test starts and kills or races: one thread, and the eager FM
    kernel. Compiling the kernel makes each new process import torch's compiler first (seconds), a cost these
    tests of dying and sharing workers pay once per process; the compiled kernel itself is tested in-process
    (tests/test_kernel.py) and by every in-process run."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "BENCH_FM_COMPILE": "0"}


SMALL = dict(n_users=60, n_items=90, n_interactions=3000, seed=0)
SYNTH_OPTS = {k: v for k, v in SMALL.items() if k != "seed"}
# the same small synthetic data on a command line
SYNTH = ["--dataset", "synthetic"] + [a for k, v in SYNTH_OPTS.items() for a in ("--dataset-opt", f"{k}={v}")]


def tune_config(results_dir, **kw):
    """A TuneConfig of `fm` on the small synthetic data, one epoch a trial, one thread."""
    from dataclasses import replace

    from bench.config import DataConfig, ExperimentConfig, ModelConfig, TrainConfig
    from bench.tune.study import TuneConfig

    experiment = ExperimentConfig(data=DataConfig(dataset="synthetic", options=SYNTH_OPTS), train=TrainConfig(epochs=1),
                                  models=(ModelConfig("fm"),))
    base = TuneConfig(experiment=experiment, model=ModelConfig("fm"), results_dir=str(results_dir), progress=False,
                      threads=1)
    return replace(base, **kw)


@pytest.fixture
def isolated_env(monkeypatch, tmp_path):
    """No test sees the caller's BENCH_DATA_DIR, and none may write to the real ~/.cache."""
    monkeypatch.delenv("BENCH_DATA_DIR", raising=False)
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "default-cache"))


@pytest.fixture
def ml100k(tmp_path) -> Path:
    """A small ML-100K folder in the real formats."""
    from datagen import write_ml100k

    return write_ml100k(tmp_path / "ml-100k")


@pytest.fixture(scope="session")
def small_data():
    """A small synthetic dataset (ML-100K schema) through the real encoders, split and pipeline."""
    frames = registry.create("dataset", "synthetic", **SMALL).load()
    return prepare(frames, threshold=4.0, min_interactions=3)


@pytest.fixture(scope="session")
def small_frames():
    """Small synthetic frames (ML-100K schema), not yet prepared: for tests that prepare them their own way."""
    return registry.create("dataset", "synthetic", n_users=40, n_items=60, n_interactions=1500, seed=3).load()


def benchmark_training_step(benchmark, logits, labels, optimizer) -> None:
    """Time one BCE training step (`logits()` -> (B,)) after checking that 20 steps lower the loss: the timed
    step really trains."""
    import torch.nn.functional as F

    def step():
        loss = F.binary_cross_entropy_with_logits(logits(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    first = step()
    for _ in range(20):
        last = step()
    assert last < first
    benchmark(step)
