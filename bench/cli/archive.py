"""`bench archive`: a consistent, committable copy of a results folder's stores, taken while they are in use."""

from __future__ import annotations

import click

from bench.cli.common import RESULTS_DIR, guard
from bench.text import printable


@click.command("archive")
@click.option("--results-dir", default=RESULTS_DIR, show_default=True, type=click.Path(file_okay=False),
              help="the folder bench run / bench tune write")
@click.option("--output", required=True, type=click.Path(), help="the folder to copy into (replaced file by file)")
def archive_command(results_dir: str, output: str) -> None:
    """Copy the run store, the study store and the best params into OUTPUT, consistent even while runs and
    studies write: the copy rebuilds the pages (bench report --results-dir OUTPUT) and resumes the studies."""
    from bench.results.archive import archive

    for path in guard(lambda: archive(results_dir, output)):
        click.echo(printable(f"wrote {path}"), err=True)
