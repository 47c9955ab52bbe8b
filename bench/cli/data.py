"""`bench data`: load a dataset and print its statistics and split."""

from __future__ import annotations

from typing import Any

import click

from bench.cli.common import data_config, data_options, guard


@click.command()
@data_options
def data(**kw: Any) -> None:
    """Load (download and cache if needed) a dataset and print its statistics and split."""
    from tabulate import tabulate

    from bench.runner import load_data

    d = guard(lambda: load_data(data_config(kw)))
    info = d.info
    rows = [["interactions (rows read)", f"{info['n_interactions']:,}"],
            [f"positives (rating >= {info['threshold']:g})", f"{info['n_positives']:,}"],
            ["users (with a positive)", f"{d.n_users - 1:,}"], ["items (candidate pool)", f"{d.n_items - 1:,}"],
            ["rating range", "{:g} .. {:g}".format(*info["rating_range"])],
            ["fields", ", ".join(f.name for f in d.spec)], ["train positives", f"{len(d.train):,}"],
            [f"validation pairs (users with >= {info['min_interactions']} positives)", f"{len(d.val):,}"],
            ["test pairs", f"{len(d.test):,}"]]
    click.echo(tabulate(rows, headers=["dataset", d.name], tablefmt="github", disable_numparse=True))
