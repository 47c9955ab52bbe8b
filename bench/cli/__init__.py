"""The `bench` command: run, tune, report, archive, kernel, list, data, recommend; one module per command,
click only here."""

from __future__ import annotations

import sys
import warnings
from typing import Any

import click

from bench.device import flush_denormal
from bench.interrupts import exit_code, sigterm_as_interrupt
from bench.text import printable


class _Command(click.Group):
    """The command group: Ctrl-C or SIGTERM at any moment (loading data included) ends the command with the
    shell's code for the signal (130, 143) and one line, not click's "Aborted!" and 1; warnings are one line
    each, their text printable."""

    def invoke(self, ctx: click.Context) -> Any:
        previous = warnings.showwarning
        warnings.showwarning = _show_warning
        try:
            with sigterm_as_interrupt():
                return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            click.echo(f"interrupted ({exc or 'Ctrl-C'})", err=True)
            sys.exit(exit_code(exc))
        finally:
            warnings.showwarning = previous


def _show_warning(message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None,
                  line: str | None = None) -> None:
    click.echo(f"warning: {printable(message)}", err=True)


@click.group(cls=_Command, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="deepfm-bench")
def main() -> None:
    """Benchmark DeepFM-family recommenders: train, evaluate, compare, tune."""
    flush_denormal()  # before torch starts its CPU threads, which then inherit the mode


def _register() -> None:
    from bench.cli.archive import archive_command
    from bench.cli.data import data
    from bench.cli.kernel import kernel
    from bench.cli.plugins import list_plugins
    from bench.cli.recommend import recommend
    from bench.cli.report import report
    from bench.cli.run import run
    from bench.cli.tune import tune

    for command in (run, tune, report, archive_command, kernel, list_plugins, data, recommend):
        main.add_command(command)


_register()
