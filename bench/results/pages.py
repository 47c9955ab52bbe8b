"""The Markdown results page of a leaderboard: how the runs were made, then the tables."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable

from bench.results import tables
from bench.results.store import Run


def sampler_label(train: dict[str, Any]) -> str:
    """'uniform', or with its options: 'uniform exclude_held_out=True' (a page must say when they differ)."""
    options = " ".join(f"{k}={v}" for k, v in sorted((train.get("sampler_options") or {}).items()))
    return " ".join(filter(None, [train.get("sampler", "?"), options]))


def id_ranges(ids: list[int], sep: str = ", ") -> str:
    """'1, 3-6, 9': run ids as a reader finds them in the store (sep="," gives what --ids takes)."""
    spans: list[list[int]] = []
    for i in sorted(ids):
        if spans and i == spans[-1][1] + 1:
            spans[-1][1] = i
        else:
            spans.append([i, i])
    return sep.join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def shared_value(runs: list[Run], name: str, value: Callable[[Run], Any]) -> str:
    """'commit `x`' when every run shares it, else each value with its runs: a page never shows the first run's
    commit, device or torch as if it were every run's."""
    by_value: dict[str, list[int]] = {}
    for run in runs:
        by_value.setdefault(f"`{value(run)}`", []).append(run.id)
    if len(by_value) == 1:
        return f"{name} {next(iter(by_value))}"
    return f"{name} " + ", ".join(f"{v} (runs {id_ranges(ids)})" for v, ids in by_value.items())


def leaderboard_sections(runs: list[Run], baseline: str, metrics: tuple[str, ...] | None = None) -> list[str]:
    """The environment line, the leaderboard and the comparison with the baseline (when it finished)."""
    samplers = ", ".join(f"`{s}`" for s in sorted({sampler_label(r.config.get("train", {})) for r in runs}))
    environment = [shared_value(runs, "protocol", lambda r: r.protocol), shared_value(runs, "ties", lambda r: r.ties),
                   f"training negatives {samplers}", shared_value(runs, "device", lambda r: r.device),
                   shared_value(runs, "torch", lambda r: r.versions.get("torch")),
                   shared_value(runs, "threads", lambda r: r.versions.get("threads")),
                   shared_value(runs, "commit", lambda r: r.git_commit)]
    lines = [f"Recorded {datetime.now():%Y-%m-%d %H:%M}; {', '.join(environment)}.", "",
             "## Leaderboard (test split, mean [95% interval over users and seeds])", "",
             tables.leaderboard(runs, "github", metrics), ""]
    if baseline in {r.model for r in runs}:
        lines += [f"## Against the {baseline} baseline (p: paired sign-flip permutation test over users)", "",
                  tables.comparison(runs, baseline, "github", metrics), ""]
    return lines
