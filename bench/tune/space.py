"""What `bench tune` searches: the training knobs every model shares (declared once, here), the model's own
`search_space(trial)`, and with `--sweep` plugin choices as categorical parameters, taken from the registry,
so an installed third-party interaction layer or sampler is swept like a built-in."""

from __future__ import annotations

import itertools
from typing import Any

import optuna

import registry
from bench.config import EMBED_DIMS, DataConfig, ModelConfig, TrainConfig, comma_list

SWEEPS = ("interactions", "sampler", "history")


def common_space(trial: optuna.Trial, loss: str = "bce") -> dict[str, Any]:
    """Training knobs every model shares, and the embedding dim. Under the full softmax (`loss`) every item is a
    negative, so the number of sampled negatives is not searched: it would be an inert dimension."""
    params = {"lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True),
              "weight_decay": trial.suggest_float("weight_decay", 1e-8, 1e-3, log=True)}
    if loss != "softmax":
        params["num_negatives"] = trial.suggest_int("num_negatives", 1, 8)
    params["batch_size"] = trial.suggest_categorical("batch_size", [128, 256, 512, 1024])
    params["embed_dim"] = trial.suggest_categorical("embed_dim", list(EMBED_DIMS))
    return params


def _loadable(kind: str) -> list[str]:
    return [p.name for p in registry.describe(kind) if not p.error]


def interaction_combos() -> tuple[str, ...]:
    """Every set of one to three installed interaction layers ('fm', 'fm,cin', ...), third-party ones included."""
    names = _loadable("interaction")
    return tuple(",".join(c) for n in (1, 2, 3) for c in itertools.combinations(names, n))


HISTORY_LENGTHS = [5, 10, 20, 50]


def trial_params(trial: optuna.Trial, plugin: str, sweep: tuple[str, ...], history: bool = False,
                 encoder: str = "mean", loss: str = "bce") -> tuple[str, dict[str, Any]]:
    """(model plugin, flat params) of one trial: common knobs + the model's space + sweeps, and for a model
    with history its length and its encoder's own knobs (with `--sweep history`, the encoder itself too;
    `encoder` is the one the data names otherwise; `loss` the study's training loss). The params go through
    `ModelConfig.with_params`, like --params and --set. A fitted model (EASE, ItemKNN) has no training knobs:
    only its own space is searched."""
    fitted = "interactions" not in sweep and not getattr(registry.get("model", plugin), "trainable", True)
    params = {} if fitted else common_space(trial, loss)
    if history or "history" in sweep:
        params["history"] = trial.suggest_categorical("history", HISTORY_LENGTHS)
        if "history" in sweep:
            encoder = params["history_encoder"] = trial.suggest_categorical("history_encoder",
                                                                            _loadable("history_encoder"))
        params.update(registry.search_space("history_encoder", encoder, trial))  # "history.layers", ...
    if "interactions" in sweep:
        plugin = "composed"
        params["interactions"] = trial.suggest_categorical("interactions", interaction_combos())
        for name in comma_list(params["interactions"]):
            params.update(registry.search_space("interaction", name, trial))  # "cin.layers", ...
        params["mlp"] = _mlp(trial)
        params["dropout"] = trial.suggest_float("dropout", 0.0, 0.5)
    else:
        params.update(registry.search_space("model", plugin, trial))
    if "sampler" in sweep:
        params["sampler"] = trial.suggest_categorical("sampler", _loadable("sampler"))
        options = registry.search_space("sampler", params["sampler"], trial)  # "popularity.alpha", ...
        params["sampler_options"] = {key.partition(".")[2]: value for key, value in options.items()}
    return plugin, params


def _mlp(trial: optuna.Trial) -> list[int]:
    depth = trial.suggest_int("mlp_depth", 0, 3)
    width = trial.suggest_categorical("mlp_width", [32, 64, 128, 256])
    return [max(width // 2**i, 8) for i in range(depth)]


class _Defaults:
    """A stand-in for an Optuna trial that answers every suggestion with the untuned value of that name, and
    notes when that value lies outside what the search space can propose."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values, self.params, self.outside = values, {}, []

    def _answer(self, name: str, inside: bool) -> Any:
        value = self.values.get(name)
        if value is None or not inside:
            self.outside.append(name)
        self.params[name] = value
        return value

    def suggest_float(self, name: str, low: float, high: float, **_: Any) -> Any:
        return self._answer(name, isinstance(self.values.get(name), (int, float)) and low <= self.values[name] <= high)

    def suggest_int(self, name: str, low: int, high: int, **_: Any) -> Any:
        return self._answer(name, isinstance(self.values.get(name), int) and low <= self.values[name] <= high)

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        return self._answer(name, self.values.get(name) in list(choices))


def _spelled(value: Any) -> Any:
    """A constructor default as the search space spells it: (128, 64, 32) -> '128,64,32'."""
    return ",".join(str(v) for v in value) if isinstance(value, (list, tuple)) else value


def _constructor_defaults(kind: str, name: str) -> dict[str, Any]:
    return {option: _spelled(default) for option, default in registry.defaults(kind, name).items()}


def untuned_params(model: ModelConfig, train: TrainConfig, data: DataConfig,
                   sweep: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """The search-space values of what `bench run` trains without --params: the training options, the
    embedding dim, the history options and the model constructor's defaults (with this model's own
    overrides). `bench tune` enqueues it as a study's first trial, so a tuned configuration is chosen over
    the defaults only when its confirmed validation mean beats theirs. None when the space cannot express
    the defaults (a default outside its ranges) or with --sweep (no single untuned plugin choice)."""
    if sweep:
        return None
    trained = model.train_config(train, train.seed)  # the command line's options with the model's overrides
    resolved_data = model.data_config(data)
    constructor = _constructor_defaults("model", model.plugin)
    for layer in _loadable("interaction"):  # a layer's options, as the space names them: "cin.layers"
        constructor.update({f"{layer}.{k}": v for k, v in
                            _constructor_defaults("interaction", layer).items()})
    values = {**constructor, **{k: _spelled(v) for k, v in model.params.items()},
              **{k: getattr(trained, k) for k in ("lr", "weight_decay", "num_negatives", "batch_size")},
              "embed_dim": model.embed_dim, "history": resolved_data.history,
              **{f"history.{k}": _spelled(v) for k, v in {
                  **_constructor_defaults("history_encoder", resolved_data.history_encoder),
                  **resolved_data.history_options}.items() if k not in ("dim", "length")}}
    defaults = _Defaults(values)
    trial_params(defaults, model.plugin, sweep, history=resolved_data.history > 0,  # type: ignore[arg-type]
                 encoder=resolved_data.history_encoder, loss=train.loss)
    return None if defaults.outside else defaults.params
