"""`bench report`: the tables (and plots) rebuilt from the results store."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import click

from bench.cli.common import RESULTS_DIR, comma_option, command_line, fail, guard, tables, write_page
from bench.cli.run import METRICS_HELP
from bench.config import PROTOCOLS, comma_list
from bench.eval.metrics import TIE_POLICIES
from bench.results.tables import FORMATS
from bench.text import printable

MAX_RUN_ID = 2**63 - 1  # SQLite's largest integer: no run has a larger id


MAX_RANGE = 1_000_000  # ids one FIRST-LAST range may span: a typo such as 1-10000000000 fails, not hangs


def _run_ids(ctx: Any, param: Any, value: str | None) -> tuple[int, ...] | None:
    """--ids: run ids and FIRST-LAST ranges ('1,4,7-12'), each a whole number from 1 to SQLite's largest integer."""
    if value is None:
        return None
    ids: list[int] = []
    for part in comma_list(value):
        first, dash, last = part.partition("-")
        try:
            bounds = (int(first), int(last)) if dash and first else (int(part), int(part))
        except ValueError:
            raise click.BadParameter(f"{part!r} is not a run id or a range; expected a comma list of whole numbers "
                                     f"and FIRST-LAST ranges, e.g. 1,4,7-12") from None
        wrong = [i for i in bounds if not 1 <= i <= MAX_RUN_ID]
        if wrong:
            raise click.BadParameter(f"{wrong[0]} is not a run id; expected whole numbers from 1 to {MAX_RUN_ID}")
        if not 0 <= bounds[1] - bounds[0] < MAX_RANGE:
            raise click.BadParameter(f"{part!r} is not a range of run ids; expected FIRST-LAST with FIRST <= LAST, "
                                     f"at most {MAX_RANGE:,} ids")
        ids.extend(range(bounds[0], bounds[1] + 1))
    return tuple(ids)


@click.command()
@click.option("--results-dir", default=RESULTS_DIR, show_default=True, type=click.Path(file_okay=False))
@click.option("--dataset", default=None, help="only runs on this dataset label")
@click.option("--models", default=None, callback=comma_option(str), help="only these models")
@click.option("--since", default=None, help="only runs started on/after this date (YYYY-MM-DD)")
@click.option("--ids", default=None, callback=_run_ids, help="only these run ids, e.g. 1,4,7-12")
@click.option("--protocol", type=click.Choice(PROTOCOLS), default=None, help="only runs of this protocol")
@click.option("--ties", type=click.Choice(TIE_POLICIES), default=None, help="only runs of this tie policy")
@click.option("--baseline", default="neumf", show_default=True)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="github", show_default=True,
              help="table format; json and csv carry every metric")
@click.option("--metrics", default=None, callback=comma_option(str), help=METRICS_HELP)
@click.option("--output", type=click.Path(dir_okay=False), help="also write the tables as Markdown here")
@click.option("--plot", is_flag=True, help="write PNG plots (training curves, metric by model)")
@click.option("--html", "html_dir", default=None, type=click.Path(file_okay=False),
              help="also write a self-contained web page DIR/index.html: the tables, a forest plot of the intervals, "
                   "validation curves, the protocol card and kernel table (needs the plot extra)")
@click.option("--config-out", type=click.Path(dir_okay=False), default=None,
              help="also write the runs shown as an experiment file (YAML) that bench run --config runs again")
@click.option("--mixed", is_flag=True, help="put runs whose protocol cards differ in one table (the card lists each "
              "value with its models)")
def report(results_dir: str, dataset: str | None, models: tuple[str, ...] | None, since: str | None,
           ids: tuple[int, ...] | None, protocol: str | None, ties: str | None, baseline: str, fmt: str,
           metrics: tuple[str, ...] | None, output: str | None, plot: bool, html_dir: str | None,
           config_out: str | None, mixed: bool) -> None:
    """Rebuild the tables (and plots) from the results store."""
    from tabulate import tabulate

    from bench.results.card import FACTORS, differences
    from bench.results.pages import leaderboard_sections
    from bench.results.store import DB_NAME, ResultStore, check_writable_file

    if not (Path(results_dir) / DB_NAME).exists():
        fail(f"no results store at {Path(results_dir) / DB_NAME}; run `bench run` first")
    since_ts = None
    if since:
        try:
            since_ts = datetime.strptime(since, "%Y-%m-%d").timestamp()
        except ValueError:
            fail(f"--since {since!r}: expected a date YYYY-MM-DD")
    for path, option in ((output, "--output"), (config_out, "--config-out")):
        if path:
            guard(lambda path=path, option=option: check_writable_file(path, option))
    if html_dir:
        from bench.results.html import check_html_dir

        guard(lambda: check_html_dir(html_dir))
    store = guard(lambda: ResultStore(results_dir, readonly=True))  # reading writes nothing
    found = guard(lambda: store.runs(dataset=dataset, models=list(models) if models else None, since=since_ts,
                                     ids=list(ids) if ids else None))
    if found.damaged:  # never shown as results, never guessed at
        click.echo(printable(f"runs that cannot be read (damaged in {store.path}; not in the tables):") + "\n"
                   + tabulate([[r.id, printable(r.model), r.status, printable(r.reason[:160])] for r in found.damaged],
                              headers=["id", "model", "status", "reason"], tablefmt="github"), err=True)
    matching = [r for r in found if (protocol is None or r.protocol == protocol) and (ties is None or r.ties == ties)]
    runs = [r for r in matching if r.status == "finished"]
    unfinished = [[r.id, printable(r.model), r.seed, r.status, printable((r.reason or "")[:100])] for r in matching
                  if r.status != "finished"]
    if unfinished:  # failed, interrupted (Ctrl-C, SIGTERM, or a process found dead) or still running
        click.echo("runs that did not finish (not in the tables):\n"
                   + tabulate(unfinished, headers=["id", "model", "seed", "status", "reason"], tablefmt="github"),
                   err=True)
    if not runs:
        fail("no finished runs match these filters")
    differ = differences(runs)
    if differ and not mixed:  # runs whose numbers mean different things: never one table unless asked
        listed = "; ".join(f"{FACTORS[k]}: {' | '.join(v)}" for k, v in differ.items())
        fail(f"the runs' protocol cards differ ({listed}); choose with --dataset / --protocol / --ties / --ids, "
             "or pass --mixed to show them in one table anyway")
    for model in {r.model for r in runs}:  # a model's seeds are averaged: they must share one card, --mixed or not
        own = differences([r for r in runs if r.model == model])
        if own:
            fail(f"model {model} has runs under different protocol cards ({', '.join(FACTORS[k] for k in own)}): "
                 "they cannot be averaged; choose with --ids")
    click.echo(guard(lambda: tables(runs, baseline, fmt, metrics)))
    if output:
        write_page(Path(output), f"{runs[0].dataset} leaderboard", leaderboard_sections(runs, baseline, metrics))
    if config_out:
        from bench.config_file import dump
        from bench.results.store import write_atomic

        text = guard(lambda: dump(runs))
        guard(lambda: write_atomic(config_out, text), click.ClickException)
        click.echo(printable(f"wrote {config_out}"), err=True)
    if html_dir:
        from bench.results.html import kernel_batch, write_report

        page = guard(lambda: write_report(html_dir, runs, baseline, metrics, kernel_batch(store), command_line()))
        click.echo(printable(f"wrote {page}"), err=True)
    if plot:
        from bench.results.plots import write_plots

        for path in guard(lambda: write_plots(runs, Path(results_dir) / "plots")):
            click.echo(printable(f"wrote {path}"), err=True)
