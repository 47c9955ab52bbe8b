"""The `bench` command: run, tune, kernel, list, report, data."""

from __future__ import annotations

import functools
import json
import shlex
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import click

import registry
from bench.device import set_threads
from bench.tables import FORMATS
from bench.trainer import TrainConfig

RESULTS_DIR = "results"


def _csv(kind: Callable[[str], Any]) -> Callable[[Any, Any, str | None], Any]:
    def parse(ctx: Any, param: Any, value: str | None) -> Any:
        if value is None:
            return None
        try:
            return tuple(kind(v.strip()) for v in value.split(",") if v.strip())
        except ValueError:
            raise click.BadParameter(f"expected a comma-separated list, got {value!r}") from None
    return parse


def _kv(ctx: Any, param: Any, values: tuple[str, ...]) -> dict[str, Any]:
    from bench.runner import parse_value

    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}")
        out[key.replace("-", "_")] = parse_value(value)
    return out


def data_options(f: Callable) -> Callable:
    """Where the data comes from and how it becomes implicit feedback (shared by run and tune)."""
    options = [
        click.option("--dataset", default="ml-100k", show_default=True, help="dataset plugin (bench list dataset)"),
        click.option("--data-dir", type=click.Path(file_okay=False),
                     help="local copy of the files (else BENCH_DATA_DIR, else the cache or a download)"),
        click.option("--cache-dir", envvar="BENCH_CACHE_DIR", type=click.Path(file_okay=False),
                     help="download cache [env BENCH_CACHE_DIR, default ~/.cache/deepfm-bench]"),
        click.option("--genre-encoding", type=click.Choice(["multihot", "binary"]), default=None,
                     help="MovieLens genres: one multi-hot field (default) or 19 binary fields"),
        click.option("--dataset-opt", "dataset_opts", multiple=True, callback=_kv, metavar="KEY=VALUE",
                     help="extra dataset option, e.g. interactions=ratings.csv for --dataset csv"),
        click.option("--threshold", default=4.0, show_default=True, help="rating >= threshold is a positive"),
        click.option("--min-interactions", default=3, show_default=True,
                     help="users with fewer positives go to train only"),
    ]
    return functools.reduce(lambda acc, opt: opt(acc), reversed(options), f)


def train_options(f: Callable) -> Callable:
    """Training and evaluation knobs (shared by run and tune)."""
    options = [
        click.option("--epochs", default=TrainConfig.epochs, show_default=True),
        click.option("--batch-size", default=TrainConfig.batch_size, show_default=True),
        click.option("--lr", default=TrainConfig.lr, show_default=True),
        click.option("--weight-decay", default=TrainConfig.weight_decay, show_default=True),
        click.option("--patience", default=TrainConfig.patience, show_default=True,
                     help="epochs without val NDCG@10 gain"),
        click.option("--num-negatives", default=TrainConfig.num_negatives, show_default=True,
                     help="training negatives per positive"),
        click.option("--sampler", default=TrainConfig.sampler, show_default=True, help="negative sampler plugin"),
        click.option("--sampler-opt", "sampler_opts", multiple=True, callback=_kv, metavar="KEY=VALUE",
                     help="sampler option, e.g. alpha=0.5 for popularity (repeatable)"),
        click.option("--fm-dim", default=16, show_default=True, type=click.IntRange(min=1),
                     help="embedding dim shared by FM and MLP"),
        click.option("--protocol", type=click.Choice(["full", "sampled"]), default="full", show_default=True),
        click.option("--eval-negatives", default=999, show_default=True, help="negatives per user, sampled protocol"),
        click.option("--k", "ks", default="5,10,20", show_default=True, callback=_csv(int)),
        click.option("--ties", type=click.Choice(["expected", "pessimistic", "optimistic"]), default="expected",
                     show_default=True, help="how candidates tied with the held-out item are ranked"),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps"),
        click.option("--threads", type=click.IntRange(min=1), default=None,
                     help="torch CPU threads (default: torch's)"),
        click.option("--results-dir", default=RESULTS_DIR, show_default=True, type=click.Path(file_okay=False)),
        click.option("--progress/--no-progress", default=None, help="progress bars (default: on a terminal)"),
    ]
    return functools.reduce(lambda acc, opt: opt(acc), reversed(options), f)


def _data_config(kw: dict[str, Any]):
    from bench.runner import DataConfig

    options = dict(kw.pop("dataset_opts"))
    genre = kw.pop("genre_encoding")
    if genre:
        options["genre_encoding"] = genre
    return DataConfig(dataset=kw.pop("dataset"), data_dir=kw.pop("data_dir"), cache_dir=kw.pop("cache_dir"),
                      options=options, threshold=kw.pop("threshold"), min_interactions=kw.pop("min_interactions"))


def _train_config(kw: dict[str, Any]):
    from bench.metrics import check_ks

    try:
        check_ks(kw["ks"])
    except ValueError as exc:
        _fail(f"--k: {exc}")
    progress = kw.pop("progress")
    options = dict(epochs=kw.pop("epochs"), batch_size=kw.pop("batch_size"), lr=kw.pop("lr"),
                   weight_decay=kw.pop("weight_decay"), patience=kw.pop("patience"),
                   num_negatives=kw.pop("num_negatives"), sampler=kw.pop("sampler"),
                   sampler_options=dict(kw.pop("sampler_opts")), ties=kw["ties"],
                   eval_negatives=kw["eval_negatives"], val_protocol=kw["protocol"],
                   progress=sys.stderr.isatty() if progress is None else progress)
    return _guard(lambda: TrainConfig(**options))


class InputError(click.ClickException):
    """Bad input refused before any work: exit code 2, as for click's own option errors."""

    exit_code = 2


def _fail(message: str) -> None:
    raise InputError(message)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="deepfm-bench")
def main() -> None:
    """Benchmark DeepFM-family recommenders: train, evaluate, compare, tune."""


@main.command("list")
@click.argument("kind", required=False, type=click.Choice(list(registry.KINDS)))
def list_plugins(kind: str | None) -> None:
    """Registered plugins (name, kind, source distribution, one-line doc)."""
    from tabulate import tabulate

    rows = [[p.name, p.kind, p.source, _shorten(f"ERROR: {p.error}" if p.error else p.doc)]
            for p in registry.describe(kind)]
    click.echo(tabulate(rows, headers=["name", "kind", "source", "description"], tablefmt="github"))
    for p in registry.describe(kind):  # whole errors below the table: one broken plugin widens no row
        if p.error:
            click.echo(f"{p.kind} {p.name} ({p.target}): {p.error}", err=True)


def _shorten(text: str, width: int = 100) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 3] + "..."


@main.command()
@data_options
def data(**kw: Any) -> None:
    """Load (download and cache if needed) a dataset and print its statistics and split."""
    from tabulate import tabulate

    from bench.runner import load_data

    cfg = _data_config(kw)
    d = _guard(lambda: load_data(cfg))
    info = d.info
    rows = [["interactions (rows read)", f"{info['n_interactions']:,}"],
            [f"positives (rating >= {info['threshold']:g})", f"{info['n_positives']:,}"],
            ["users (with a positive)", f"{d.n_users - 1:,}"], ["items (candidate pool)", f"{d.n_items - 1:,}"],
            ["rating range", "{:g} .. {:g}".format(*info["rating_range"])],
            ["fields", ", ".join(f.name for f in d.spec)], ["train positives", f"{len(d.train):,}"],
            [f"validation pairs (users with >= {info['min_interactions']} positives)", f"{len(d.val):,}"],
            ["test pairs", f"{len(d.test):,}"]]
    click.echo(tabulate(rows, headers=["dataset", d.name], tablefmt="github", disable_numparse=True))


def _guard(fn: Callable[[], Any], error: type[click.ClickException] = InputError) -> Any:
    """Turn the library's clear errors into one-line CLI errors (no traceback); exit 2 by default."""
    try:
        return fn()
    except (ValueError, registry.RegistryError, FileNotFoundError, OSError) as exc:
        raise error(str(exc)) from None


@main.command()
@click.option("--models", default="deepfm,xdeepfm,neumf", show_default=True, callback=_csv(str),
              help="model plugins to compare (bench list model)")
@click.option("--seeds", default="1", show_default=True, callback=_csv(int),
              help="comma list of seeds; each model trains once per seed")
@click.option("--baseline", default="neumf", show_default=True, help="model every other is compared with")
@click.option("--interactions", default=None, help="also run a `composed` model of these interaction plugins")
@click.option("--set", "sets", multiple=True, metavar="MODEL.PARAM=VALUE",
              help="override a hyperparameter, e.g. deepfm.dropout=0.1, train.lr=2e-3 (repeatable)")
@click.option("--params", "params_path", default=None,
              help="tuned params: 'best' (from bench tune, under the results dir) or a JSON file")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="github", show_default=True,
              help="table format; json and csv carry every metric")
@click.option("--metrics", default=None, callback=_csv(str),
              help="metrics the tables show, e.g. HR@20,MAP@10 or 'all' [default: HR@10,NDCG@10,MRR]")
@click.option("--output", type=click.Path(dir_okay=False), help="also write the tables as Markdown here")
@data_options
@train_options
def run(models: tuple[str, ...], seeds: tuple[int, ...], baseline: str, interactions: str | None,
        sets: tuple[str, ...], params_path: str | None, fmt: str, metrics: tuple[str, ...] | None,
        output: str | None, **kw: Any) -> None:
    """Train and test models over seeds; print a leaderboard and a comparison against the baseline.

    Exit status: 0 when every requested run finished, 1 when any failed (the tables then show the
    ones that finished, and a summary names the failed ones and why), 2 when the input was refused
    before any work, 130 / 143 when interrupted by Ctrl-C / SIGTERM.
    """
    from bench.interrupts import exit_code, sigterm_as_interrupt
    from bench.runner import RunConfig, check_config, load_data, parse_sets, run_benchmark
    from bench.store import ResultStore, check_results_dir, check_writable_file

    set_threads(kw.pop("threads"))
    lines = kw["progress"] is None and not sys.stderr.isatty()  # piped: a line per epoch instead of bars
    data_cfg, train_cfg = _data_config(kw), _train_config(kw)
    results_dir = kw.pop("results_dir")
    _guard(lambda: check_results_dir(results_dir))
    if output:
        _guard(lambda: check_writable_file(output, "--output"))
    models = tuple(models)
    model_params: dict[str, dict[str, Any]] = {}
    if interactions:
        models = models + ("composed",) if "composed" not in models else models
        model_params["composed"] = {"interactions": interactions}
    if params_path:  # each tuned model runs as NAME:tuned next to NAME with defaults, and the baseline
        from bench.tuner import load_best_params

        tuned = _guard(lambda: load_best_params(params_path, results_dir, data_cfg, models))
        for name, params in tuned.items():
            model_params[f"{name}:tuned"] = params
        models = tuple(dict.fromkeys([*models, *(f"{n}:tuned" for n in tuned), baseline]))
    for name, params in _guard(lambda: parse_sets(sets, models)).items():
        model_params.setdefault(name, {}).update(params)
    config = RunConfig(data=data_cfg, train=train_cfg, models=models, seeds=seeds, protocol=kw["protocol"],
                       eval_negatives=kw["eval_negatives"], ks=kw["ks"], ties=kw["ties"], device=kw["device"],
                       fm_dim=kw["fm_dim"], model_params=model_params)
    _guard(lambda: check_config(config))
    data = _guard(lambda: load_data(config.data))  # before the store: a failed load writes nothing
    store = _guard(lambda: ResultStore(results_dir))
    started = time.perf_counter()
    try:
        with sigterm_as_interrupt():
            outcome = _guard(lambda: run_benchmark(config, store, data=data, log=lambda m: click.echo(m, err=True),
                                                   epoch_lines=lines))
    except KeyboardInterrupt as exc:
        click.echo(f"interrupted ({exc or 'Ctrl-C'}): the current run is recorded as interrupted in {store.path}",
                   err=True)
        sys.exit(exit_code(exc))
    runs = store.runs(ids=outcome.finished)  # this invocation's runs only, never earlier ones
    if runs:
        click.echo(_guard(lambda: _tables(runs, baseline, fmt, metrics)))
        if output:
            _guard(lambda: _write_markdown(Path(output), runs, baseline, f"{data_cfg.label()} leaderboard", metrics),
                   click.ClickException)
    requested = len(config.models) * len(config.seeds)
    click.echo(f"wall time {time.perf_counter() - started:.1f} s; {len(runs)} of {requested} runs finished, "
               f"recorded in {store.path}", err=True)
    if outcome.failures:
        lines = [f"  {f.model} seed {f.seed}: {f.reason}" for f in outcome.failures]
        click.echo(f"{len(outcome.failures)} of {requested} runs FAILED (recorded as failed in the store):\n"
                   + "\n".join(lines), err=True)
        sys.exit(1)


def _tables(runs: list, baseline: str, fmt: str, metrics: tuple[str, ...] | None = None) -> str:
    from bench import tables

    board = tables.leaderboard(runs, fmt, metrics)
    missing = tables.missing_baseline(runs, baseline)
    if missing:
        click.echo(missing, err=True)
    if fmt == "json" or missing:
        return board
    return board + "\n\n" + tables.comparison(runs, baseline, fmt, metrics)


MACHINE_PATHS = ("data_dir", "cache_dir")  # where this machine keeps its data: not part of a result's recipe
PATHS = ("results_dir", "output", "params_path")


def _portable(name: str, value: Any) -> Any:
    """A path option as a reader can re-type it: relative to the working directory when under it; a data
    folder elsewhere is left out (the reader points BENCH_DATA_DIR at their copy, or the data downloads)."""
    if name not in MACHINE_PATHS + PATHS or value is None:
        return value
    path = Path(value)
    if not path.is_absolute():
        return value
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return None if name in MACHINE_PATHS else value


def _command_line() -> str:
    """The command that produced a result, rebuilt from click's parsed options (defaults left out), with
    paths as a reader would type them (see `_portable`)."""
    ctx = click.get_current_context()
    parts = ["bench", ctx.info_name or ""]
    for param in ctx.command.params:
        if not isinstance(param, click.Option):
            continue
        value = _portable(param.name, ctx.params.get(param.name))
        source = ctx.get_parameter_source(param.name)
        if source in (click.core.ParameterSource.DEFAULT, click.core.ParameterSource.ENVIRONMENT, None) \
                or value is None:  # env-sourced (BENCH_DATA_DIR) is this machine's business
            continue
        if param.is_flag and param.secondary_opts:
            parts.append(param.opts[0] if value else param.secondary_opts[0])
        elif param.is_flag:
            if value:
                parts.append(param.opts[0])
        elif isinstance(value, dict):
            parts += [a for k, v in value.items() for a in (param.opts[0], f"{k}={v}")]
        elif param.multiple:
            parts += [a for v in value for a in (param.opts[0], str(v))]
        elif isinstance(value, tuple):
            parts += [param.opts[0], ",".join(map(str, value))]
        else:
            parts += [param.opts[0], str(value)]
    return " ".join(shlex.quote(p) for p in parts)


def _write_page(path: Path, title: str, sections: list[str]) -> None:
    """A results page: the exact command that produced it, then the sections."""
    from bench.store import write_atomic

    header = [f"# {title}", "", "Produced by:", "", "```", _command_line(), "```", ""]
    write_atomic(path, "\n".join(header + sections) + "\n")
    click.echo(f"wrote {path}", err=True)


def _sampler_label(train: dict[str, Any]) -> str:
    """'uniform', or with its options: 'uniform exclude_held_out=True' (a page must say when they differ)."""
    options = " ".join(f"{k}={v}" for k, v in sorted((train.get("sampler_options") or {}).items()))
    return " ".join(filter(None, [train.get("sampler", "?"), options]))


def _write_markdown(path: Path, runs: list, baseline: str, title: str, metrics: tuple[str, ...] | None = None) -> None:
    """The leaderboard page: environment, leaderboard and baseline comparison."""
    from bench import tables

    first = runs[0]
    samplers = ", ".join(f"`{s}`" for s in sorted({_sampler_label(r.config.get("train", {})) for r in runs}))
    lines = [f"Recorded {datetime.now():%Y-%m-%d %H:%M}; protocol `{first.protocol}`, ties `{first.ties}`, "
             f"training negatives {samplers}, device `{first.device}`, torch {first.versions.get('torch')}, "
             f"{first.versions.get('threads')} threads, commit `{first.git_commit}`.", "",
             "## Leaderboard (test split, mean ± std over seeds)", "", tables.leaderboard(runs, "github", metrics), ""]
    if baseline in {r.model for r in runs}:
        lines += [f"## Against the {baseline} baseline (p: paired sign-flip permutation test over users)", "",
                  tables.comparison(runs, baseline, "github", metrics), ""]
    _write_page(path, title, lines)


@main.command()
@click.option("--results-dir", default=RESULTS_DIR, show_default=True, type=click.Path(file_okay=False))
@click.option("--dataset", default=None, help="only runs on this dataset label")
@click.option("--models", default=None, callback=_csv(str), help="only these models")
@click.option("--since", default=None, help="only runs started on/after this date (YYYY-MM-DD)")
@click.option("--ids", default=None, callback=_csv(int), help="only these run ids")
@click.option("--protocol", type=click.Choice(["full", "sampled"]), default=None, help="only runs of this protocol")
@click.option("--ties", type=click.Choice(["expected", "pessimistic", "optimistic"]), default=None,
              help="only runs of this tie policy")
@click.option("--baseline", default="neumf", show_default=True)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="github", show_default=True,
              help="table format; json and csv carry every metric")
@click.option("--metrics", default=None, callback=_csv(str),
              help="metrics the tables show, e.g. HR@20,MAP@10 or 'all' [default: HR@10,NDCG@10,MRR]")
@click.option("--output", type=click.Path(dir_okay=False), help="also write the tables as Markdown here")
@click.option("--plot", is_flag=True, help="write PNG plots (training curves, metric by model)")
def report(results_dir: str, dataset: str | None, models: tuple[str, ...] | None, since: str | None,
           ids: tuple[int, ...] | None, protocol: str | None, ties: str | None, baseline: str, fmt: str,
           metrics: tuple[str, ...] | None, output: str | None, plot: bool) -> None:
    """Rebuild the tables (and plots) from the results store."""
    from bench.store import DB_NAME, ResultStore, check_writable_file

    if not (Path(results_dir) / DB_NAME).exists():
        _fail(f"no results store at {Path(results_dir) / DB_NAME}; run `bench run` first")
    since_ts = None
    if since:
        try:
            since_ts = datetime.strptime(since, "%Y-%m-%d").timestamp()
        except ValueError:
            _fail(f"--since {since!r}: expected a date YYYY-MM-DD")
    store = _guard(lambda: ResultStore(results_dir))
    matching = [r for r in store.runs(dataset=dataset, models=list(models) if models else None, since=since_ts,
                                      ids=list(ids) if ids else None)
                if (protocol is None or r.protocol == protocol) and (ties is None or r.ties == ties)]
    runs = [r for r in matching if r.status == "finished"]
    unfinished = [[r.id, r.model, r.seed, r.status, (r.reason or "")[:100]] for r in matching if r.status != "finished"]
    if unfinished:  # failed, interrupted (Ctrl-C, SIGTERM, or a process found dead) or still running
        from tabulate import tabulate

        click.echo("runs that did not finish (not in the tables):\n"
                   + tabulate(unfinished, headers=["id", "model", "seed", "status", "reason"], tablefmt="github"),
                   err=True)
    if not runs:
        _fail("no finished runs match these filters")
    labels = {r.dataset for r in runs}
    if len(labels) > 1:
        _fail(f"runs from several datasets ({', '.join(sorted(labels))}); choose one with --dataset")
    setups = {(r.protocol, r.ties, r.num_negatives) for r in runs}
    if len(setups) > 1:  # never average a full-ranking run with a sampled one
        listed = "; ".join(f"protocol {p}, ties {t}" + (f", {n} negatives" if n else "") for p, t, n in setups)
        _fail(f"runs under different evaluation setups ({listed}); choose with --protocol / --ties / --ids")
    click.echo(_guard(lambda: _tables(runs, baseline, fmt, metrics)))
    if output:
        _guard(lambda: check_writable_file(output, "--output"))
        _write_markdown(Path(output), runs, baseline, f"{runs[0].dataset} leaderboard", metrics)
    if plot:
        from bench.plots import write_plots

        for path in _guard(lambda: write_plots(runs, Path(results_dir) / "plots")):
            click.echo(f"wrote {path}", err=True)


_OBJECTIVES = {"hr": "HR", "ndcg": "NDCG", "recall": "Recall", "map": "MAP", "mrr": "MRR"}


def _objective(ctx: Any, param: Any, value: str) -> str:
    name, _, k = value.partition("@")
    if name.lower() not in _OBJECTIVES or (name.lower() != "mrr" and not k.isdigit()):
        raise click.BadParameter(f"{value!r}: expected e.g. ndcg@10, hr@20, recall@10, map@10 or mrr")
    return _OBJECTIVES[name.lower()] + (f"@{k}" if k else "")


@main.command()
@click.option("--models", default="deepfm,xdeepfm,neumf", show_default=True, callback=_csv(str),
              help="models to tune, each with the same budget")
@click.option("--trials", default=50, show_default=True, help="finished trials wanted in each study")
@click.option("--timeout", type=float, default=None, help="stop starting trials after this many seconds")
@click.option("--storage", default=None, help="Optuna storage URL (default: SQLite under the results dir); "
              "a path ending .log/.journal is a journal file")
@click.option("--study", default=None, help="study name prefix (default: dataset-model-device)")
@click.option("--n-jobs", default=1, show_default=True, help="worker processes on this machine")
@click.option("--devices", default=None, callback=_csv(str), help="sweep the same space on each device")
@click.option("--sweep", default="", callback=_csv(str), help="plugin choices to sweep: interactions,sampler")
@click.option("--objective", default="ndcg@10", show_default=True, callback=_objective,
              help="validation metric to maximise")
@click.option("--pruner", type=click.Choice(["median", "none"]), default="median", show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--output", type=click.Path(dir_okay=False), help="also write the best-trials table as Markdown")
@data_options
@train_options
def tune(models: tuple[str, ...], trials: int, timeout: float | None, storage: str | None, study: str | None,
         n_jobs: int, devices: tuple[str, ...] | None, sweep: tuple[str, ...], objective: str, pruner: str,
         seed: int, output: str | None, **kw: Any) -> None:
    """Tune models with Optuna on the validation split; save the best params for `bench run --params best`."""
    from tabulate import tabulate

    from bench.runner import RunConfig
    from bench.tuner import SWEEPS, TuneConfig, best_rows, save_best, summary
    from bench.tuner import tune as run_study

    unknown = [s for s in sweep if s not in SWEEPS]
    if unknown:
        _fail(f"--sweep {','.join(unknown)}: expected some of {', '.join(SWEEPS)}")
    for name in models:
        _guard(lambda name=name: registry.get("model", name))
    threads, results_dir = kw.pop("threads"), kw.pop("results_dir")
    data_cfg, train_cfg = _data_config(kw), _train_config(kw)
    run_cfg = RunConfig(data=data_cfg, train=train_cfg, models=models, protocol=kw["protocol"],
                        eval_negatives=kw["eval_negatives"], ks=kw["ks"], ties=kw["ties"], fm_dim=kw["fm_dim"])
    sections = []
    for device in devices or (kw["device"],):
        _guard(lambda device=device: resolve_device_name(device))
        for name in models:
            cfg = TuneConfig(run=run_cfg, model=name, trials=trials, timeout=timeout, storage=storage, study=study,
                             n_jobs=n_jobs, threads=threads, device=resolve_device_name(device), sweep=sweep,
                             objective=objective, pruner=pruner, seed=seed, results_dir=results_dir,
                             progress=train_cfg.progress)
            started = time.perf_counter()
            result = _guard(lambda cfg=cfg: run_study(cfg))
            counts = summary(result)
            rows = best_rows(result)
            head = (f"{cfg.study_name()}: {sum(counts.values())} trials ({counts['complete']} complete, "
                    f"{counts['pruned']} pruned, {counts['fail']} failed), "
                    f"this call {time.perf_counter() - started:.0f} s")
            if not rows:
                click.echo(head + "; no completed trial yet")
                continue
            table = tabulate([[r["trial"], f"{r['value']:.4f}", f"{r['seconds'] or 0:.1f}",
                               f"{r['samples_per_s'] or 0:,.0f}", json.dumps(r["params"], sort_keys=True)]
                              for r in rows], headers=["trial", f"val {objective}", "s", "samples/s", "params"],
                             tablefmt="github", disable_numparse=True)
            path = save_best(result, cfg)
            click.echo(f"{head}\n{table}\nbest params saved to {path}")
            sections.append(f"### {cfg.study_name()}\n\n{head}\n\n{table}\n\nBest params: `{path}`\n")
    if output and sections:
        _write_page(Path(output), "Tuning results", sections)
    click.echo(f"next: bench run --models {','.join(models)} --params best --seeds 1,2,3", err=True)


def resolve_device_name(name: str) -> str:
    from bench.device import resolve_device

    return str(resolve_device(name))


def _register_optional_commands() -> None:
    """Commands living in their own modules."""
    from bench.kernels.harness import kernel_command

    main.add_command(kernel_command, "kernel")


_register_optional_commands()
