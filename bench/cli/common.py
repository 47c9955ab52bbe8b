"""What the commands share: the data / training / evaluation options that fill the experiment configuration,
one-line errors with exit codes, and the command line as a results page records it."""

from __future__ import annotations

import functools
import shlex
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, NoReturn

import click

import registry
from bench.config import DataConfig, EvalConfig, ModelConfig, TrainConfig, comma_list, options_of, parse_value
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


def declared_options(config_class: Any) -> list[Callable]:
    """A click option for every option the configuration class declares (`bench.config.option`): the flag,
    its default, help and type all come from the one declaration; the values are checked by the class."""
    made = []
    for name, default, spec in options_of(config_class):
        flag = (f"--{spec.flag_name(name)}", *spec.aliases)
        if spec.kind is dict:
            made.append(click.option(*flag, name, multiple=True, callback=key_values, metavar="KEY=VALUE",
                                     help=spec.help))
        elif spec.kind is tuple:
            made.append(click.option(*flag, name, default=",".join(map(str, default)), show_default=True,
                                     callback=comma_option(int), help=spec.help))
        elif spec.kind is bool:
            made.append(click.option(*flag, name, is_flag=True, default=default, help=spec.help))
        else:
            kind = (click.Choice(spec.choices) if spec.choices else click.Path(file_okay=False) if spec.path
                    else {int: click.INT, float: click.FLOAT}.get(spec.kind, click.STRING))
            made.append(click.option(*flag, name, type=kind, default=default, show_default=default is not None,
                                     envvar=spec.envvar, help=spec.help))
    return made


def explicit() -> set[str]:
    """The parameters of this command that the user gave (on the command line or through their environment
    variable), as opposed to those left at their defaults: these override an experiment file's values."""
    ctx = click.get_current_context()
    sources = (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT)
    return {name for name in ctx.params if ctx.get_parameter_source(name) in sources}


def from_options(config_class: Any, kw: dict[str, Any], file: dict[str, Any] | None = None) -> Any:
    """The configuration built from its declared options' values (popped from `kw`), checked: an option the
    user gave wins, then the experiment file's value (`file`, that section of it), then the default."""
    given, file = explicit(), file or {}
    values = {}
    for name, _, _ in options_of(config_class):
        value = kw.pop(name)
        values[name] = file[name] if name in file and name not in given else value
    values = {k: dict(v) if isinstance(v, dict) else v for k, v in values.items()}
    return guard(lambda: config_class(**values))


def config_option(f: Callable) -> Callable:
    """--config FILE: an experiment file (YAML), under the command line's options."""
    return click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                        help="an experiment file (YAML: data, train, eval, models, seeds, device); an option given on "
                             "the command line overrides the file's value")(f)


def base_models(names: tuple[str, ...], file: dict[str, Any], embed_dim: int, dim_given: bool,
                 names_given: bool) -> tuple[ModelConfig, ...]:
    """--models with --embed-dim, or (when --models was not given) the experiment file's models, each with its
    own dim unless --embed-dim was given."""
    if "models" in file and not names_given:
        return tuple(replace(m, embed_dim=embed_dim) if dim_given else m for m in file["models"])
    return tuple(ModelConfig(name, embed_dim=embed_dim) for name in names)


def track_option(f: Callable) -> Callable:
    """--track mlflow[=URI]: log runs (and trials) to MLflow, a local store under the results folder or a server."""
    return click.option("--track", default=None, metavar="mlflow[=URI]",
                        help="log every run to MLflow: a local store under the results folder (mlflow ui "
                             "--backend-store-uri sqlite:///results/mlflow.db opens it), or a tracking server URI; "
                             "needs the mlflow extra")(f)


def experiment_file(path: str | None) -> dict[str, Any]:
    """The experiment file's checked values, or {} without one; a bad file is one line (exit 2)."""
    if not path:
        return {}
    from bench.config_file import load

    return guard(lambda: load(path))


def data_options(f: Callable) -> Callable:
    """Where the data comes from and how it becomes implicit feedback (`DataConfig`), and MovieLens's genres."""
    return _options([
        *declared_options(DataConfig),
        click.option("--genre-encoding", type=click.Choice(["multihot", "binary"]), default=None,
                     help="MovieLens genres: one multi-hot field (default) or one 0/1 field per genre "
                          "(--dataset-opt genre_encoding=...)"),
    ], f)


def train_options(f: Callable) -> Callable:
    """Training (`TrainConfig`) and evaluation (`EvalConfig`) options, the embedding dim, the device, threads and
    the results folder."""
    return _options([
        *declared_options(TrainConfig),
        *declared_options(EvalConfig),
        click.option("--embed-dim", "--fm-dim", "embed_dim", default=16, show_default=True,
                     type=click.IntRange(min=1), help="embedding dim shared by every term of a model"),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps"),
        click.option("--threads", type=click.IntRange(min=1), default=None,
                     help="torch CPU threads (default: torch's)"),
        click.option("--results-dir", default=RESULTS_DIR, show_default=True, type=click.Path(file_okay=False)),
        click.option("--progress/--no-progress", default=None,
                     help="progress bars on a terminal, a line per epoch otherwise (default); none with --no-..."),
    ], f)


def data_config(kw: dict[str, Any], file: dict[str, Any] | None = None) -> DataConfig:
    """The data configuration from the data options (popped from `kw`) over an experiment file's `data`, checked."""
    file = dict((file or {}).get("data", {}))
    genre = kw.pop("genre_encoding")
    if genre:  # a shortcut for --dataset-opt genre_encoding=...
        if "options" not in explicit():
            kw["options"] = dict(file.get("options", {}))
            file.pop("options", None)
        kw["options"] = {**kw["options"], "genre_encoding": genre}
        file.pop("options", None)
    return from_options(DataConfig, kw, file)


def experiment_parts(kw: dict[str, Any], file: dict[str, Any] | None = None
                     ) -> tuple[DataConfig, TrainConfig, EvalConfig]:
    """The data, training and evaluation configurations from the options (popped from `kw`) over an experiment
    file's sections (`file`, from `experiment_file`), each checked."""
    file = file or {}
    return (data_config(kw, file), from_options(TrainConfig, kw, file.get("train")),
            from_options(EvalConfig, kw, file.get("eval")))


def progress_mode(flag: bool | None) -> tuple[bool, bool]:
    """(progress bars, a line per epoch): bars on a terminal, lines when piped, neither with --no-progress."""
    if flag is None:
        return (True, False) if sys.stderr.isatty() else (False, True)
    return flag, False


MACHINE_PATHS = ("data_dir", "cache_dir")  # where this machine keeps its data: not part of a result's recipe
PATHS = ("results_dir", "output", "params_path", "html_dir", "config_path")


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
        elif param.name == "ids":  # run ids as ranges, as a reader would type them: 1,3-93,96-137
            from bench.results.pages import id_ranges
            parts += [param.opts[0], id_ranges(list(value), sep=",")]
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
