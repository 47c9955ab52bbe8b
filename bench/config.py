"""The one experiment configuration: what a run is, from the command line to the stored record.

An experiment is data + training + evaluation settings, the models (each a `ModelConfig`), seeds and a
device. Each part is a typed dataclass that checks itself when created, so bad input fails before any
work. The CLI, `--set`, `--params` and the tuner fill it one way, and each run stores its own resolved
configuration (`run_record`), from which `ExperimentConfig.from_record` rebuilds it.

Precedence, lowest first; each layer overrides the ones before it, key by key:

1. the defaults of the dataclasses below;
2. the command line's options (``--epochs``, ``--lr``, ``--embed-dim``, ``--protocol``, ...), for every model;
3. tuned parameters (``--params best`` or a file), for the ``NAME:tuned`` model they were tuned for;
4. ``--set MODEL.KEY=VALUE`` (``train.KEY=VALUE``: a training option of every model), the most specific.

Layers 3 and 4 are flat ``{key: value}`` dicts, sorted by `ModelConfig.with_params` into training
options (the `TrainConfig` fields), the data options a model may set for itself (its history length and
pooling), the embedding dim and the model's own options; an Optuna trial's parameters go through the same
function.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import Any

import registry
from bench.eval.metrics import CUTOFF_METRICS, TIE_POLICIES, check_ks
from bench.text import has_control

THRESHOLD = 4.0  # rating >= THRESHOLD is a positive (MovieLens: 4 and 5 stars)
HISTORY = 10  # positives in the history of a `NAME+history` model when --history does not say
HISTORY_ORDERS = ("time", "shuffled")
SPLIT_KINDS = ("loo", "global")
MIN_INTERACTIONS = 3  # users with fewer positives have no validation and test item: they train only
PROTOCOLS = ("full", "sampled")
SCHEDULES = ("constant", "cosine")
OPTIMIZERS = ("adam", "lazy_adam")
LOSSES = ("bce", "sampled_softmax", "softmax")
EMBED_DIMS = (8, 16, 32, 64)  # the tuner's choices of the embedding dim


def comma_list(value: str | Sequence[Any] | None) -> list[str]:
    """'a, b,,c' or ['a', 'b'] or None -> ['a', 'b', 'c'] / ['a', 'b'] / []: every comma list the user
    writes (models, seeds, metrics, layer widths, interactions) is split here."""
    if value is None:
        return []
    parts = value.split(",") if isinstance(value, str) else list(value)
    return [str(p).strip() for p in parts if str(p).strip()]


def check_number(option: str, value: object, *, low: float | None = None, high: float | None = None,
                 integer: bool = False, high_open: bool = False) -> float:
    """A hyperparameter checked for type and range, or a ValueError naming it and what was expected:
    `check_number("dropout", v, low=0, high=1, high_open=True)` takes 0.2, refuses 'abc', 2 and True."""
    kind = "an integer" if integer else "a number"
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = number and (not integer or float(value).is_integer()) and value == value  # NaN is not a number here
    if ok and low is not None:
        ok = value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        if low is not None and high is not None:
            span = f" in [{low:g}, {high:g}{')' if high_open else ']'}"
        elif low is not None:
            span = f" >= {low:g}"
        else:
            span = f" <= {high:g}" if high is not None else ""
        raise ValueError(f"{option}: expected {kind}{span}, got {value!r}")
    return int(value) if integer else float(value)


def parse_value(text: str) -> Any:
    """'0.1' -> 0.1, '[64,32]' -> [64, 32], 'true' -> True, anything else stays a string.

    A ValueError naming the value for one that is too long or nested too deeply to read: Python's parser
    ends in a RecursionError or MemoryError on those (e.g. 100,000 '['), which would be a traceback."""
    max_chars = 100_000
    if len(text) > max_chars:
        raise ValueError(f"value {text[:20]!r}... is {len(text):,} characters long; at most {max_chars:,} are read")
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    too_deep = f"value {text[:20]!r}{'...' if len(text) > 20 else ''} is nested too deeply to read"
    try:
        return ast.literal_eval(text)
    except (RecursionError, MemoryError):
        raise ValueError(too_deep) from None
    except SyntaxError as exc:
        if "too many nested" in str(exc.msg):
            raise ValueError(too_deep) from None
        return text
    except (ValueError, TypeError):  # TypeError: '{[1]: 2}', a dict keyed by a list
        return text


@dataclass(frozen=True)
class Option:
    """One data, training or evaluation option, declared once: its help, kind and range or choices. The
    dataclass field that holds it gives its name and default; the command line's flag (``--name``, or `flag`
    where it is spelled otherwise), the checks on every value (from the command line, `--set`, a tuned-params
    file, an Optuna trial or a stored run) and the stored record all follow from here."""

    help: str
    kind: type = object  # int, float, str, bool, dict (KEY=VALUE pairs) or tuple (a comma list of ints)
    low: float | None = None
    high: float | None = None
    high_open: bool = False
    choices: tuple[str, ...] | None = None
    flag: str = ""  # the flag's name where it is not the field's ("sampler-opt" for sampler_options)
    aliases: tuple[str, ...] = ()  # older spellings of the flag, still taken
    path: bool = False  # a folder on this machine
    envvar: str | None = None
    plugin: str | None = None  # the registry kind a value names (checked there: unknown names list the known)
    check: Any = None  # a further check of the value, raising ValueError: (label, value) -> the value to keep

    def flag_name(self, field_name: str) -> str:
        return self.flag or field_name.replace("_", "-")

    def validate(self, label: str, value: Any) -> Any:
        """The value as kept, or a ValueError naming the option (`label`) and what was expected."""
        if value is None and (self.path or self.envvar):
            return value
        if self.kind in (int, float):
            value = check_number(label, value, low=self.low, high=self.high, high_open=self.high_open,
                                 integer=self.kind is int)
        elif self.kind is bool and not isinstance(value, bool):
            raise ValueError(f"{label}: expected true or false, got {value!r}")
        elif self.kind is str and not isinstance(value, str):
            raise ValueError(f"{label}: expected text, got {value!r}")
        elif self.kind is dict and not isinstance(value, dict):
            raise ValueError(f"{label}: expected KEY=VALUE options, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{label} {value!r}: expected one of {', '.join(self.choices)}")
        if self.plugin is not None:
            try:
                registry.get(self.plugin, value)
            except registry.UnknownPluginError as exc:
                raise ValueError(f"{label}: {exc}") from None
        return self.check(label, value) if self.check is not None else value


def option(default: Any, help: str, **declared: Any) -> Any:
    """A dataclass field holding an `Option` (its kind that of the default unless given)."""
    declared.setdefault("kind", type(default) if default is not None else str)
    spec = Option(help, **declared)
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata={"option": spec})
    return field(default=default, metadata={"option": spec})


def options_of(cls: Any) -> list[tuple[str, Any, Option]]:
    """(name, default, Option) of each declared option of a configuration class, in declaration order."""
    out = []
    for f in fields(cls):
        if "option" in f.metadata:
            default = f.default_factory() if f.default_factory is not MISSING else f.default  # type: ignore[misc]
            out.append((f.name, default, f.metadata["option"]))
    return out


def check_options(config: Any) -> None:
    """Check every declared option of a (frozen) configuration, keeping each value as its Option gives it."""
    for name, _, spec in options_of(type(config)):
        value = spec.validate(f"--{spec.flag_name(name)}", getattr(config, name))
        object.__setattr__(config, name, value)


def _check_ks(label: str, value: Any) -> tuple[int, ...]:
    try:
        return check_ks(value)
    except ValueError as exc:
        raise ValueError(f"{label}: {exc}") from None


def _positive(label: str, value: float) -> float:
    if not value > 0:
        raise ValueError(f"{label}: expected a positive number, got {value!r}")
    return value


def _check_val_metric(label: str, value: str) -> str:
    name, at, k = value.partition("@")
    if not (value == "MRR" or (name in CUTOFF_METRICS and at and k.isdigit() and int(k) >= 1)):
        raise ValueError(f"{label}: expected MRR or one of {', '.join(CUTOFF_METRICS)} with a cutoff "
                         f"(e.g. NDCG@10), got {value!r}")
    return value


@dataclass(frozen=True)
class DataConfig:
    """Where the data comes from and how ratings become implicit positives."""

    dataset: str = option("ml-100k", "dataset plugin (bench list dataset)", plugin="dataset")
    data_dir: str | None = option(None, "local copy of the files (else BENCH_DATA_DIR, else the cache or a download)",
                                  path=True)
    cache_dir: str | None = option(None, "download cache [default ~/.cache/deepfm-bench]", path=True,
                                   envvar="BENCH_CACHE_DIR")
    options: dict[str, Any] = option({}, "the dataset plugin's own option, e.g. interactions=ratings.csv for "
                                         "--dataset csv (repeatable)", flag="dataset-opt")
    split: str = option("loo", "loo: each user's last positive is the test item, the one before it the validation "
                               "item; global: two cutoffs on one timeline, nothing at or after the first trains",
                        choices=SPLIT_KINDS)
    split_options: dict[str, Any] = option({}, "the split's option: val=Q and test=Q for --split global, each a "
                                               "quantile of the positives' timestamps in (0, 1), a timestamp or an "
                                               "ISO date (default val=0.8, test=0.9)", flag="split-opt")
    threshold: float = option(THRESHOLD, "rating >= threshold is a positive")
    min_interactions: int = option(MIN_INTERACTIONS, "users with fewer positives go to train only", low=2)
    history: int = option(0, "the user's last N earlier positives as a feature, for every model (0: none); a model "
                             f"named NAME+history gets it alone (N, or {HISTORY} when N is 0)", low=0)
    history_encoder: str = option("mean", "how a model reads the history: a history encoder plugin (bench list "
                                          "history_encoder: mean, recency, target, transformer, gru)",
                                  plugin="history_encoder", aliases=("--history-pooling",))
    history_options: dict[str, Any] = option({}, "the history encoder's own option, e.g. layers=2 for transformer "
                                                 "(repeatable)", flag="history-opt")
    history_order: str = option("time", "time: the window holds the last L earlier positives; shuffled: L of the "
                                        "earlier positives in a random (seeded) order, a control for whether order "
                                        "matters", choices=HISTORY_ORDERS)

    def __post_init__(self) -> None:
        check_options(self)

    def key(self) -> str:
        """One string per distinct configuration (the prepared data's cache key)."""
        import json

        return json.dumps(asdict(self), sort_keys=True, default=str)

    def label(self) -> str:
        """Names the data a result is about: dataset, its options, non-default positive threshold / min. The
        history is a model's choice of features, recorded with each run, not part of the data's name."""
        options = dict(self.options)
        if self.split != "loo":
            options["split"] = self.split
            options.update({f"split.{k}": v for k, v in self.split_options.items()})
        if self.threshold != THRESHOLD:
            options["threshold"] = self.threshold
        if self.min_interactions != MIN_INTERACTIONS:
            options["min_interactions"] = self.min_interactions
        opts = ",".join(f"{k}={v}" for k, v in sorted(options.items()))
        return f"{self.dataset}[{opts}]" if opts else self.dataset


@dataclass(frozen=True)
class TrainConfig:
    """How a trained model learns: BCE on each positive and its sampled negatives, Adam, early stopping."""

    epochs: int = option(30, "most epochs to train", low=1)
    batch_size: int = option(256, "training rows per gradient step", low=1)
    lr: float = option(1e-3, "Adam's learning rate", low=0, check=lambda label, v: _positive(label, v))
    weight_decay: float = option(1e-5, "Adam's weight decay", low=0)
    patience: int = option(10, "epochs without a better validation metric before stopping "
                               "(results/ml-100k-stability.md)", low=1)
    num_negatives: int = option(4, "training negatives per positive", low=1)
    sampler: str = option("uniform", "negative sampler plugin (bench list sampler)", plugin="sampler")
    sampler_options: dict[str, Any] = option({}, "sampler option, e.g. alpha=0.5 for popularity (repeatable)",
                                             flag="sampler-opt")
    val_metric: str = option("NDCG@10", "the validation metric early stopping follows (MRR, or HR, NDCG, Recall "
                                        "or MAP at a cutoff)", check=_check_val_metric)
    smoothing: float = option(0.0, "stop and choose on an exponential moving average of the validation metric "
                                   "with this weight on the past (0: the raw values)", low=0, high=1, high_open=True)
    average: int = option(1, "restore the mean of the weights of the best epoch and the N - 1 epochs before it",
                          low=1)
    schedule: str = option("constant", "learning rate schedule: constant, or cosine-annealed over the epochs",
                           choices=SCHEDULES)
    val_users: int = option(0, "early stopping ranks a fixed subset of this many validation users (0: all, or as "
                               "many as --val-budget pays for)", low=0)
    val_budget: float = option(0.25, "validation during training may cost at most this share of a training epoch: "
                                     "when a full pass would cost more (timed on 2,000 users after the first epoch), a "
                                     "fixed subset of validation users is ranked (0: always every user)", low=0)
    optimizer: str = option("adam", "adam, or lazy_adam: Adam on the looked-up embedding rows only (large tables)",
                            choices=OPTIMIZERS)
    loss: str = option("bce", "bce: each positive and negative row on its own; sampled_softmax: a softmax over each "
                              "positive and its negatives; softmax: over every item (models that score all items of "
                              "a batch at once: sasrec, gru4rec, pair-scoring FeatureEmbedding models)",
                       choices=LOSSES)
    deterministic: bool = option(False, "torch's deterministic algorithms: a CUDA run repeats bit for bit (CPU "
                                        "runs always do)")
    seed: int = 0  # each run's own, from --seeds

    def __post_init__(self) -> None:
        check_options(self)
        make_sampler(self)  # an unknown sampler or sampler option fails here, before any work

    @property
    def val_k(self) -> int:
        """The cutoff validation computes (MRR needs none: 10)."""
        return int(self.val_metric.split("@")[1]) if "@" in self.val_metric else 10


TRAIN_KEYS = tuple(f.name for f in fields(TrainConfig) if f.name != "seed")  # what --set train.KEY may name
DATA_KEYS = ("history", "history_encoder", "history_options", "history_order")  # data options a model may set


def make_sampler(config: TrainConfig) -> Any:
    """The configured negative sampler, not fitted yet; unknown option names are a ValueError that names
    the --sampler-opt option."""
    try:
        return registry.create("sampler", config.sampler, num_negatives=config.num_negatives, seed=config.seed,
                               **config.sampler_options)
    except TypeError as exc:
        raise ValueError(f"--sampler-opt: {exc}") from exc


@dataclass(frozen=True)
class EvalConfig:
    """How held-out items are ranked, for validation (early stopping, tuning) and test alike."""

    protocol: str = option("full", "full: rank every item; sampled: the held-out item among --eval-negatives",
                           choices=PROTOCOLS)
    eval_negatives: int = option(999, "negatives per user, sampled protocol", low=1)
    ks: tuple[int, ...] = option((5, 10, 20), "cutoffs of HR@K, NDCG@K, MAP@K", flag="k", kind=tuple,
                                 check=_check_ks)
    ties: str = option("expected", "how candidates tied with the held-out item are ranked", choices=TIE_POLICIES)

    def __post_init__(self) -> None:
        check_options(self)


@dataclass(frozen=True)
class ModelConfig:
    """One model of an experiment: its label, the plugin that builds it, and its own settings."""

    name: str  # the label in tables and the store: deepfm, deepfm:tuned, composed
    plugin: str = ""  # the registry name; '' -> the label's part before ':'
    embed_dim: int = 16
    params: dict[str, Any] = field(default_factory=dict)  # the model's own hyperparameters
    train: dict[str, Any] = field(default_factory=dict)  # training options overriding the experiment's
    data: dict[str, Any] = field(default_factory=dict)  # data options of its own (DATA_KEYS: the history's)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip() or has_control(self.name):
            raise ValueError(f"--models: a model label must be printable text, got {self.name!r}")
        if not self.plugin:  # 'deepfm:tuned' and 'deepfm+history' are deepfms
            object.__setattr__(self, "plugin", self.name.split(":")[0].split("+")[0])
        unknown = sorted(set(self.data) - set(DATA_KEYS))
        if unknown:
            raise ValueError(f"model {self.name}: {unknown} are not data options a model may set; they are: "
                             f"{', '.join(DATA_KEYS)}")
        check_number(f"model {self.name}: embed_dim", self.embed_dim, low=1, integer=True)
        unknown = sorted(set(self.train) - set(TRAIN_KEYS))
        if unknown:
            raise ValueError(f"model {self.name}: {unknown} are not training options; they are: "
                             f"{', '.join(TRAIN_KEYS)}")

    def with_params(self, params: Mapping[str, Any]) -> "ModelConfig":
        """This model with flat `params` applied: training options to `train`, `embed_dim` (or its old name
        `fm_dim`) to the dim, everything else to the model's own options."""
        params = _renamed(dict(params))
        train = {k: params.pop(k) for k in list(params) if k in TRAIN_KEYS}
        data = {k: params.pop(k) for k in list(params) if k in DATA_KEYS}
        encoder = {k.partition(".")[2]: params.pop(k) for k in list(params) if k.startswith("history.")}
        if encoder:  # the history encoder's own knobs, as its search space names them: "history.layers"
            data["history_options"] = {**self.data.get("history_options", {}), **data.get("history_options", {}),
                                       **encoder}
        embed_dim = params.pop("embed_dim", self.embed_dim)
        return replace(self, embed_dim=embed_dim, params={**self.params, **params}, train={**self.train, **train},
                       data={**self.data, **data})

    @property
    def wants_history(self) -> bool:
        """Labelled NAME+history, or a model that reads nothing else (`needs_history`, e.g. sasrec)."""
        return "+history" in self.name or bool(getattr(registry.get("model", self.plugin), "needs_history", 0))

    def data_config(self, base: DataConfig) -> DataConfig:
        """The data this model trains and is tested on: the experiment's, with its own data options; a model
        that wants history gets a history of --history positives, or when that is 0 the length its plugin
        declares (`needs_history`), else HISTORY."""
        data = dict(self.data)
        if self.wants_history and not data.get("history"):
            declared = getattr(registry.get("model", self.plugin), "needs_history", 0)
            data["history"] = base.history or declared or HISTORY
        return replace(base, **data)

    def train_config(self, base: TrainConfig, seed: int) -> TrainConfig:
        """The training options this model trains with on `seed`."""
        return replace(base, **self.train, seed=seed)


@dataclass(frozen=True)
class ExperimentConfig:
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    models: tuple[ModelConfig, ...] = (ModelConfig("deepfm"), ModelConfig("xdeepfm"), ModelConfig("neumf"))
    seeds: tuple[int, ...] = (1,)
    device: str = "auto"

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("--models: expected at least one model")
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"--models: a model is named twice in {names}")
        bad = [s for s in self.seeds if isinstance(s, bool) or not isinstance(s, int) or s < 0]
        if bad or not self.seeds:
            raise ValueError(f"--seeds: expected integers >= 0, got {list(self.seeds)}")

    def model(self, name: str) -> ModelConfig:
        return next(m for m in self.models if m.name == name)

    def run_record(self, model: ModelConfig, seed: int) -> dict[str, Any]:
        """What the store keeps of one run's configuration: everything needed to run it again."""
        return {"data": asdict(model.data_config(self.data)), "train": asdict(model.train_config(self.train, seed)),
                "eval": asdict(self.eval), "model": asdict(model), "seed": seed, "device": self.device}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "ExperimentConfig":
        """The one-model, one-seed experiment a stored run record describes."""
        train = dict(record["train"])
        seed = train.pop("seed", record.get("seed", 0))
        model = _renamed(dict(record["model"]))
        evaluation = dict(record["eval"])
        evaluation["ks"] = tuple(evaluation["ks"])
        return cls(data=DataConfig(**_renamed(dict(record["data"]))), train=TrainConfig(**train),
                   eval=EvalConfig(**evaluation),
                   models=(ModelConfig(**{**model, "train": {}, "data": {}}),), seeds=(seed,),
                   device=record.get("device", "auto"))


RENAMED = {"fm_dim": "embed_dim", "history_pooling": "history_encoder"}  # old names stored runs and files still use


def _renamed(values: dict[str, Any]) -> dict[str, Any]:
    """Options under their current names (a stored run or a tuned-params file may use an older one)."""
    for old, new in RENAMED.items():
        if old in values:
            values.setdefault(new, values.pop(old))
        values.pop(old, None)
    return values


def apply_sets(models: tuple[ModelConfig, ...], items: Sequence[str]) -> tuple[ModelConfig, ...]:
    """--set MODEL.KEY=VALUE (MODEL 'train': a training option of every model; '*': every model)."""
    names = [m.name for m in models]
    updates: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        target, dot, param = key.partition(".")
        if not sep or not dot or not param:
            raise ValueError(f"--set {item!r}: expected MODEL.PARAM=VALUE, e.g. deepfm.dropout=0.1 or train.lr=3e-3")
        if target == "train" and param not in TRAIN_KEYS:
            raise ValueError(f"--set {item!r}: {param!r} is not a training option; training options: "
                             f"{', '.join(TRAIN_KEYS)} (a model's option is set as MODEL.{param})")
        targets = names if target in ("*", "train") else [target]
        for t in targets:
            if t not in names:
                raise ValueError(f"--set {item!r}: model {t!r} is not among --models ({', '.join(names)})")
            updates.setdefault(t, {})[param] = parse_value(value)
    return tuple(m.with_params(updates[m.name]) if m.name in updates else m for m in models)
