"""`bench run`: load the data once, then train (or fit) and test each model on each seed, recording every run.

Everything checkable is checked before the data loads (`check_models`: each model is built once, with its
options, on a tiny probe spec) and again on the real feature spec before any model trains, so a bad option
never waits behind minutes of other models' training.
"""

from __future__ import annotations

import difflib
import importlib.util
import inspect
import platform
import re
import subprocess
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

import bench
import registry
from bench.config import DataConfig, ExperimentConfig, ModelConfig
from bench.data.features import FeatureSpec
from bench.data.pipeline import prepare
from bench.data.types import DatasetFrames, InteractionData
from bench.device import resolve_device, seed_everything
from bench.eval.evaluator import evaluate
from bench.interrupts import interrupt_reason
from bench.nn.model import RankingModel, create_model
from bench.results.checkpoints import EXTRA as CHECKPOINTS_EXTRA
from bench.results.checkpoints import checkpoint_path, keep_checkpoint
from bench.results.store import ResultStore
from bench.train.trainer import train

# A tiny feature spec every built-in model can be built on: model options are checked by building the
# model on it before any data loads (a model that cannot be built on it is checked on the real data).
PROBE_SPEC = FeatureSpec.build([
    {"name": "user_id", "side": "user", "vocab_size": 3, "is_id": True},
    {"name": "age", "side": "user", "vocab_size": 3},
    {"name": "item_id", "side": "item", "vocab_size": 3, "is_id": True},
    {"name": "genres", "side": "item", "vocab_size": 4, "multi_valued": True, "max_len": 2},
])
OPTION_ERRORS = (ValueError, TypeError, registry.RegistryError)


def load_frames(config: DataConfig) -> DatasetFrames:
    """The dataset plugin's frames. Its own clear errors (ValueError, OSError: a bad file, a missing folder)
    pass through; anything else it raises, or a result that is not DatasetFrames, names the plugin."""
    dataset = registry.create("dataset", config.dataset, data_dir=config.data_dir, cache_dir=config.cache_dir,
                              **config.options)
    try:
        frames = dataset.load()
    except (ValueError, OSError, registry.RegistryError, MemoryError):
        raise
    except Exception as exc:
        raise registry.PluginFailedError(f"{registry.origin('dataset', config.dataset)}: load() raised "
                                         f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(frames, DatasetFrames):
        raise registry.PluginFailedError(f"{registry.origin('dataset', config.dataset)}: load() returned "
                                         f"{type(frames).__name__}, expected bench.data.types.DatasetFrames")
    return frames


def prepare_data(frames: DatasetFrames, config: DataConfig) -> InteractionData:
    data = prepare(frames, threshold=config.threshold, min_interactions=config.min_interactions,
                   history=config.history, history_encoder=config.history_encoder,
                   history_options=config.history_options, history_order=config.history_order, split=config.split,
                   split_options=config.split_options)
    data.name = config.label()
    check_split(data, config)
    return data


def protocol_facts(data: InteractionData) -> dict[str, Any]:
    """What the data side of a run's protocol card needs beyond its configuration: the split's cutoffs, the
    users evaluated and left out as cold, and the leakage audit (`bench.results.card`)."""
    info = data.info
    return {"split": info.get("split", "loo"), "cutoffs": info.get("cutoffs"), "cold": info.get("cold"),
            "evaluated": {"val": len(data.val), "test": len(data.test)}, "audit": info.get("audit"),
            "n_items": data.n_items - 1}


def check_split(data: InteractionData, config: DataConfig) -> None:
    """Refuse, once and before any run, data whose split leaves nothing to rank, evaluate or train on (each
    run would otherwise fail alone, or train on nothing and still print a leaderboard)."""
    name = f"dataset {config.label()}"
    if data.n_items - 1 < 2:
        raise ValueError(f"{name}: {data.n_items - 1} item(s) with a positive: nothing to rank (a held-out "
                         "item needs at least one other candidate)")
    if len(data.test) == 0:
        most = int(np.bincount(data.train.users).max()) if len(data.train) else 0
        raise ValueError(f"{name}: no user has --min-interactions {config.min_interactions} positives (rating >= "
                         f"{config.threshold:g}; the most any user has is {most}): nothing to evaluate; lower "
                         "--min-interactions or --threshold")
    if len(data.train) == 0:
        raise ValueError(f"{name}: every positive is held out as a validation or test item (no user has more "
                         "than two positives): nothing to train on")


def load_data(config: DataConfig) -> InteractionData:
    return prepare_data(load_frames(config), config)


class DataSource:
    """The dataset read once, and prepared once per data configuration the models ask for (models differ
    in their history options); `DataSource.fixed(data)` serves one prepared dataset (tests, notebooks)."""

    def __init__(self, frames: DatasetFrames | None = None, fixed: InteractionData | None = None):
        self.frames, self.fixed_data = frames, fixed
        self.prepared: dict[str, InteractionData] = {}

    @classmethod
    def fixed(cls, data: InteractionData) -> "DataSource":
        return cls(fixed=data)

    def get(self, config: DataConfig) -> InteractionData:
        if self.fixed_data is not None:
            if config.history != self.fixed_data.states.length:
                raise ValueError(f"this data was prepared with history {self.fixed_data.states.length}, not "
                                 f"{config.history}")
            return self.fixed_data
        key = config.key()
        if key not in self.prepared:
            if self.frames is None:
                self.frames = load_frames(config)
            self.prepared[key] = prepare_data(self.frames, config)
        return self.prepared[key]


def _unknown_options(model: ModelConfig) -> None:
    """Option names the model's constructor does not take, with a did-you-mean (a constructor taking
    **options, like the composed models' '<layer>.<option>' ones, checks its own)."""
    parameters = inspect.signature(registry.get("model", model.plugin)).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    known = [n for n in parameters if n != "spec"]
    for key in model.params:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"model {model.name}: unknown option {key!r}{hint}; its options: {', '.join(known)}")


def _canonical(value: Any) -> Any:
    """A JSON file's [128, 64] and a search space's "128,64" are the default (128, 64): lists and width strings
    read as tuples, at any depth."""
    if isinstance(value, str) and re.fullmatch(r"\d+(,\d+)*", value.replace(" ", "")):
        return tuple(int(v) for v in value.replace(" ", "").split(","))
    if isinstance(value, (list, tuple)):
        return tuple(_canonical(v) for v in value)
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    return value


def _model_options(model: ModelConfig) -> dict[str, Any]:
    """The options the model's plugin is built with, its constructor's defaults filled in; a layer's option
    ('afm.att_dim', taken through **options) set to that interaction layer's default reads as unset."""
    parameters = inspect.signature(registry.get("model", model.plugin)).parameters
    options = {**registry.defaults("model", model.plugin), **model.params}
    for key in [k for k in model.params if "." in k and k not in parameters]:
        layer, _, option = key.partition(".")
        known = registry.defaults("interaction", layer) if layer in registry.available("interaction") else {}
        if option in known and _canonical(known[option]) == _canonical(options[key]):
            del options[key]
    for dim in ("embed_dim", "fm_dim"):  # what create_model passes: the model's dim, where the plugin takes one
        if dim in parameters:
            options[dim] = model.embed_dim
    return _canonical(options)


def same_configuration(a: ModelConfig, b: ModelConfig, config: ExperimentConfig) -> bool:
    """Whether two models of `config` would train and test the same thing: one plugin, the same options once
    the defaults are filled in, the same training options and the same data."""
    return (a.plugin == b.plugin and _model_options(a) == _model_options(b)
            and a.train_config(config.train, 0) == b.train_config(config.train, 0)
            and a.data_config(config.data) == b.data_config(config.data))


def check_models(config: ExperimentConfig, spec: FeatureSpec | None = None) -> None:
    """Each model built once with its options: on `spec`, or before the data loads on `PROBE_SPEC` (where a
    model whose defaults do not build there is left to the check on the real spec)."""
    for model in config.models:
        _unknown_options(model)
        if spec is None:
            try:
                create_model(model.plugin, PROBE_SPEC, model.embed_dim)
            except Exception:  # noqa: BLE001 - this model needs the real data to be built; checked there
                continue
        try:
            create_model(model.plugin, spec or PROBE_SPEC, model.embed_dim, **model.params)
        except OPTION_ERRORS as exc:
            raise ValueError(f"model {model.name}: {exc}") from None


def check_on_data(config: ExperimentConfig, source: "DataSource") -> None:
    """Every model built on its real feature spec (the data loaded and prepared), before any trains; a model
    asked to train with a softmax over every item must be able to score them all at once."""
    for model in config.models:
        spec = source.get(model.data_config(config.data)).spec
        check_models(replace(config, models=(model,)), spec)
        if model.train_config(config.train, 0).loss == "softmax":
            built = create_model(model.plugin, spec, model.embed_dim, **model.params)
            if built.trainable and not built.all_items:
                raise ValueError(f"model {model.name}: --loss softmax needs a model that scores every item of a batch "
                                 "at once (sasrec, gru4rec, or one whose layers all score pairs from the two sides); "
                                 "use --loss sampled_softmax")


def check_config(config: ExperimentConfig) -> None:
    """What can be checked without the data: model names, per-model training options, model options."""
    for model in config.models:
        registry.get("model", model.plugin)
        model.train_config(config.train, config.seeds[0])  # TrainConfig checks itself
    check_models(config)


def build_model(model: ModelConfig, data: InteractionData) -> RankingModel:
    """The model on the data's feature spec; a model that is not trained is fitted here."""
    built = create_model(model.plugin, data.spec, model.embed_dim, **model.params)
    if not built.trainable:
        built.fit(data)
    return built


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


def run_one(data: InteractionData, model: ModelConfig, seed: int, config: ExperimentConfig, store: ResultStore,
            on_epoch: Callable[[int, dict[str, float]], None] | None = None, progress: bool = False,
            checkpoint: bool = True, tracker: Any = None, log: Callable[[str], None] | None = None) -> int:
    """Train (or fit) and test one model on one seed; the run is in the store whatever happens. Returns its id.
    `checkpoint`: once finished, keep the model beside the store (`bench.results.checkpoints`); `tracker`: log the
    run to MLflow as well (`bench.results.tracking`; its failures never fail the run)."""
    device = resolve_device(config.device)
    evaluation = config.eval
    train_cfg = model.train_config(config.train, seed)
    record = {**config.run_record(model, seed), "data_checksum": data.info.get("checksum"),
              "protocol": protocol_facts(data)}
    run_id = store.start_run(dataset=data.name, model=model.name, seed=seed, device=str(device),
                             protocol=evaluation.protocol, ties=evaluation.ties,
                             num_negatives=evaluation.eval_negatives if evaluation.protocol == "sampled" else None,
                             config=record, versions=versions(), git_commit=git_commit())
    tracked = tracker.start(f"{model.name} seed {seed}", record, {
        "run_id": run_id, "model": model.name, "seed": seed, "git_commit": git_commit(),
        "data_checksum": data.info.get("checksum"), "split": data.info.get("split", "loo"),
        "protocol": evaluation.protocol}) if tracker else None
    metric = train_cfg.val_metric
    history: list[dict[str, Any]] = []
    try:
        start = time.perf_counter()
        seed_everything(seed, train_cfg.deterministic)
        built = build_model(model, data).to(device)
        fit_s = time.perf_counter() - start
        result = None
        if built.trainable:
            def track(epoch: int, row: dict[str, float]) -> None:
                history.append(row)
                if tracker:
                    tracker.epoch(tracked, epoch, {"loss": row["loss"], f"val_{metric}": row[f"val_{metric}"]})
                if on_epoch is not None:
                    on_epoch(epoch, row)

            result = train(built, data, train_cfg, evaluation, device, on_epoch=track, progress=progress, log=log)
        test = evaluate(built, data, "test", evaluation, seed=seed, device=device, top=True)  # + beyond accuracy
        timings = {
            "wall_s": time.perf_counter() - start,
            "params": sum(p.numel() for p in built.parameters() if p.requires_grad),
            "fit_s": 0.0 if built.trainable else fit_s,
            "epochs": result.epochs_run if result else 0,
            "best_epoch": result.best_epoch if result else 0,
            "train_s": result.train_seconds if result else 0.0,
            "sampling_s": result.sampling_seconds if result else 0.0,
            "val_eval_s": result.eval_seconds if result else 0.0,
            "val_users": result.val_users if result else 0,  # ranked by early stopping (fewer: the budget)
            "train_samples_per_s": result.samples_per_s if result else float("nan"),
            "test_eval_s": test.seconds,
            "eval_users_per_s": test.users_per_s,
            "test_candidates_mean": test.n_candidates,  # sampled: < N+1 where a user has too few unseen items
        }
        store.finish_run(run_id, metrics=test.metrics, history=history, timings=timings, users=test.users,
                         per_user=test.per_user, notes=result.warnings if result else [])
    except KeyboardInterrupt as exc:
        store.end_run(run_id, "interrupted", interrupt_reason(exc), history)
        if tracker:
            tracker.finish(tracked, {}, status="KILLED")
        raise
    except Exception as exc:  # recorded as failed with its reason; the caller decides whether to go on
        store.end_run(run_id, "failed", f"{type(exc).__name__}: {exc}", history)
        if tracker:
            tracker.finish(tracked, {}, status="FAILED")
        raise
    if checkpoint:  # after the run is recorded finished; a checkpoint that cannot be written is only a warning
        keep_checkpoint(built, store.dir, run_id, record, data.info.get("checksum"))
    if tracker:
        _track_finish(tracker, tracked, test, timings, checkpoint_path(store.dir, run_id))
    return run_id


def _track_finish(tracker: Any, tracked: str | None, test: Any, timings: dict[str, Any], checkpoint: Path) -> None:
    """The test metrics with their 95% intervals over users, the timings, the per-user values and the checkpoint."""
    from bench.eval.stats import bootstrap_interval

    metrics = dict(test.metrics)
    for name, values in test.per_user.items():
        if len(values) > 1:
            metrics[f"{name}_ci_low"], metrics[f"{name}_ci_high"] = bootstrap_interval(np.asarray(values)[None, :])
    metrics.update({k: v for k, v in timings.items() if isinstance(v, (int, float))})
    per_user = pd.DataFrame({"user_row": test.users, **test.per_user}).to_csv(index=False)
    tracker.finish(tracked, metrics, {"per_user.csv": per_user,
                                      "checkpoint.safetensors": checkpoint if checkpoint.is_file() else None})


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


def run_benchmark(config: ExperimentConfig, store: ResultStore, data: InteractionData | DataSource | None = None,
                  log: Callable[[str], None] = print, epoch_lines: bool = False, progress: bool = False,
                  checkpoints: bool = True, tracker: Any = None) -> Outcome:
    """Every model on every seed; a failed run is recorded and reported, the others go on.

    `data`: the prepared data (one configuration for every model) or a `DataSource`; by default the
    experiment's data, prepared per model's data options. `epoch_lines`: log one line per epoch (loss,
    validation metric, time), the sign of life a log file gets where a terminal gets progress bars.
    `checkpoints`: keep each finished run's model beside the store (False: --no-checkpoint; without the
    safetensors package, one warning and none kept). `tracker`: log each run to MLflow too."""
    check_config(config)
    if checkpoints and importlib.util.find_spec("safetensors") is None:
        warnings.warn(f"no checkpoints are kept: they need the safetensors package ({CHECKPOINTS_EXTRA})",
                      stacklevel=2)
        checkpoints = False
    source = data if isinstance(data, DataSource) else DataSource.fixed(data) if data is not None else DataSource()
    check_on_data(config, source)
    outcome = Outcome()
    for model in config.models:
        data = source.get(model.data_config(config.data))
        metric = model.train_config(config.train, 0).val_metric
        for seed in config.seeds:
            def line(epoch: int, row: dict[str, float], name: str = model.name, seed: int = seed,
                     metric: str = metric) -> None:
                seconds = row["sample_s"] + row["train_s"] + row["eval_s"]
                log(f"{name} seed {seed} epoch {epoch}: loss {row['loss']:.4f}, val {metric} "
                    f"{row[f'val_{metric}']:.4f}, {seconds:.1f} s")

            try:
                on_epoch = line if epoch_lines else None
                outcome.finished.append(run_one(data, model, seed, config, store, on_epoch, progress, checkpoints,
                                                tracker, lambda m, name=model.name, seed=seed: log(
                                                    f"{name} seed {seed}: {m}")))
                log(f"{model.name} seed {seed}: done")
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
                outcome.failures.append(Failure(model.name, seed, reason))
                log(f"{model.name} seed {seed}: FAILED ({reason})")
    return outcome
