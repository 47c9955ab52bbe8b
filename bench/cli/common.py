"""What the commands share: the data / training / evaluation options that fill the experiment configuration,
one-line errors with exit codes, and the command line as a results page records it."""

from __future__ import annotations

import functools
import shlex
import sys
from pathlib import Path
from typing import Any, Callable, NoReturn

import click

import registry
from bench.config import (
    HISTORY,
    HISTORY_POOLINGS,
    PROTOCOLS,
    DataConfig,
    EvalConfig,
    TrainConfig,
    comma_list,
    parse_value,
)
from bench.eval.metrics import TIE_POLICIES
from bench.text import printable

RESULTS_DIR = "results"


class InputError(click.ClickException):
    """Bad input refused before any work: exit code 2, as for click's own option errors. One line, its
    control characters escaped (it often quotes what the user or a file gave)."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(printable(message))


def fail(message: str) -> NoReturn:
    raise InputError(message)


def guard(fn: Callable[[], Any], error: type[click.ClickException] = InputError) -> Any:
    """Turn the library's clear errors into one-line CLI errors (no traceback); exit 2 by default."""
    try:
        return fn()
    except (ValueError, registry.RegistryError, FileNotFoundError, OSError) as exc:
        raise error(str(exc)) from None


def comma_option(kind: Callable[[str], Any]) -> Callable[[Any, Any, str | None], Any]:
    """A click callback: 'a,b' -> (kind('a'), kind('b')); None stays None."""
    def parse(ctx: Any, param: Any, value: str | None) -> Any:
        if value is None:
            return None
        try:
            return tuple(kind(v) for v in comma_list(value))
        except ValueError:
            raise click.BadParameter(f"expected a comma-separated list, got {value!r}") from None
    return parse


def key_values(ctx: Any, param: Any, values: tuple[str, ...]) -> dict[str, Any]:
    """A click callback: repeated KEY=VALUE -> {key: parsed value}."""
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}")
        try:
            out[key.replace("-", "_")] = parse_value(value)
        except ValueError as exc:
            raise click.BadParameter(f"{key}: {exc}") from None
    return out


def _options(options: list[Callable], f: Callable) -> Callable:
    return functools.reduce(lambda acc, opt: opt(acc), reversed(options), f)


def data_options(f: Callable) -> Callable:
    """Where the data comes from and how it becomes implicit feedback (`DataConfig`)."""
    return _options([
        click.option("--dataset", default=DataConfig.dataset, show_default=True,
                     help="dataset plugin (bench list dataset)"),
        click.option("--data-dir", type=click.Path(file_okay=False),
                     help="local copy of the files (else BENCH_DATA_DIR, else the cache or a download)"),
        click.option("--cache-dir", envvar="BENCH_CACHE_DIR", type=click.Path(file_okay=False),
                     help="download cache [env BENCH_CACHE_DIR, default ~/.cache/deepfm-bench]"),
        click.option("--genre-encoding", type=click.Choice(["multihot", "binary"]), default=None,
                     help="MovieLens genres: one multi-hot field (default) or one 0/1 field per genre"),
        click.option("--dataset-opt", "dataset_opts", multiple=True, callback=key_values, metavar="KEY=VALUE",
                     help="extra dataset option, e.g. interactions=ratings.csv for --dataset csv"),
        click.option("--threshold", default=DataConfig.threshold, show_default=True,
                     help="rating >= threshold is a positive"),
        click.option("--min-interactions", default=DataConfig.min_interactions, show_default=True,
                     help="users with fewer positives go to train only"),
        click.option("--history", default=DataConfig.history, show_default=True, type=click.IntRange(min=0),
                     help=f"the user's last N earlier positives as a feature, for every model (0: none); "
                          f"a model named NAME+history gets it alone (N, or {HISTORY} when N is 0)"),
        click.option("--history-pooling", type=click.Choice(HISTORY_POOLINGS), default=DataConfig.history_pooling,
                     show_default=True, help="how the history's items are pooled"),
    ], f)


def train_options(f: Callable) -> Callable:
    """Training (`TrainConfig`) and evaluation (`EvalConfig`) knobs, the device and the results folder."""
    return _options([
        click.option("--epochs", default=TrainConfig.epochs, show_default=True),
        click.option("--batch-size", default=TrainConfig.batch_size, show_default=True),
        click.option("--lr", default=TrainConfig.lr, show_default=True),
        click.option("--weight-decay", default=TrainConfig.weight_decay, show_default=True),
        click.option("--patience", default=TrainConfig.patience, show_default=True,
                     help="epochs without a better validation metric before stopping"),
        click.option("--num-negatives", default=TrainConfig.num_negatives, show_default=True,
                     help="training negatives per positive"),
        click.option("--sampler", default=TrainConfig.sampler, show_default=True, help="negative sampler plugin"),
        click.option("--sampler-opt", "sampler_opts", multiple=True, callback=key_values, metavar="KEY=VALUE",
                     help="sampler option, e.g. alpha=0.5 for popularity (repeatable)"),
        click.option("--embed-dim", "--fm-dim", "embed_dim", default=16, show_default=True,
                     type=click.IntRange(min=1), help="embedding dim shared by every term of a model"),
        click.option("--protocol", type=click.Choice(PROTOCOLS), default=EvalConfig.protocol, show_default=True,
                     help="full: rank every item; sampled: the held-out item among --eval-negatives"),
        click.option("--eval-negatives", default=EvalConfig.eval_negatives, show_default=True,
                     help="negatives per user, sampled protocol"),
        click.option("--k", "ks", default=",".join(map(str, EvalConfig.ks)), show_default=True,
                     callback=comma_option(int), help="cutoffs of HR@K, NDCG@K, MAP@K"),
        click.option("--ties", type=click.Choice(TIE_POLICIES), default=EvalConfig.ties, show_default=True,
                     help="how candidates tied with the held-out item are ranked"),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps"),
        click.option("--deterministic", is_flag=True, default=TrainConfig.deterministic,
                     help="torch's deterministic algorithms: a CUDA run repeats bit for bit (CPU runs always do)"),
        click.option("--threads", type=click.IntRange(min=1), default=None,
                     help="torch CPU threads (default: torch's)"),
        click.option("--results-dir", default=RESULTS_DIR, show_default=True, type=click.Path(file_okay=False)),
        click.option("--progress/--no-progress", default=None,
                     help="progress bars on a terminal, a line per epoch otherwise (default); none with --no-..."),
    ], f)


def data_config(kw: dict[str, Any]) -> DataConfig:
    """The data configuration from the data options (popped from `kw`), checked."""
    options = dict(kw.pop("dataset_opts"))
    genre = kw.pop("genre_encoding")
    if genre:
        options["genre_encoding"] = genre
    return guard(lambda: DataConfig(dataset=kw.pop("dataset"), data_dir=kw.pop("data_dir"),
                                    cache_dir=kw.pop("cache_dir"), options=options, threshold=kw.pop("threshold"),
                                    min_interactions=kw.pop("min_interactions"), history=kw.pop("history"),
                                    history_pooling=kw.pop("history_pooling")))


def experiment_parts(kw: dict[str, Any]) -> tuple[DataConfig, TrainConfig, EvalConfig]:
    """The data, training and evaluation configurations from the options (popped from `kw`), each checked."""
    data = data_config(kw)
    return data, *guard(lambda: (
        TrainConfig(epochs=kw.pop("epochs"), batch_size=kw.pop("batch_size"), lr=kw.pop("lr"),
                    weight_decay=kw.pop("weight_decay"), patience=kw.pop("patience"),
                    num_negatives=kw.pop("num_negatives"), sampler=kw.pop("sampler"),
                    sampler_options=dict(kw.pop("sampler_opts")), deterministic=kw.pop("deterministic")),
        EvalConfig(protocol=kw.pop("protocol"), eval_negatives=kw.pop("eval_negatives"), ks=kw.pop("ks"),
                   ties=kw.pop("ties")),
    ))


def progress_mode(flag: bool | None) -> tuple[bool, bool]:
    """(progress bars, a line per epoch): bars on a terminal, lines when piped, neither with --no-progress."""
    if flag is None:
        return (True, False) if sys.stderr.isatty() else (False, True)
    return flag, False


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


def command_line() -> str:
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
                or value is None:  # env-sourced (BENCH_CACHE_DIR) is this machine's business
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


def write_page(path: Path, title: str, sections: list[str]) -> None:
    """A results page: the exact command that produced it, then the sections; written whole or not at all."""
    from bench.results.store import write_atomic

    header = [f"# {title}", "", "Produced by:", "", "```", command_line(), "```", ""]
    write_atomic(path, "\n".join(header + sections) + "\n")
    click.echo(printable(f"wrote {path}"), err=True)


def tables(runs: list, baseline: str, fmt: str, metrics: tuple[str, ...] | None = None) -> str:
    """The leaderboard and, when the baseline finished here, the comparison with it (else one line why not)."""
    from bench.results import tables as render

    board = render.leaderboard(runs, fmt, metrics)
    missing = render.missing_baseline(runs, baseline)
    if missing:
        click.echo(printable(missing), err=True)
    if fmt == "json" or missing:
        return board
    return board + "\n\n" + render.comparison(runs, baseline, fmt, metrics)
