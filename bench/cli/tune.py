"""`bench tune`: Optuna studies on the validation split; the best params for `bench run --params best`."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

import registry
from bench.cli.common import (
    base_models,
    comma_option,
    config_option,
    data_options,
    experiment_file,
    experiment_parts,
    explicit,
    fail,
    guard,
    progress_mode,
    track_option,
    train_options,
    write_page,
)
from bench.config import ExperimentConfig
from bench.text import printable
from bench.tune.space import SWEEPS

_OBJECTIVES = {"hr": "HR", "ndcg": "NDCG", "recall": "Recall", "map": "MAP", "mrr": "MRR"}


def _objective(ctx: Any, param: Any, value: str) -> str:
    """A metric name with a cutoff of at least 1 (hr@0 failed every trial), or mrr alone: e.g. NDCG@10."""
    name, at, k = value.partition("@")
    name = name.lower()
    if name == "mrr" and not at:
        return "MRR"
    if name not in _OBJECTIVES or name == "mrr" or not (k.isascii() and k.isdigit()) or int(k) < 1:
        raise click.BadParameter(f"{value!r}: expected e.g. ndcg@10, hr@20, recall@10 or map@10 (a cutoff of at "
                                 "least 1), or mrr (no cutoff)")
    return f"{_OBJECTIVES[name]}@{int(k)}"


def _timeout(ctx: Any, param: Any, value: float | None) -> float | None:
    """Seconds after which no new trial starts: more than 0 (--timeout -1 ran the study anyway)."""
    if value is not None and not value > 0:  # NaN is refused too
        raise click.BadParameter(f"{value}: expected a number of seconds greater than 0 (leave it out: no limit)")
    return value


@click.command()
@click.option("--models", default="deepfm,xdeepfm,neumf", show_default=True, callback=comma_option(str),
              help="models to tune, each with the same budget")
@click.option("--trials", default=50, show_default=True, type=click.IntRange(min=1),
              help="finished trials wanted in each study")
@click.option("--timeout", type=float, default=None, callback=_timeout,
              help="stop starting trials after this many seconds")
@click.option("--storage", default=None, help="Optuna storage URL (default: SQLite under the results dir); "
              "a path ending .log/.journal is a journal file")
@click.option("--study", default=None, help="study name prefix: the study is PREFIX-MODEL-DEVICE (default: "
              "DATA-MODEL[-sweep_...]-OBJECTIVE[-PROTOCOL]-DEVICE)")
@click.option("--n-jobs", default=1, show_default=True, type=click.IntRange(min=1),
              help="worker processes on this machine")
@click.option("--devices", default=None, callback=comma_option(str), help="sweep the same space on each device")
@click.option("--sweep", default="", callback=comma_option(str),
              help="plugin choices to sweep, some of: interactions, sampler, history (the installed plugins of that "
                   "kind; history also sweeps the window length L)")
@click.option("--objective", default="ndcg@10", show_default=True, callback=_objective,
              help="validation metric to maximise")
@click.option("--pruner", type=click.Choice(["median", "none"]), default="median", show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--confirm-top", default=5, show_default=True, type=click.IntRange(min=0),
              help="train the best N trials again on --confirm-seeds new seeds; keep the best mean, as --confirm-p "
                   "allows (0: off)")
@click.option("--confirm-seeds", default=3, show_default=True, type=click.IntRange(min=1),
              help="new seeds per confirmed trial (validation only)")
@click.option("--confirm-p", default=1.0, show_default=True, type=click.FloatRange(min=0, max=1, min_open=True),
              help="the best confirmed mean replaces the defaults only when a paired test over the validation users "
                   "gives p below this (1: the best mean wins; the p-value is reported either way)")
@click.option("--output", type=click.Path(dir_okay=False), help="also write the best-trials table as Markdown")
@config_option
@track_option
@data_options
@train_options
def tune(models: tuple[str, ...], trials: int, timeout: float | None, storage: str | None, study: str | None,
         n_jobs: int, devices: tuple[str, ...] | None, sweep: tuple[str, ...], objective: str, pruner: str,
         seed: int, confirm_top: int, confirm_seeds: int, confirm_p: float, output: str | None, **kw: Any) -> None:
    """Tune models with Optuna on the validation split; save the best params for `bench run --params best`.

    Exit status: 0 when done, 2 when the input was refused before any work, 130 / 143 after Ctrl-C / SIGTERM (the
    study is kept and the same command resumes it; no confirmation runs and no best params are saved).
    """
    from bench.interrupts import exit_code

    try:
        _tune(models, trials, timeout, storage, study, n_jobs, devices, sweep, objective, pruner, seed, confirm_top,
              confirm_seeds, confirm_p, output, **kw)
    except KeyboardInterrupt as exc:
        click.echo(f"interrupted ({exc or 'Ctrl-C'}): the study is kept as it is, with no confirmation and no best "
                   "params saved; the same command resumes it", err=True)
        sys.exit(exit_code(exc))


def _tune(models: tuple[str, ...], trials: int, timeout: float | None, storage: str | None, study: str | None,
          n_jobs: int, devices: tuple[str, ...] | None, sweep: tuple[str, ...], objective: str, pruner: str,
          seed: int, confirm_top: int, confirm_seeds: int, confirm_p: float, output: str | None,
          **kw: Any) -> None:
    from tabulate import tabulate

    from bench.device import resolve_device
    from bench.results.store import check_results_dir, check_writable_file
    from bench.tune.best import save_best
    from bench.tune.storage import check_url
    from bench.tune.study import TuneConfig, best_rows, oversubscribed, summary
    from bench.tune.study import tune as run_study

    unknown = [s for s in sweep if s not in SWEEPS]
    if unknown:
        fail(f"--sweep {','.join(unknown)}: expected some of {', '.join(SWEEPS)}")
    threads, results_dir = kw.pop("threads"), kw.pop("results_dir")
    bars = progress_mode(kw.pop("progress"))[0]
    from bench.results.tracking import parse_track

    track = guard(lambda: parse_track(kw.pop("track")))
    file = experiment_file(kw.pop("config_path"))
    data_cfg, train_cfg, eval_cfg = experiment_parts(kw, file)
    given = explicit()
    kw["device"] = file["device"] if "device" in file and "device" not in given else kw["device"]
    guard(lambda: check_results_dir(results_dir))
    guard(lambda: check_url(storage))
    if output:
        guard(lambda: check_writable_file(output, "--output"))
    if "sampler" in sweep and train_cfg.loss == "softmax":
        fail("--sweep sampler with --loss softmax: the full softmax scores every item and draws no negatives; "
             "sweep the sampler under --loss bce or sampled_softmax")
    experiment = guard(lambda: ExperimentConfig(
        data=data_cfg, train=train_cfg, eval=eval_cfg, device=kw["device"],
        models=base_models(models, file, kw["embed_dim"], "embed_dim" in given, "models" in given)))
    for model in experiment.models:
        guard(lambda model=model: registry.get("model", model.plugin))
    device_names = [guard(lambda d=d: str(resolve_device(d))) for d in devices or (kw["device"],)]
    from bench.runner import DataSource, check_on_data

    data = DataSource()  # loaded, split and checked before any study exists: a refused dataset writes nothing
    guard(lambda: check_on_data(experiment, data))
    warning = oversubscribed(n_jobs, threads)
    if warning:
        click.echo(warning, err=True)
    sections = []
    for device in device_names:
        for model in experiment.models:
            cfg = TuneConfig(experiment=experiment, model=model, trials=trials, timeout=timeout, storage=storage,
                             study=study, n_jobs=n_jobs, threads=threads, device=device, sweep=sweep,
                             objective=objective, pruner=pruner, seed=seed, results_dir=results_dir, progress=bars,
                             track=track)
            started = time.perf_counter()
            result = guard(lambda cfg=cfg: run_study(cfg, data))
            counts = summary(result)
            rows = best_rows(result)
            head = (f"{cfg.study_name()}: {sum(counts.values())} trials ({counts['complete']} complete, "
                    f"{counts['pruned']} pruned, {counts['fail']} failed), "
                    f"this call {time.perf_counter() - started:.0f} s")
            if not rows:
                click.echo(printable(head + "; no completed trial yet"))
                continue
            table = tabulate([[r["trial"], f"{r['value']:.4f}", f"{r['seconds'] or 0:.1f}",
                               f"{r['samples_per_s'] or 0:,.0f}", json.dumps(r["params"], sort_keys=True)]
                              for r in rows], headers=["trial", f"val {objective}", "s", "samples/s", "params"],
                             tablefmt="github", disable_numparse=True)
            confirmed, chosen = [], None
            if confirm_top:
                from bench.tune.confirm import choose, confirm

                confirmed = guard(lambda cfg=cfg, result=result: confirm(
                    result, cfg, confirm_top, confirm_seeds, data, resolve_device(cfg.device),
                    log=lambda m: click.echo(printable(m), err=True)))
                chosen = choose(confirmed, confirm_p)
                table += "\n\n" + tabulate(
                    [[c.trial, f"{c.search_value:.4f}", f"{c.mean:.4f} ± {c.std:.4f}", f"{c.gap:+.4f}",
                      "-" if c.p_vs_defaults is None else f"{c.p_vs_defaults:.3f}",
                      " ".join(filter(None, ["chosen" if c is chosen else "", "(defaults)" if c.untuned else ""]))]
                     for c in confirmed],
                    headers=["trial", "search value", f"mean of {confirm_seeds} new seeds", "gap", "p vs defaults",
                             ""], tablefmt="github", disable_numparse=True)
                best = max(confirmed, key=lambda c: c.mean)
                if chosen is not best:
                    table += (f"\n\nThe defaults stay: trial {best.trial}'s higher mean is not established on the "
                              f"validation users (p = {best.p_vs_defaults:.3f}, --confirm-p {confirm_p:g}).")
            path = save_best(result, cfg, chosen)
            click.echo(printable(head) + "\n" + table + "\n" + printable(f"best params saved to {path}"))
            sections.append(f"### {cfg.study_name()}\n\n{head}\n\n{table}\n\nBest params: `{path}`\n")
    if output and sections:
        write_page(Path(output), "Tuning results", sections)
    click.echo(f"next: bench run --models {','.join(models)} --params best --seeds 1,2,3", err=True)
