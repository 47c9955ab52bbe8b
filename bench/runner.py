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
from bench.data.features import FeatureSpec
from bench.data.pipeline import prepare
from bench.data.types import InteractionData
from bench.device import resolve_device, seed_everything
from bench.evaluator import evaluate
from bench.interrupts import interrupt_reason
from bench.nn.layers import check_number
from bench.nn.model import create_model
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
    """--set MODEL.PARAM=VALUE (MODEL may be 'train', for a training option of every model, or '*')."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        target, dot, param = key.partition(".")
        if not sep or not dot or not param:
            raise ValueError(f"--set {item!r}: expected MODEL.PARAM=VALUE, e.g. deepfm.dropout=0.1 or train.lr=3e-3")
        if target == "train" and param not in TRAIN_KEYS:
            raise ValueError(f"--set {item!r}: {param!r} is not a training option; training options: "
                             f"{', '.join(TRAIN_KEYS)} (a model's option is set as MODEL.{param})")
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


# A tiny feature spec every built-in model can be built on: model options are checked by building the
# model on it before any data loads (a model that cannot be built on it is checked on the real data).
PROBE_SPEC = FeatureSpec.build([
    {"name": "user_id", "side": "user", "vocab_size": 3, "is_id": True},
    {"name": "age", "side": "user", "vocab_size": 3},
    {"name": "item_id", "side": "item", "vocab_size": 3, "is_id": True},
    {"name": "genres", "side": "item", "vocab_size": 4, "multi_valued": True, "max_len": 2},
])
OPTION_ERRORS = (ValueError, TypeError, registry.RegistryError)


def model_plugin(config: "RunConfig", name: str) -> str:
    """The registry name of a run's model: 'deepfm:tuned' is a deepfm; --params may name another."""
    return config.model_params.get(name, {}).get("registry_model", name.split(":")[0])


def check_config(config: "RunConfig") -> None:
    """Everything checkable without the data, so bad input fails before any data loads or model trains:
    model names, per-model training overrides, and each model's options (the model is built once on
    `PROBE_SPEC` with them; a model whose defaults do not build there is checked on the real data)."""
    if not config.models:
        raise ValueError("--models: expected at least one model")
    bad_seeds = [s for s in config.seeds if isinstance(s, bool) or not isinstance(s, int) or s < 0]
    if bad_seeds or not config.seeds:
        raise ValueError(f"--seeds: expected integers >= 0, got {list(config.seeds)}")
    check_number("--fm-dim", config.fm_dim, low=1, integer=True)
    for name in config.models:
        model_kw, train_kw = split_params(dict(config.model_params.get(name, {})))
        model_kw.pop("registry_model", None)
        replace(config.train, **train_kw)  # TrainConfig checks itself
        plugin = model_plugin(config, name)
        registry.get("model", plugin)
        fm_dim = model_kw.pop("fm_dim", config.fm_dim)
        try:
            _build(plugin, PROBE_SPEC, config.fm_dim, {})
        except Exception:  # noqa: BLE001 - this model needs the real data to be built; checked there
            continue
        try:
            _build(plugin, PROBE_SPEC, fm_dim, model_kw)
        except OPTION_ERRORS as exc:
            raise ValueError(f"model {name}: {exc}") from None


def check_models_on_data(config: "RunConfig", data: InteractionData) -> None:
    """Build every model once on the real feature spec before any of them trains."""
    for name in config.models:
        model_kw = split_params(dict(config.model_params.get(name, {})))[0]
        model_kw.pop("registry_model", None)
        try:
            _build(model_plugin(config, name), data.spec, config.fm_dim, model_kw)
        except OPTION_ERRORS as exc:
            raise ValueError(f"model {name}: {exc}") from None


def split_params(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Separate a model's hyperparameters from the training knobs (lr, batch_size, ...) in one dict."""
    model_kw = {k: v for k, v in params.items() if k not in TRAIN_KEYS}
    train_kw = {k: v for k, v in params.items() if k in TRAIN_KEYS}
    return model_kw, train_kw


def _build(name: str, spec: FeatureSpec, embed_dim: int, params: dict[str, Any]) -> torch.nn.Module:
    params = dict(params)
    return create_model(name, spec, params.pop("fm_dim", params.pop("embed_dim", embed_dim)), **params)


def build_model(name: str, data: InteractionData, fm_dim: int, params: dict[str, Any]) -> torch.nn.Module:
    model = _build(name, data.spec, fm_dim, params)
    if not model.trainable:
        model.fit(data)
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
    registry_name = model_plugin(config, name)
    params.pop("registry_model", None)
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
                         per_user=test.per_user, notes=result.warnings if result else [])
    except KeyboardInterrupt as exc:
        store.end_run(run_id, "interrupted", interrupt_reason(exc), history)
        raise
    except Exception as exc:  # recorded as failed with its reason; the caller decides whether to go on
        store.end_run(run_id, "failed", f"{type(exc).__name__}: {exc}", history)
        raise
    return run_id


@dataclass
class Failure:
    """A requested run that did not finish, and why."""

    model: str
    seed: int
    reason: str


@dataclass
class Outcome:
    """What one `run_benchmark` call did: the ids of the runs it finished, and the ones that failed."""

    finished: list[int] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)


def run_benchmark(config: RunConfig, store: ResultStore, data: InteractionData | None = None,
                  log: Callable[[str], None] = print, epoch_lines: bool = False) -> Outcome:
    """Every model on every seed; a failed run is recorded and reported, the others go on.

    `epoch_lines`: log one line per epoch (loss, validation metric, time), the sign of life a log file gets
    where a terminal gets progress bars."""
    check_config(config)
    data = data if data is not None else load_data(config.data)
    check_models_on_data(config, data)
    outcome = Outcome()
    for name in config.models:
        for seed in config.seeds:
            def line(epoch: int, row: dict[str, float], name: str = name, seed: int = seed) -> None:
                metric = f"val_{config.model_params.get(name, {}).get('val_metric', config.train.val_metric)}"
                seconds = row["sample_s"] + row["train_s"] + row["eval_s"]
                log(f"{name} seed {seed} epoch {epoch}: loss {row['loss']:.4f}, {metric.replace('_', ' ', 1)} "
                    f"{row[metric]:.4f}, {seconds:.1f} s")

            try:
                on_epoch = line if epoch_lines else None
                outcome.finished.append(run_one(data, name, seed, config, store, on_epoch=on_epoch))
                log(f"{name} seed {seed}: done")
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
                outcome.failures.append(Failure(name, seed, reason))
                log(f"{name} seed {seed}: FAILED ({reason})")
    return outcome
