"""`bench data`: load a dataset and print its statistics and split."""

from __future__ import annotations

from typing import Any

import click

from bench.cli.common import data_config, data_options, guard
from bench.text import printable


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
            ["split", _split(info)],
            ["validation pairs" + (f" (users with >= {info['min_interactions']} positives)"
                                   if info.get("split", "loo") == "loo" else ""), f"{len(d.val):,}"],
            ["test pairs", f"{len(d.test):,}"]]
    for name in ("val", "test"):
        audit = (info.get("audit") or {}).get(name)
        if audit:
            lag = "" if audit["median_lag"] is None else f", median lag {audit['median_lag']:.1f} {audit['lag_unit']}"
            rows.append([f"leakage audit ({name}): targets with a later training interaction of another user",
                         f"{audit['with_later_training']:,} of {audit['evaluated']:,} ({audit['share']:.1%}{lag})"])
    click.echo(printable(tabulate(rows, headers=["dataset", d.name], tablefmt="github", disable_numparse=True),
                         newlines=True))


def _split(info: dict) -> str:
    if info.get("split", "loo") == "loo":
        return "temporal leave-one-out"
    cut, cold = info.get("cutoffs") or {}, info.get("cold") or {}
    return (f"global: validation from {cut.get('val')}, test from {cut.get('test')}; cold users not evaluated: "
            f"{cold.get('val', 0):,} (validation), {cold.get('test', 0):,} (test)")
