"""`bench list`: the registered plugins."""

from __future__ import annotations

import click

import registry
from bench.text import printable


@click.command("list")
@click.argument("kind", required=False, type=click.Choice(list(registry.KINDS)))
def list_plugins(kind: str | None) -> None:
    """Registered plugins (name, kind, source distribution, one-line doc)."""
    from tabulate import tabulate

    plugins = registry.describe(kind)
    rows = [[printable(p.name), p.kind, printable(p.source), _shorten(f"ERROR: {p.error}" if p.error else p.doc)]
            for p in plugins]
    click.echo(tabulate(rows, headers=["name", "kind", "source", "description"], tablefmt="github"))
    for p in plugins:  # whole errors below the table: one broken plugin widens no row
        if p.error:
            click.echo(printable(f"{p.kind} {p.name} from {p.source} ({p.target}): {p.error}"), err=True)


def _shorten(text: str, width: int = 100) -> str:
    text = printable(" ".join(text.split()))
    return text if len(text) <= width else text[:width - 3] + "..."
