"""`bench run`: train and test models over seeds; the leaderboard and the comparison with the baseline."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from bench.cli.common import (
    base_models,
    comma_option,
    command_line,
    config_option,
    data_options,
    experiment_file,
    experiment_parts,
    explicit,
    guard,
    progress_mode,
    tables,
    track_option,
    train_options,
    write_page,
)
from bench.config import ExperimentConfig, ModelConfig, apply_sets
from bench.device import resolve_device, set_threads
from bench.results.tables import FORMATS
from bench.text import printable

METRICS_HELP = "metrics the tables show, e.g. HR@20,MAP@10 or 'all' [default: HR@10,NDCG@10,MRR]"


@click.command()
@click.option("--models", default="deepfm,xdeepfm,neumf", show_default=True, callback=comma_option(str),
              help="model plugins to compare (bench list model)")
@click.option("--seeds", default="1", show_default=True, callback=comma_option(int),
              help="comma list of seeds; each model trains once per seed")
@click.option("--baseline", default="neumf", show_default=True, help="model every other is compared with")
@click.option("--interactions", default=None, help="also run a `composed` model of these interaction plugins")
@click.option("--set", "sets", multiple=True, metavar="MODEL.PARAM=VALUE",
              help="override a hyperparameter, e.g. deepfm.dropout=0.1, train.lr=2e-3 (repeatable)")
@click.option("--params", "params_path", default=None,
              help="tuned params: 'best' (from bench tune, under the results dir) or a JSON file")
@click.option("--tuned-only", is_flag=True,
              help="with --params: run NAME:tuned instead of NAME next to it, where NAME has tuned params")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="github", show_default=True,
              help="table format; json and csv carry every metric")
@click.option("--metrics", default=None, callback=comma_option(str), help=METRICS_HELP)
@click.option("--output", type=click.Path(dir_okay=False), help="also write the tables as Markdown here")
@click.option("--no-checkpoint", is_flag=True,
              help="keep no checkpoint of the finished runs (bench recommend needs one)")
@click.option("--rerun", type=click.IntRange(1, 2**63 - 1), default=None, metavar="RUN_ID",
              help="run a stored run again from its recorded configuration (data from --data-dir or as recorded)")
@config_option
@track_option
@data_options
@train_options
def run(models: tuple[str, ...], seeds: tuple[int, ...], baseline: str, interactions: str | None,
        sets: tuple[str, ...], params_path: str | None, tuned_only: bool, fmt: str,
        metrics: tuple[str, ...] | None, output: str | None, no_checkpoint: bool, rerun: int | None,
        **kw: Any) -> None:
    """Train and test models over seeds; print a leaderboard and a comparison against the baseline.

    Exit status: 0 when every requested run finished, 1 when any failed (the tables then show the
    ones that finished, and a summary names the failed ones and why), 2 when the input was refused
    before any work, 130 / 143 when interrupted by Ctrl-C / SIGTERM.
    """
    from bench.interrupts import exit_code, sigterm_as_interrupt
    from bench.results.store import ResultStore, check_results_dir, check_writable_file
    from bench.results.tracking import parse_track
    from bench.runner import DataSource, check_config, check_on_data, run_benchmark

    set_threads(kw.pop("threads"))
    bars, lines = progress_mode(kw.pop("progress"))
    track = guard(lambda: parse_track(kw.pop("track")))
    file = experiment_file(kw.pop("config_path"))
    data_cfg, train_cfg, eval_cfg = experiment_parts(kw, file)
    given = explicit()
    seeds = file["seeds"] if "seeds" in file and "seeds" not in given else seeds
    baseline = file["baseline"] if "baseline" in file and "baseline" not in given else baseline
    kw["device"] = file["device"] if "device" in file and "device" not in given else kw["device"]
    base = guard(lambda: base_models(models, file, kw["embed_dim"], "embed_dim" in given, "models" in given))
    results_dir = kw.pop("results_dir")
    guard(lambda: check_results_dir(results_dir))
    if output:
        guard(lambda: check_writable_file(output, "--output"))
    if rerun is not None:
        config, recorded = guard(lambda: _rerun_config(rerun, results_dir, data_cfg))
        baseline = config.models[0].name
    else:
        config = guard(lambda: ExperimentConfig(
            data=data_cfg, train=train_cfg, eval=eval_cfg, seeds=seeds, device=kw["device"],
            models=_models(base, kw["embed_dim"], interactions, params_path, baseline, results_dir, data_cfg, sets,
                           tuned_only)))
    guard(lambda: check_config(config))
    if params_path and rerun is None:
        for warning in _defaults_again(config, base, kw["embed_dim"], sets, params_path):
            click.echo(printable(warning), err=True)
    guard(lambda: resolve_device(config.device))  # once, before anything: not in each run
    data = DataSource()  # loaded and prepared for every model before the store opens: a failed load writes nothing
    guard(lambda: check_on_data(config, data))  # loads and prepares the data, builds each model on it
    store = guard(lambda: ResultStore(results_dir))
    tracker = None
    if track is not None:
        from bench.results.tracking import Tracker

        tracker = Tracker(track, results_dir, f"bench run {','.join(m.name for m in config.models)}",
                          {"command": command_line()})
    started = time.perf_counter()
    try:
        with sigterm_as_interrupt():
            outcome = guard(lambda: run_benchmark(config, store, data=data, log=_log, epoch_lines=lines,
                                                  progress=bars, checkpoints=not no_checkpoint, tracker=tracker))
    except KeyboardInterrupt as exc:
        click.echo(printable(f"interrupted ({exc or 'Ctrl-C'}): the current run is recorded as interrupted in "
                             f"{store.path}"), err=True)
        if tracker:
            tracker.close("KILLED")
        sys.exit(exit_code(exc))
    runs = store.runs(ids=outcome.finished)  # this invocation's runs only, never earlier ones
    if rerun is not None and runs:
        _compare_rerun(recorded, runs[0])
    if runs:
        from bench.results.pages import leaderboard_sections

        click.echo(guard(lambda: tables(runs, baseline, fmt, metrics)))
        if output:
            guard(lambda: write_page(Path(output), f"{data_cfg.label()} leaderboard",
                                     leaderboard_sections(runs, baseline, metrics)), click.ClickException)
    if tracker:
        from bench.results.pages import leaderboard_sections

        page = "\n".join(leaderboard_sections(runs, baseline, metrics)) if runs else None
        tracker.close("FINISHED" if not outcome.failures else "FAILED", {"leaderboard.md": page})
    requested = len(config.models) * len(config.seeds)
    click.echo(printable(f"wall time {time.perf_counter() - started:.1f} s; {len(runs)} of {requested} runs "
                         f"finished, recorded in {store.path}"), err=True)
    if outcome.failures:
        failed = [printable(f"  {f.model} seed {f.seed}: {f.reason}") for f in outcome.failures]
        click.echo(f"{len(outcome.failures)} of {requested} runs FAILED (recorded as failed in the store):\n"
                   + "\n".join(failed), err=True)
        sys.exit(1)


def _models(base: tuple[ModelConfig, ...], embed_dim: int, interactions: str | None, params_path: str | None,
            baseline: str, results_dir: str, data_cfg: Any, sets: tuple[str, ...],
            tuned_only: bool = False) -> tuple[ModelConfig, ...]:
    """The models of the run, in the configuration's precedence: `base` (--models with the command line's
    embedding dim, or an experiment file's models), `composed` for --interactions, NAME:tuned from --params
    (next to NAME, or instead of it with --tuned-only, and the baseline), then --set."""
    models = {model.name: model for model in base}
    if interactions:
        composed = models.get("composed", ModelConfig("composed", embed_dim=embed_dim))
        models["composed"] = composed.with_params({"interactions": interactions})
    if params_path:
        from bench.tune.best import load_best_params

        for name, (plugin, params) in load_best_params(params_path, results_dir, data_cfg, tuple(models)).items():
            tuned = ModelConfig(f"{name}:tuned", plugin=plugin, embed_dim=embed_dim).with_params(params)
            if tuned_only and name in models:  # in NAME's place, keeping the order
                models = {(tuned.name if key == name else key): (tuned if key == name else value)
                          for key, value in models.items()}
            else:
                models[tuned.name] = tuned
        if baseline not in models and f"{baseline}:tuned" not in models:
            models[baseline] = ModelConfig(baseline, embed_dim=embed_dim)
    return apply_sets(tuple(models.values()), sets)


def _defaults_again(config: ExperimentConfig, base: tuple[ModelConfig, ...], embed_dim: int, sets: tuple[str, ...],
                    params_path: str) -> list[str]:
    """A warning for each NAME:tuned whose tuned params are NAME's own configuration (a study that kept its
    defaults): the row would train NAME again, seeds and minutes for a duplicate."""
    from bench.runner import same_configuration

    warnings = []
    for tuned in config.models:
        name = tuned.name.removesuffix(":tuned")
        if name == tuned.name:
            continue
        plain = next((m for m in base if m.name == name), ModelConfig(name, embed_dim=embed_dim))
        own = [item for item in sets if item.partition(".")[0] in ("*", "train", name)]
        if same_configuration(tuned, apply_sets((plain,), own)[0], config):
            warnings.append(f"warning: {tuned.name} from --params {params_path} is {name}'s own configuration (the "
                            f"params are its defaults, as when a study kept them): it trains {name} again")
    return warnings


def _rerun_config(run_id: int, results_dir: str, data_cfg: Any) -> tuple[ExperimentConfig, Any]:
    """The one-model, one-seed experiment a stored run records, reading the data where this machine has it."""
    from dataclasses import replace

    from bench.results.store import DB_NAME, ResultStore

    if not (Path(results_dir) / DB_NAME).exists():
        raise ValueError(f"--rerun {run_id}: no results store at {Path(results_dir) / DB_NAME}")
    found = ResultStore(results_dir, readonly=True).runs(ids=[run_id])
    for damaged in found.damaged:
        raise ValueError(f"--rerun {run_id}: run {run_id} in {Path(results_dir) / DB_NAME} cannot be read "
                         f"({damaged.reason})")
    if not found:
        raise ValueError(f"--rerun {run_id}: no run {run_id} in {Path(results_dir) / DB_NAME}")
    record = found[0].config
    if not {"data", "train", "eval", "model"} <= set(record):
        raise ValueError(f"--rerun {run_id}: the run was recorded by an older deepfm-bench, without its full "
                         "configuration")
    config = ExperimentConfig.from_record(record)
    here = {key: getattr(data_cfg, key) for key in ("data_dir", "cache_dir") if getattr(data_cfg, key)}
    if not here and config.data.data_dir and not Path(config.data.data_dir).exists():
        here["data_dir"] = None  # recorded on another machine: BENCH_DATA_DIR, the cache or a download
    return replace(config, data=replace(config.data, **here)), found[0]


def _compare_rerun(recorded: Any, again: Any) -> None:
    """Say whether the re-run reproduced the stored metrics exactly, and where it did not; a recorded run
    that never finished has no metrics to compare, and a change of the data's checksum is always said."""
    head = f"rerun of run {recorded.id} as run {again.id}"
    before, after = recorded.config.get("data_checksum"), again.config.get("data_checksum")
    data = "" if before == after else f"; the data differs (checksum {before} -> {after})"
    if recorded.status != "finished" or not recorded.metrics:
        _log(f"{head}: run {recorded.id} did not finish ({recorded.status}"
             f"{': ' + recorded.reason if recorded.reason else ''}), so there are no metrics to compare{data}")
        return
    differ = {k: (v, again.metrics.get(k)) for k, v in recorded.metrics.items() if again.metrics.get(k) != v}
    if not differ:
        _log(f"{head}: every metric identical ({len(recorded.metrics)} compared){data}")
        return
    shown = ", ".join(f"{k} {a:.6f} -> {b if b is None else format(b, '.6f')}" for k, (a, b) in
                      list(differ.items())[:4])
    _log(f"{head}: {len(differ)} of {len(recorded.metrics)} metrics differ{data}: {shown}")


def _log(message: str) -> None:
    """A progress or summary line on stderr, its control characters escaped (labels and reasons come from the
    user and from plugins)."""
    click.echo(printable(message), err=True)
