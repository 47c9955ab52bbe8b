"""Experiment files: an experiment kept as YAML, in the structure the store records for each run.

    data:    {dataset: ml-100k, history: 10, ...}      DataConfig's options
    train:   {epochs: 30, lr: 0.001, ...}               TrainConfig's options
    eval:    {protocol: full, ks: [5, 10, 20], ...}     EvalConfig's options
    models:                                             each a name, or a ModelConfig's fields
      - neumf
      - {name: deepfm, embed_dim: 16, params: {dropout: 0.1}, train: {lr: 0.002}, data: {history: 10}}
    seeds: [1, 2, 3]
    device: auto
    baseline: neumf                                     bench run's --baseline

`bench run --config FILE` and `bench tune --config FILE` read it; an option given on the command line
overrides the file's value of that key (docs/cli.md has the whole precedence). `bench report --ids ...
--config-out FILE` writes stored runs back as such a file. Loaded with PyYAML's safe loader only; an unknown
key, a wrong type or a bad value is one error naming the file, the line and the key (with a did-you-mean).
"""

from __future__ import annotations

import difflib
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from bench.config import DATA_KEYS, RENAMED, DataConfig, EvalConfig, ModelConfig, TrainConfig, options_of

SECTIONS = {"data": DataConfig, "train": TrainConfig, "eval": EvalConfig}
TOP = (*SECTIONS, "models", "seeds", "device", "baseline")
MODEL_KEYS = tuple(f.name for f in fields(ModelConfig))


class ConfigFileError(ValueError):
    """An experiment file that cannot be used: one line naming the file, the line and the key."""


def _where(path: Path, node: yaml.Node | None) -> str:
    return f"{path}: line {node.start_mark.line + 1}" if node is not None else str(path)


def _close(key: str, known: tuple[str, ...] | list[str]) -> str:
    match = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _mapping(path: Path, node: yaml.Node, what: str) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    """A mapping node's entries as key -> (key node, value node); anything else is refused naming its line."""
    if not isinstance(node, yaml.MappingNode):
        raise ConfigFileError(f"{_where(path, node)}: {what} must be a mapping of keys to values")
    out = {}
    for key_node, value_node in node.value:
        key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
        if not isinstance(key, str) or not key:
            raise ConfigFileError(f"{_where(path, key_node)}: {what}: keys must be names")
        if key in out:
            raise ConfigFileError(f"{_where(path, key_node)}: {what}: {key!r} is given twice")
        out[key] = (key_node, value_node)
    return out


def _value(node: yaml.Node) -> Any:
    """A node's Python value, by the safe loader's constructors only."""
    return yaml.SafeLoader("").construct_object(node, deep=True)


def load(path: str | Path) -> dict[str, Any]:
    """The file's experiment as {section: {key: value}, "models": [ModelConfig], "seeds": (...), ...}, every
    key known and every value checked; any problem is a ConfigFileError naming the file, line and key."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigFileError(f"--config {path}: cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ConfigFileError(f"--config {path}: is not text (expected a YAML experiment file)") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f": line {mark.line + 1}" if mark is not None else ""
        raise ConfigFileError(f"{path}{line}: not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    if root is None:
        raise ConfigFileError(f"{path}: is empty (expected an experiment: data, train, eval, models, seeds)")
    out: dict[str, Any] = {}
    for key, (key_node, node) in _mapping(path, root, "the experiment").items():
        if key not in TOP:
            raise ConfigFileError(f"{_where(path, key_node)}: unknown key {key!r}{_close(key, TOP)}; an experiment "
                                  f"file has {', '.join(TOP)}")
        if key in SECTIONS:
            out[key] = _section(path, key, node)
        elif key == "models":
            out[key] = _models(path, node)
        elif key == "seeds":
            seeds = _value(node)
            seeds = [seeds] if isinstance(seeds, int) and not isinstance(seeds, bool) else seeds
            if not isinstance(seeds, list) or not seeds or any(
                    isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
                raise ConfigFileError(f"{_where(path, node)}: seeds: expected a list of integers >= 0, got {seeds!r}")
            out[key] = tuple(seeds)
        else:
            value = _value(node)
            if not isinstance(value, str):
                raise ConfigFileError(f"{_where(path, node)}: {key}: expected text, got {value!r}")
            out[key] = value
    return out


def _section(path: Path, name: str, node: yaml.Node) -> dict[str, Any]:
    """One of data / train / eval: each key a declared option of its class, each value checked by it."""
    declared = {n: spec for n, _, spec in options_of(SECTIONS[name])}
    values = {}
    for key, (key_node, value_node) in _mapping(path, node, name).items():
        key = RENAMED.get(key, key)
        if key not in declared:
            raise ConfigFileError(f"{_where(path, key_node)}: {name}.{key}: unknown key{_close(key, declared)}; "
                                  f"{name} takes {', '.join(declared)}")
        value = _value(value_node)
        if declared[key].kind is tuple and isinstance(value, list):
            value = tuple(value)
        try:
            values[key] = declared[key].validate(f"{name}.{key}", value)
        except ValueError as exc:
            raise ConfigFileError(f"{_where(path, value_node)}: {exc}") from None
    return values


def _models(path: Path, node: yaml.Node) -> list[ModelConfig]:
    if not isinstance(node, yaml.SequenceNode) or not node.value:
        raise ConfigFileError(f"{_where(path, node)}: models: expected a list of model names or mappings")
    models = []
    for item in node.value:
        if isinstance(item, yaml.ScalarNode):
            spec: dict[str, Any] = {"name": _value(item)}
        else:
            entries = _mapping(path, item, "a model")
            for key, (key_node, _) in entries.items():
                if key not in MODEL_KEYS:
                    raise ConfigFileError(f"{_where(path, key_node)}: models: unknown key {key!r}"
                                          f"{_close(key, MODEL_KEYS)}; a model takes {', '.join(MODEL_KEYS)}")
            spec = {key: _value(value) for key, (_, value) in entries.items()}
        try:
            model = ModelConfig(**spec)
            import registry

            registry.get("model", model.plugin)
        except (ValueError, TypeError, LookupError) as exc:
            raise ConfigFileError(f"{_where(path, item)}: models: {exc}") from None
        models.append(model)
    return models


def dump(runs: list[Any]) -> str:
    """Stored runs as an experiment file: their shared data / train / eval options, each model once (with what
    it set for itself: its options, training overrides and data options such as its history), every seed.
    Runs of different experiments (a data, training or evaluation option that differs other than through a
    model's own settings) cannot be one file: a ValueError says which option differs."""
    if not runs:
        raise ValueError("--config-out: no runs to write")
    for run in runs:
        if not {"data", "train", "eval", "model"} <= set(run.config):
            raise ValueError(f"--config-out: run {run.id} was recorded by an older deepfm-bench, without its full "
                             "configuration")
    out: dict[str, Any] = {}
    own_data: dict[str, dict[str, Any]] = {}
    for section, cls in SECTIONS.items():
        defaults = {n: _plain(d) for n, d, _ in options_of(cls)}
        per_run = []
        for run in runs:
            values = {k: _plain(v) for k, v in _renamed_values(run.config[section]).items() if k in defaults}
            own = run.config["model"].get(section, {}) if section in ("train", "data") else {}
            per_run.append((run, {k: v for k, v in values.items() if k not in own}))
        # the shared value of each key: the one most runs have (a NAME+history model's history is its own)
        shared = {}
        for key in defaults:
            seen = [values[key] for _, values in per_run if key in values]
            if seen:
                shared[key] = max(seen, key=seen.count)
        for run, values in per_run:
            differing = sorted(k for k, v in values.items() if v != shared.get(k))
            if differing and section == "data" and set(differing) <= set(DATA_KEYS):
                own_data.setdefault(run.model, {}).update({k: values[k] for k in differing})
            elif differing:
                raise ValueError(f"--config-out: run {run.id} differs from the others in {section} options "
                                 f"{differing}; choose the runs of one experiment with --ids")
        out[section] = {k: v for k, v in shared.items() if v != defaults[k]}
    models, seen_models = [], set()
    for run in runs:
        model = _plain(run.config["model"])
        if model["name"] in seen_models:
            continue
        seen_models.add(model["name"])
        model["data"] = {**model.get("data", {}), **own_data.get(run.model, {})}
        implied = model["name"].split(":")[0].split("+")[0]
        entry = {k: v for k, v in model.items() if v not in ({}, "", None) and not (k == "plugin" and v == implied)
                 and not (k == "embed_dim" and v == 16)}
        models.append(entry["name"] if list(entry) == ["name"] else entry)
    out["models"] = models
    out["seeds"] = sorted({run.seed for run in runs})
    out["device"] = runs[0].config.get("device", "auto")
    return yaml.safe_dump(out, sort_keys=False, default_flow_style=None)


def _renamed_values(values: dict[str, Any]) -> dict[str, Any]:
    """Stored values under their current names (a run stored before a rename)."""
    return {RENAMED.get(k, k): v for k, v in values.items()}


def _plain(value: Any) -> Any:
    """A stored value as YAML writes it: tuples as lists, nested mappings plain."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
