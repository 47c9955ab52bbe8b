"""The `bench` command: run, tune, report, kernel, list, data; one module per command, click only here."""

from __future__ import annotations

import click

from bench.device import flush_denormal


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="deepfm-bench")
def main() -> None:
    """Benchmark DeepFM-family recommenders: train, evaluate, compare, tune."""
    flush_denormal()  # before torch starts its CPU threads, which then inherit the mode


def _register() -> None:
    from bench.cli.data import data
    from bench.cli.kernel import kernel
    from bench.cli.plugins import list_plugins
    from bench.cli.report import report
    from bench.cli.run import run
    from bench.cli.tune import tune

    for command in (run, tune, report, kernel, list_plugins, data):
        main.add_command(command)


_register()
