"""Tuning that survives the test split: the top trials trained again on new seeds, the best mean chosen.

The best of many noisy validation values is an optimistic pick (the winner's curse): on ML-100K's 942
validation users one NDCG@10 moves by about 0.005 between seeds of one configuration, so the top of 50
trials is partly luck, and on test the tuned DeepFM once lost to its defaults. `confirm` trains each of
the `top` best complete trials again with `seeds` new seeds (validation only, never test), with the
study's untuned first trial (the defaults) among them, and `choose` picks the one with the best mean.

Seeds are not the only noise: every trial is judged on the same validation users, and with a gain of a few
thousandths the best mean is still partly those users' luck. So each confirmed run also scores every
validation user, and each trial gets a paired test over those users (their means over the seeds) against the
defaults; with `p_max` < 1 the best mean replaces the defaults only when that test says it beats them. With
one validation interaction per user the test has little power for small gains, so `bench tune` reports it and
applies it only when asked (`--confirm-p`). The search value, the confirmed mean, their gap and that p-value
are reported and saved with the best params. Confirmed values are kept in the study (user attrs
`confirmed.<trial>`, per user `confirmed_users.<trial>`), so a resumed study confirms only what it has not.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from bench.device import seed_everything
from bench.eval.evaluator import evaluate
from bench.eval.stats import paired_permutation_test
from bench.runner import DataSource, build_model
from bench.train.trainer import train

CONFIRM_SEED = 10_000  # confirmation seeds: --seed + CONFIRM_SEED + k, the same for every trial (paired)


@dataclass(frozen=True)
class Confirmed:
    trial: int
    search_value: float
    values: tuple[float, ...]
    untuned: bool = False  # the study's first trial: the configuration bench run trains without --params
    per_user: tuple[tuple[float, ...], ...] | None = None  # per seed, each validation user's value (None: not kept)
    p_vs_defaults: float | None = None  # paired test of its per-user means against the defaults' (None: no test)

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
                     device: Any) -> tuple[float, tuple[float, ...]]:
    """The best validation value of one configuration trained (or fitted) with one seed, and the objective of
    every validation user for the state it was reached with (early stopping's restored best)."""
    model = replace(cfg.model, plugin=plugin).with_params(params)
    train_cfg = model.train_config(replace(cfg.experiment.train, val_metric=cfg.objective), seed)
    seed_everything(seed, train_cfg.deterministic)
    prepared = data.get(model.data_config(cfg.experiment.data))
    built = build_model(model, prepared).to(device)
    evaluation = replace(cfg.experiment.eval, ks=(train_cfg.val_k,))
    best = train(built, prepared, train_cfg, cfg.experiment.eval, device).best_value if built.trainable else None
    result = evaluate(built, prepared, "val", evaluation, seed=seed, device=device)
    per_user = tuple(float(v) for v in result.per_user[cfg.objective])
    return (result.metrics[cfg.objective] if best is None else best), per_user


def confirm(study: optuna.Study, cfg: Any, top: int, seeds: int, data: DataSource, device: Any,
            log: Any = print) -> list[Confirmed]:
    """The `top` best complete trials, and the untuned one wherever it ranks, each trained again on `seeds`
    new seeds (kept in the study): the defaults compete on the same footing, so tuning that does not beat
    them on the confirmed mean chooses them."""
    ranked = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: -t.value)
    trials = ranked[:top] + [t for t in ranked[top:] if t.user_attrs.get("untuned")]
    out = []
    for t in trials:
        key, users_key = f"confirmed.{t.number}", f"confirmed_users.{t.number}"
        values = list(study.user_attrs.get(key, []))[:seeds]
        # a study confirmed before per-user values were kept has fewer of them than values: it is not tested
        per_user = list(study.user_attrs.get(users_key, []))[:len(values)]
        for k in range(len(values), seeds):
            value, users = validation_value(cfg, t.user_attrs["registry_model"], json.loads(t.user_attrs["run_params"]),
                                            cfg.seed + CONFIRM_SEED + k, data, device)
            values.append(value)
            per_user.append(users)
            study.set_user_attr(users_key, per_user)  # first: a stop between the two leaves the seed to run again
            study.set_user_attr(key, values)
            log(f"confirm trial {t.number}: seed {k + 1} of {seeds}: val {cfg.objective} {values[-1]:.4f}")
        kept = tuple(tuple(u) for u in per_user) if len(per_user) == len(values) else None
        out.append(Confirmed(t.number, t.value, tuple(values), bool(t.user_attrs.get("untuned")), kept))
    return _tested(out)


def _user_means(c: Confirmed) -> np.ndarray:
    return np.mean(np.asarray(c.per_user, dtype=np.float64), axis=0)


def _tested(confirmed: list[Confirmed]) -> list[Confirmed]:
    """Each tuned trial's paired p-value against the confirmed defaults, over the validation users' means
    across seeds (none where the defaults were not confirmed or per-user values were not kept)."""
    defaults = next((c for c in confirmed if c.untuned and c.per_user is not None), None)
    if defaults is None:
        return confirmed
    base = _user_means(defaults)
    return [c if c.untuned or c.per_user is None or len(c.per_user[0]) != len(base)
            else replace(c, p_vs_defaults=paired_permutation_test(_user_means(c), base)) for c in confirmed]


def choose(confirmed: list[Confirmed], p_max: float = 1.0) -> Confirmed:
    """The confirmed trial with the best mean validation value; with `p_max` < 1 it replaces the confirmed
    defaults only when it beats them with a paired p below `p_max` (untested, where there was nothing to test
    against, it wins on its mean)."""
    best = max(confirmed, key=lambda c: c.mean)
    defaults = next((c for c in confirmed if c.untuned), None)
    if p_max >= 1 or best.untuned or defaults is None or best.p_vs_defaults is None:
        return best
    return best if best.p_vs_defaults < p_max else defaults
