"""`bench run`: load the data once, then train and test each model on each seed, recording every run."""

from __future__ import annotations

import ast
import platform
import subprocess
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

import bench
import registry
from bench.data.pipeline import prepare
from bench.data.types import InteractionData
from bench.device import resolve_device, seed_everything
from bench.evaluator import evaluate
from bench.store import ResultStore
from bench.trainer import TRAIN_KEYS, TrainConfig, train

DEFAULT_MODELS = ("deepfm", "xdeepfm", "neumf")


@dataclass
class DataConfig:
    dataset: str = "ml-100k"
    data_dir: str | None = None
    cache_dir: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    threshold: float = 4.0
    min_interactions: int = 3

    def label(self) -> str:
        """Names the data a result is about: dataset, its options, non-default positive threshold / min."""
        options = dict(self.options)
        if self.threshold != 4.0:
            options["threshold"] = self.threshold
        if self.min_interactions != 3:
            options["min_interactions"] = self.min_interactions
        opts = ",".join(f"{k}={v}" for k, v in sorted(options.items()))
        return f"{self.dataset}[{opts}]" if opts else self.dataset


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    models: tuple[str, ...] = DEFAULT_MODELS
    seeds: tuple[int, ...] = (1,)
    protocol: str = "full"  # test protocol: full or sampled
    eval_negatives: int = 999
    ks: tuple[int, ...] = (5, 10, 20)
    ties: str = "expected"
    device: str = "auto"
    fm_dim: int = 16
    model_params: dict[str, dict[str, Any]] = field(default_factory=dict)  # per model: hparams / train keys


def parse_value(text: str) -> Any:
    """'0.1' -> 0.1, '[64,32]' -> [64, 32], 'true' -> True, anything else stays a string."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_sets(items: tuple[str, ...] | list[str], models: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """--set MODEL.PARAM=VALUE (MODEL may be 'train' or '*' for every model)."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        target, dot, param = key.partition(".")
        if not sep or not dot or not param:
            raise ValueError(f"--set {item!r}: expected MODEL.PARAM=VALUE, e.g. deepfm.dropout=0.1 or train.lr=3e-3")
        targets = list(models) if target in ("*", "train") else [target]
        for t in targets:
            if t not in models:
                raise ValueError(f"--set {item!r}: model {t!r} is not among --models ({', '.join(models)})")
            out.setdefault(t, {})[param] = parse_value(value)
    return out


def load_data(config: DataConfig) -> InteractionData:
    dataset = registry.create("dataset", config.dataset, data_dir=config.data_dir, cache_dir=config.cache_dir,
                              **config.options)
    data = prepare(dataset.load(), threshold=config.threshold, min_interactions=config.min_interactions)
    data.name = config.label()
    return data


def split_params(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Separate a model's hyperparameters from the training knobs (lr, batch_size, ...) in one dict."""
    model_kw = {k: v for k, v in params.items() if k not in TRAIN_KEYS}
    train_kw = {k: v for k, v in params.items() if k in TRAIN_KEYS}
    return model_kw, train_kw


def build_model(name: str, data: InteractionData, fm_dim: int, params: dict[str, Any]) -> torch.nn.Module:
    model = registry.create("model", name, spec=data.spec, fm_dim=params.pop("fm_dim", fm_dim), **params)
    model.prepare(data)
    return model


def versions() -> dict[str, str]:
    return {"deepfm-bench": bench.__version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "pandas": pd.__version__, "platform": platform.platform(),
            "threads": str(torch.get_num_threads())}


def git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def run_one(data: InteractionData, name: str, seed: int, config: RunConfig, store: ResultStore,
            on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> int:
    """Train and test one model on one seed; the run is in the store whatever happens. Returns its id."""
    device = resolve_device(config.device)
    params = dict(config.model_params.get(name, {}))
    registry_name = params.pop("registry_model", name.split(":")[0])  # 'deepfm:tuned' is a deepfm
    model_kw, train_kw = split_params(params)
    train_cfg = replace(config.train, seed=seed, **train_kw)
    record = {"registry_model": registry_name, "model_params": model_kw, "train": train_cfg.to_dict(),
              "fm_dim": config.fm_dim,
              "ks": list(config.ks), "dataset": asdict(config.data)}
    run_id = store.start_run(dataset=data.name, model=name, seed=seed, device=str(device),
                             protocol=config.protocol, ties=config.ties,
                             num_negatives=config.eval_negatives if config.protocol == "sampled" else None,
                             config=record, versions=versions(), git_commit=git_commit())
    history: list[dict[str, Any]] = []
    try:
        start = time.perf_counter()
        seed_everything(seed)
        model = build_model(registry_name, data, config.fm_dim, dict(model_kw)).to(device)
        result = None
        if model.trainable:
            def track(epoch: int, row: dict[str, float]) -> None:
                history.append(row)
                if on_epoch is not None:
                    on_epoch(epoch, row)

            result = train(model, data, train_cfg, device, on_epoch=track)
        test = evaluate(model, data, split="test", protocol=config.protocol, ks=config.ks, ties=config.ties,
                        num_negatives=config.eval_negatives, seed=seed, device=device)
        wall = time.perf_counter() - start
        timings = {
            "wall_s": wall,
            "params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "epochs": result.epochs_run if result else 0,
            "best_epoch": result.best_epoch if result else 0,
            "train_s": result.train_seconds if result else 0.0,
            "sampling_s": result.sampling_seconds if result else 0.0,
            "val_eval_s": result.eval_seconds if result else 0.0,
            "train_samples_per_s": result.samples_per_s if result else float("nan"),
            "test_eval_s": test.seconds,
            "eval_users_per_s": test.users_per_s,
            "test_candidates_mean": test.n_candidates,  # sampled: < N+1 where a user has too few unseen items
        }
        store.finish_run(run_id, metrics=test.metrics, history=history, timings=timings, users=test.users,
                         per_user=test.per_user)
    except KeyboardInterrupt:
        store.end_run(run_id, "interrupted", "KeyboardInterrupt", history)
        raise
    except Exception as exc:  # recorded as failed with its reason; the caller decides whether to go on
        store.end_run(run_id, "failed", f"{type(exc).__name__}: {exc}", history)
        raise
    return run_id


def run_benchmark(config: RunConfig, store: ResultStore, data: InteractionData | None = None,
                  log: Callable[[str], None] = print) -> list[int]:
    """Every model on every seed; a failed run is recorded and reported, the others go on."""
    data = data if data is not None else load_data(config.data)
    for name in config.models:  # unknown names, bad training or sampler options fail before any training
        params = config.model_params.get(name, {})
        registry.get("model", params.get("registry_model", name.split(":")[0]))
        replace(config.train, **split_params(params)[1])
    ids = []
    for name in config.models:
        for seed in config.seeds:
            try:
                ids.append(run_one(data, name, seed, config, store))
                log(f"{name} seed {seed}: done")
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                log(f"{name} seed {seed}: FAILED ({type(exc).__name__}: {exc})")
    return ids
