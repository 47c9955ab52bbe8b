"""Tuning that survives the test split: the top trials trained again on new seeds, the best mean chosen.

The best of many noisy validation values is an optimistic pick (the winner's curse): on ML-100K's 942
validation users one NDCG@10 moves by about 0.005 between seeds of one configuration, so the top of 50
trials is partly luck, and on test the tuned DeepFM once lost to its defaults. `confirm` trains each of
the `top` best complete trials again with `seeds` new seeds (validation only, never test), with the
study's untuned first trial (the defaults) among them, and `choose` picks the one with the best mean.
The search value, the confirmed mean and their gap are reported and saved with the best params.
Confirmed values are kept in the study (user attrs `confirmed.<trial>`), so a resumed study confirms
only what it has not.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, replace
from typing import Any

import optuna
from optuna.trial import TrialState

from bench.device import seed_everything
from bench.eval.evaluator import evaluate
from bench.runner import DataSource, build_model
from bench.train.trainer import train

CONFIRM_SEED = 10_000  # confirmation seeds: --seed + CONFIRM_SEED + k, the same for every trial (paired)


@dataclass(frozen=True)
class Confirmed:
    trial: int
    search_value: float
    values: tuple[float, ...]
    untuned: bool = False  # the study's first trial: the configuration bench run trains without --params

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    @property
    def gap(self) -> float:
        """How much the search's own value overstated the configuration."""
        return self.search_value - self.mean


def validation_value(cfg: Any, plugin: str, params: dict[str, Any], seed: int, data: DataSource,
                     device: Any) -> float:
    """The best validation value of one configuration trained (or fitted) with one seed."""
    model = replace(cfg.model, plugin=plugin).with_params(params)
    train_cfg = model.train_config(replace(cfg.experiment.train, val_metric=cfg.objective), seed)
    seed_everything(seed, train_cfg.deterministic)
    prepared = data.get(model.data_config(cfg.experiment.data))
    built = build_model(model, prepared).to(device)
    evaluation = cfg.experiment.eval
    if not built.trainable:
        return evaluate(built, prepared, "val", replace(evaluation, ks=(train_cfg.val_k,)), seed=seed,
                        device=device).metrics[cfg.objective]
    return train(built, prepared, train_cfg, evaluation, device).best_value


def confirm(study: optuna.Study, cfg: Any, top: int, seeds: int, data: DataSource, device: Any,
            log: Any = print) -> list[Confirmed]:
    """The `top` best complete trials, and the untuned one wherever it ranks, each trained again on `seeds`
    new seeds (kept in the study): the defaults compete on the same footing, so tuning that does not beat
    them on the confirmed mean chooses them."""
    ranked = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: -t.value)
    trials = ranked[:top] + [t for t in ranked[top:] if t.user_attrs.get("untuned")]
    out = []
    for t in trials:
        key = f"confirmed.{t.number}"
        values = list(study.user_attrs.get(key, []))[:seeds]
        for k in range(len(values), seeds):
            values.append(validation_value(cfg, t.user_attrs["registry_model"], json.loads(t.user_attrs["run_params"]),
                                           cfg.seed + CONFIRM_SEED + k, data, device))
            study.set_user_attr(key, values)
            log(f"confirm trial {t.number}: seed {k + 1} of {seeds}: val {cfg.objective} {values[-1]:.4f}")
        out.append(Confirmed(t.number, t.value, tuple(values), bool(t.user_attrs.get("untuned"))))
    return out


def choose(confirmed: list[Confirmed]) -> Confirmed:
    """The confirmed trial with the best mean validation value."""
    return max(confirmed, key=lambda c: c.mean)
