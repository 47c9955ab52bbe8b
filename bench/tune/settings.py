"""The settings a study holds fixed: what every trial trains with besides the searched parameters.

A study tuned with `--loss softmax` (or a sampler, a history encoder, a shuffled history order) has found the
best parameters *for that setting*. Two things follow, and this module serves both:
- resuming the study with another setting would mix trials of two different problems in one ranking, so it is
  refused (`check_resume`);
- the saved best params carry the fixed settings that differ from the project's defaults (`fixed_settings`),
  so that `bench run --params best` trains what was tuned, not the searched values under another loss.

The experiment's budget (epochs, patience, how validation is sampled, determinism) is not part of the setting:
a user may tune with few epochs and run with many.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from bench.config import DATA_KEYS, TRAIN_KEYS, DataConfig, ModelConfig, TrainConfig

BUDGET_KEYS = ("epochs", "patience", "val_metric", "val_users", "val_budget", "deterministic")
SETTING_KEYS = tuple(k for k in TRAIN_KEYS if k not in BUDGET_KEYS) + DATA_KEYS


def study_settings(model: ModelConfig, train: TrainConfig, data: DataConfig) -> dict[str, Any]:
    """Every setting key's value for this model before any trial's parameters are applied."""
    trained = asdict(model.train_config(train, 0))
    read = asdict(model.data_config(data))
    return {key: trained[key] if key in TRAIN_KEYS else read[key] for key in SETTING_KEYS}


def searched_keys(run_params: dict[str, Any]) -> set[str]:
    """The setting keys a trial's parameters set themselves. The history encoder's searched knobs
    ('history.layers') are merged over the fixed history_options, which stay a setting."""
    return {key for key in run_params if key in SETTING_KEYS}


def fixed_settings(settings: dict[str, Any], run_params: dict[str, Any]) -> dict[str, Any]:
    """The fixed settings a best-params file must carry: those not searched that differ from the defaults."""
    defaults = study_settings(ModelConfig("mf"), TrainConfig(), DataConfig())
    searched = searched_keys(run_params)
    return {key: value for key, value in settings.items()
            if key not in searched and _plain(value) != _plain(defaults[key])}


def check_resume(recorded: str | None, settings: dict[str, Any], searched: set[str], study_name: str) -> None:
    """Refuse to go on with a study whose fixed settings were others (a study recorded before this check
    existed has none on record: it is taken as it is)."""
    if recorded is None:
        return
    before = json.loads(recorded)
    changed = [key for key in SETTING_KEYS if key not in searched and key in before
               and _plain(before[key]) != _plain(settings[key])]
    if changed:
        said = "; ".join(f"{key} was {encoded(before[key])}, now {encoded(settings[key])}" for key in changed)
        raise ValueError(f"study {study_name} was started with other fixed settings ({said}): its trials would "
                         "not be comparable; give the options it was started with, or start a new study "
                         "(--study NAME)")


def encoded(value: Any) -> str:
    """As the study records it, and as an error message shows it."""
    return json.dumps(_plain(value), sort_keys=True)


def _plain(value: Any) -> Any:
    """As JSON holds it (tuples as lists), so a stored value compares equal to a fresh one."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))
