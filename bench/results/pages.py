"""The Markdown results page of a leaderboard: how the runs were made, then the tables."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bench.results import tables
from bench.results.store import Run


def sampler_label(train: dict[str, Any]) -> str:
    """'uniform', or with its options: 'uniform exclude_held_out=True' (a page must say when they differ)."""
    options = " ".join(f"{k}={v}" for k, v in sorted((train.get("sampler_options") or {}).items()))
    return " ".join(filter(None, [train.get("sampler", "?"), options]))


def leaderboard_sections(runs: list[Run], baseline: str, metrics: tuple[str, ...] | None = None) -> list[str]:
    """The environment line, the leaderboard and the comparison with the baseline (when it finished)."""
    first = runs[0]
    samplers = ", ".join(f"`{s}`" for s in sorted({sampler_label(r.config.get("train", {})) for r in runs}))
    lines = [f"Recorded {datetime.now():%Y-%m-%d %H:%M}; protocol `{first.protocol}`, ties `{first.ties}`, "
             f"training negatives {samplers}, device `{first.device}`, torch {first.versions.get('torch')}, "
             f"{first.versions.get('threads')} threads, commit `{first.git_commit}`.", "",
             "## Leaderboard (test split, mean [95% interval over users and seeds])", "",
             tables.leaderboard(runs, "github", metrics), ""]
    if baseline in {r.model for r in runs}:
        lines += [f"## Against the {baseline} baseline (p: paired sign-flip permutation test over users)", "",
                  tables.comparison(runs, baseline, "github", metrics), ""]
    return lines
