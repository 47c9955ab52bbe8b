"""The best parameters of a study, saved for `bench run --params best` and read back."""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from pathlib import Path
from typing import Any

import optuna

from bench.config import DataConfig
from bench.results.store import write_atomic
from bench.tune.settings import SETTING_KEYS, fixed_settings, study_settings


def best_params_path(results_dir: str | Path, data: DataConfig, model: str) -> Path:
    """results_dir/best_params/<dataset label>-<model>.json, always inside results_dir/best_params.

    The label holds --dataset-opt values (paths among them): a label that is not a safe file name as it stands
    has every other character replaced by '_' and a hash of the whole label appended (two labels never share a
    file), and a long one is shortened the same way."""
    folder = Path(results_dir) / "best_params"
    path = folder / f"{_file_stem(data.label())}-{_file_stem(model)}.json"
    if path.resolve().parent != folder.resolve():  # cannot happen with _file_stem; guard the invariant anyway
        raise ValueError(f"best params file {path} would leave {folder}")
    return path


_UNSAFE = re.compile(r"[^A-Za-z0-9._,=+@\[\]-]")


def _file_stem(text: str, limit: int = 120) -> str:
    safe = _UNSAFE.sub("_", text)
    if safe == text and len(text) <= limit and not text.startswith("."):
        return text
    return f"{safe.lstrip('.')[:limit]}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"


def save_best(study: optuna.Study, cfg: Any, confirmed: Any = None) -> Path:
    """The chosen trial as results_dir/best_params/<data>-<model>.json (`cfg` a TuneConfig): the confirmed
    one (`bench.tune.confirm.Confirmed`) when given, else the best search value; with the study's fixed
    settings that are not the defaults (`bench.tune.settings`: a loss, a sampler, a history encoder), which
    `--params best` applies too; the storage recorded as a reader can use it, relative to the results dir
    when it lies there."""
    best = study.best_trial if confirmed is None else study.trials[confirmed.trial]
    params = json.loads(best.user_attrs["run_params"])
    extra = {} if confirmed is None else {"confirmed": {
        "seeds": len(confirmed.values), "values": list(confirmed.values), "mean": confirmed.mean,
        "gap": confirmed.gap, "p_vs_defaults": confirmed.p_vs_defaults}}
    payload = {
        "model": best.user_attrs.get("registry_model", cfg.model.plugin), "tuned_as": cfg.model.name,
        "dataset": cfg.experiment.data.label(), "objective": f"val {cfg.objective}", "value": best.value,
        "trial": best.number, "study": cfg.study_name(), "device": cfg.device,
        "storage": portable_url(cfg.storage_url(), cfg.results_dir),
        "params": params, "settings": fixed_settings(
            study_settings(cfg.model, cfg.experiment.train, cfg.experiment.data), params), **extra,
    }
    path = best_params_path(cfg.results_dir, cfg.experiment.data, cfg.model.name)
    return write_atomic(path, json.dumps(payload, indent=2))


def portable_url(url: str, results_dir: str | Path) -> str:
    """A SQLite or journal storage under the results dir, named relative to it ('optuna.db'); others as given
    with the password hidden."""
    path = Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") or "://" not in url else None
    if path is not None:
        try:
            return str(path.resolve().relative_to(Path(results_dir).resolve()))
        except ValueError:
            return url
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def load_best_params(spec: str, results_dir: str, data: DataConfig,
                     models: tuple[str, ...]) -> dict[str, tuple[str, dict[str, Any]]]:
    """--params best (the saved best of each model under the results dir) or --params FILE.json.

    Returns {model: (plugin, params)} for the models that have tuned params.
    """
    payloads, loaded = [], None
    if spec == "best":
        for model in models:
            path = best_params_path(results_dir, data, model)
            if path.exists():
                payloads.append((path, _read_json(path, "--params best"), model))
        if not payloads:
            raise ValueError(f"--params best: no tuned params for {', '.join(models)} on {data.label()} under "
                             f"{Path(results_dir) / 'best_params'}; run `bench tune` first")
    else:
        path = Path(spec)
        if not path.is_file():
            raise ValueError(f"--params {spec}: no such file (expected 'best' or a JSON file from bench tune)")
        loaded = _read_json(path, f"--params {spec}")
        payloads = [(path, p, None) for p in (loaded if isinstance(loaded, list) else [loaded])]
    tuned, listed = {}, spec != "best" and isinstance(loaded, list)
    for path, payload, looked_up in payloads:
        name, plugin, params = _checked_payload(payload, path)
        name = looked_up or name  # a best-params file is the one of the model it was looked up for
        if name not in models and listed:  # a list of several models' params: take those of --models
            warnings.warn(f"--params {path}: skipping the params tuned for {name!r}, which is not among --models",
                          stacklevel=2)
            continue
        if name not in models:
            raise ValueError(f"--params {path}: these params were tuned for {name!r}, which is not among --models "
                             f"({', '.join(models)}); add it to --models or pass that model's file")
        if name in tuned:
            raise ValueError(f"--params {path}: {name!r} has tuned params twice")
        tuned[name] = (plugin, params)
    return tuned


def _read_json(path: Path, option: str) -> Any:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{option}: {path} is not valid JSON ({exc})") from None
    except RecursionError:
        raise ValueError(f"{option}: {path} nests too deeply to be a tuned-params file") from None


def _checked_payload(payload: Any, path: Path) -> tuple[str, str, dict[str, Any]]:
    """(model label, plugin, params) of one tuned-params object, each checked for its type."""
    expected = 'an object {"model": "<plugin>", "params": {...}} as bench tune writes'
    if not isinstance(payload, dict):
        raise ValueError(f"--params {path}: expected {expected}, got a JSON {_json_type(payload)}")
    for key, kind in (("model", str), ("params", dict), ("tuned_as", str)):
        if key not in payload and key == "tuned_as":
            continue
        if not isinstance(payload.get(key), kind):
            raise ValueError(f"--params {path}: {key!r} must be a JSON {_json_type(kind())}, got "
                             f"{_json_type(payload.get(key)) if key in payload else 'nothing'}; expected {expected}")
    settings = payload.get("settings", {})  # files written before settings were saved have none
    if not isinstance(settings, dict):
        raise ValueError(f"--params {path}: 'settings' must be a JSON object, got {_json_type(settings)}")
    unknown = sorted(set(settings) - set(SETTING_KEYS))
    if unknown:
        raise ValueError(f"--params {path}: 'settings' names {', '.join(unknown)}, which are not settings a study "
                         f"fixes; expected some of {', '.join(SETTING_KEYS)}")
    return payload.get("tuned_as", payload["model"]), payload["model"], {**settings, **payload["params"]}


def _json_type(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number",
            type(None): "null"}.get(type(value), type(value).__name__)
