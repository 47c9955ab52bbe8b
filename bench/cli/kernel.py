"""`bench kernel`: FM interaction throughput per implementation, against the device's copy bandwidth."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import click

from bench.cli.common import guard
from bench.config import comma_list
from bench.kernels.harness import (
    DEFAULT_IMPLS,
    DEVICES,
    DTYPES,
    IMPLEMENTATIONS,
    ImplementationMismatch,
    KernelConfig,
    format_rows,
    record,
    run_kernel_bench,
)


def _parse_choices(known: tuple[str, ...], allow_all: bool) -> Callable[..., tuple[str, ...]]:
    def parse(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
        names = comma_list(value)
        if allow_all and names == ["all"]:
            return known
        unknown = [n for n in names if n not in known]
        if unknown or not names:
            expected = ("'all' or " if allow_all else "") + "a comma list of " + ", ".join(known)
            raise click.BadParameter(f"got {value!r}; expected {expected}")
        return tuple(dict.fromkeys(names))

    return parse


def _parse_batches(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        batches = tuple(int(part) for part in comma_list(value))
    except ValueError:
        batches = ()
    if not batches or min(batches) < 1:
        raise click.BadParameter(f"got {value!r}; expected a comma list of positive integers, e.g. 4096,65536")
    return batches


@click.command("kernel")
@click.option("--impl", "impls", default=",".join(DEFAULT_IMPLS), show_default=True,
              callback=_parse_choices(tuple(IMPLEMENTATIONS), allow_all=True),
              help=f"'all' or a comma list of: {', '.join(IMPLEMENTATIONS)} (naive, the slow reference, is "
                   "always used to check the others, and timed only when named).")
@click.option("--batch", "batches", default="4096,65536", show_default=True, callback=_parse_batches,
              help="Comma list of batch sizes.")
@click.option("--fields", default=24, show_default=True, type=click.IntRange(min=1), help="Fields F.")
@click.option("--dim", default=16, show_default=True, type=click.IntRange(min=1), help="Embedding dim D.")
@click.option("--dtype", "dtypes", default="float32,bfloat16", show_default=True,
              callback=_parse_choices(tuple(DTYPES), allow_all=False), help="Comma list of dtypes.")
@click.option("--devices", default="cpu,cuda,mps", show_default=True,
              callback=_parse_choices(DEVICES, allow_all=False),
              help="Comma list of devices; unavailable ones are reported and skipped.")
@click.option("--backward/--no-backward", default=True, show_default=True, help="Also time forward+backward.")
@click.option("--repeat", default=20, show_default=True, type=click.IntRange(min=1), help="Timed repetitions.")
@click.option("--warmup", default=3, show_default=True, type=click.IntRange(min=0), help="Untimed calls first.")
@click.option("--threads", default=None, type=click.IntRange(min=1), help="torch CPU threads (default: torch's).")
@click.option("--check-rows", default=1024, show_default=True, type=click.IntRange(min=1),
              help="Rows checked against naive before timing.")
@click.option("--copy-mb", default=256, show_default=True, type=click.IntRange(min=1),
              help="MiB per buffer of the bandwidth-measuring copy.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the random embeddings.")
@click.option("--fresh-memory", is_flag=True,
              help="Do not keep freed memory for reuse: every large output is page-faulted in fresh.")
@click.option("--format", "fmt", default="github", show_default=True,
              type=click.Choice(["github", "json", "csv"]), help="Output format.")
@click.option("--results-dir", default="results", show_default=True,
              type=click.Path(file_okay=False, path_type=Path), help="Where the results store lives.")
def kernel(fmt: str, results_dir: Path, fresh_memory: bool, **options: Any) -> None:
    """FM interaction throughput per implementation, as GB/s and % of the measured copy bandwidth.

    Freed memory is kept for reuse (glibc's mallopt; `bench.device.keep_freed_memory`), as a training loop's
    recurring tensor sizes find it; --fresh-memory measures every large output page-faulted in fresh."""
    from bench.device import keep_freed_memory
    from bench.results.store import check_results_dir

    guard(lambda: check_results_dir(results_dir))  # a corrupt, foreign or full store: exit 2 before measuring
    kept = not fresh_memory and keep_freed_memory()
    if kept:
        click.echo("freed memory kept for reuse (glibc M_MMAP_THRESHOLD 1 GiB); --fresh-memory to measure without",
                   err=True)
    config = KernelConfig(**options)
    try:
        rows = run_kernel_bench(config, log=lambda message: click.echo(message, err=True))
    except ImplementationMismatch as exc:
        raise click.ClickException(str(exc)) from exc
    if not rows:
        raise click.ClickException("nothing was measured: every device or implementation was skipped")
    for row in rows:
        row["memory"] = "kept" if kept else "fresh"  # freed memory reused, or every large output faulted in
    click.echo(format_rows(rows, fmt))
    batch = guard(lambda: record(rows, config, results_dir), click.ClickException)
    click.echo(f"recorded as kernel batch {batch} in {results_dir}", err=True)
