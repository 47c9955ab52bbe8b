"""Result tables from stored runs: the leaderboard and the comparison against a baseline.

The printed tables show a few metrics by default, so they fit a terminal: HR and NDCG at the chosen K
(10 when it was computed) and MRR. Recall@K is never displayed: every protocol here holds out one item
per user, where Recall@K equals HR@K. `--metrics` asks for others (or `all`); `--format json/csv` carry
every stored metric, Recall included. The beyond-accuracy metrics (Coverage@K, Gini@K, AvgPop@K, Novelty@K,
`bench.eval.beyond`) come after the accuracy ones; Coverage and Gini have one value per run, so their cell is
the mean over seeds (± the std), never an interval over users, and they are not in the comparison's tests.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import defaultdict
from typing import Any, Iterable

import numpy as np
from tabulate import tabulate

from bench.eval.beyond import BEYOND_METRICS
from bench.eval.stats import bootstrap_interval, holm, paired_permutation_test
from bench.results.card import FACTORS
from bench.results.card import card as protocol_card
from bench.results.card import render as render_card
from bench.results.store import Run
from bench.text import printable

FORMATS = ("github", "latex", "csv", "json")
_METRIC_ORDER = ("HR", "NDCG", "Recall", "MAP")


def metric_names(runs: Iterable[Run]) -> list[str]:
    """Metric keys present in the runs, ordered by K then HR, NDCG, Recall, MAP, then MRR, then the
    beyond-accuracy ones by K then Coverage, Gini, AvgPop, Novelty."""
    keys = {k for r in runs for k in r.metrics}
    ks = sorted({int(m.group(1)) for k in keys if (m := re.search(r"@(\d+)$", k))})
    ordered = [f"{name}@{k}" for k in ks for name in _METRIC_ORDER if f"{name}@{k}" in keys]
    beyond = [f"{name}@{k}" for k in ks for name in BEYOND_METRICS if f"{name}@{k}" in keys]
    return ordered + (["MRR"] if "MRR" in keys else []) + beyond


def display_metrics(runs: Iterable[Run], requested: Iterable[str] | None = None) -> list[str]:
    """The metrics a table shows: `requested` (names, or ['all']) or HR@K, NDCG@K and MRR at K = 10 (else
    the smallest K computed). Recall@K repeats HR@K under leave-one-out, so it appears only when named."""
    available = metric_names(runs)
    if requested is not None:
        requested = list(requested)
        if requested == ["all"]:
            return [m for m in available if not m.startswith("Recall@")]
        unknown = [m for m in requested if m not in available]
        if unknown:
            raise ValueError(f"--metrics {','.join(unknown)}: not among the computed metrics "
                             f"({', '.join(available)}); 'all' shows every one")
        return requested
    ks = sorted({int(m.split("@")[1]) for m in available if "@" in m})
    k = 10 if 10 in ks else (ks[0] if ks else None)
    return [m for m in (f"HR@{k}", f"NDCG@{k}", "MRR") if m in available]


def _by_model(runs: Iterable[Run]) -> dict[str, list[Run]]:
    groups: dict[str, list[Run]] = defaultdict(list)
    for r in runs:
        if r.status == "finished":
            groups[r.model].append(r)
    return dict(groups)


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def leaderboard_rows(runs: list[Run], intervals: bool = True) -> list[dict[str, Any]]:
    """One row per model: each metric as {'mean', 'std' (over seeds), 'ci_low', 'ci_high'} (a 95% bootstrap
    interval over users and seeds, `bench.eval.stats.bootstrap_interval`), plus size and speed."""
    names = metric_names(runs)
    rows = []
    for model, group in _by_model(runs).items():
        row: dict[str, Any] = {"model": model, "seeds": len(group)}
        for name in names:
            values = [r.metrics[name] for r in group if name in r.metrics]  # none: runs from before a metric
            mean, std = _mean_std(values) if values else (float("nan"), float("nan"))
            row[name] = {"mean": mean, "std": std}
            if intervals and all(name in r.per_user for r in group):
                low, high = bootstrap_interval(_per_user_matrix(group, name)[1])
                row[name].update(ci_low=low, ci_high=high)

        def timing(key: str, group: list[Run] = group) -> float:
            return float(np.mean([r.timings.get(key, np.nan) for r in group]))

        row["params"] = int(group[0].timings.get("params", 0))
        row["train_samples_per_s"] = timing("train_samples_per_s")
        row["eval_users_per_s"] = timing("eval_users_per_s")
        row["wall_s"] = timing("wall_s")
        row["epochs"] = timing("epochs")
        row["notes"] = [f"seed {r.seed}: {note}" for r in group for note in r.notes]
        row["protocol"] = protocol_card(group)
        rows.append(row)
    key = "NDCG@10" if names and "NDCG@10" in names else (names[0] if names else None)
    if key:
        rows.sort(key=lambda r: -r[key]["mean"])
    return rows


def _fmt_speed(x: float) -> str:
    return "-" if not np.isfinite(x) else f"{x:,.0f}"


def _cell(stat: dict[str, float], seeds: int) -> str:
    """'0.1316 [0.110, 0.153]': the mean over seeds and its 95% interval over users and seeds ('0.1256 ±
    0.0139', the std over seeds, where the runs kept no per-user values)."""
    if "ci_low" in stat:
        return f"{stat['mean']:.4f} [{stat['ci_low']:.3f}, {stat['ci_high']:.3f}]"
    return f"{stat['mean']:.4f}" if seeds < 2 else f"{stat['mean']:.4f} ± {stat['std']:.4f}"


def leaderboard(runs: list[Run], fmt: str = "github", metrics: Iterable[str] | None = None) -> str:
    """The leaderboard as text; json and csv carry every metric, the other formats `display_metrics`."""
    rows = leaderboard_rows(runs)
    if fmt == "json":
        return json.dumps(rows, indent=2)
    if fmt == "csv":
        names = metric_names(runs)
        parts = ("mean", "std", "ci_low", "ci_high")
        headers = ["model", *(f"{n} {part}" for n in names for part in parts), "params",
                   "train samples/s", "eval users/s", "epochs", "wall s", "seeds",
                   *(f"protocol: {FACTORS[k]}" for k in FACTORS)]
        table = [[r["model"], *(f"{r[n].get(part, float('nan')):.6f}" for n in names for part in parts),
                  r["params"], f"{r['train_samples_per_s']:.1f}", f"{r['eval_users_per_s']:.1f}", f"{r['epochs']:.2f}",
                  f"{r['wall_s']:.2f}", r["seeds"], *(r["protocol"][k] for k in FACTORS)] for r in rows]
        return _render(headers, table, fmt)
    names = display_metrics(runs, metrics)
    headers = ["model", *names, "samples/s", "s / seed"]
    table = [
        [r["model"] + (" (!)" if r["notes"] else ""), *(_cell(r[n], r["seeds"]) for n in names),
         _fmt_speed(r["train_samples_per_s"]), f"{r['wall_s']:.0f}"]
        for r in rows
    ]
    seeds = sorted({r["seeds"] for r in rows})
    legend = (f"mean [95% interval over users and seeds], {'/'.join(map(str, seeds))} seed(s); samples/s: "
              "training;\nparams, epochs and more: --format csv or json")
    notes = [printable(f"(!) {r['model']} {note}") for r in rows for note in r["notes"]]
    block = printable(render_card(protocol_card(runs), fmt), newlines=True)
    return "\n\n".join([_render(headers, table, fmt), legend, *(["\n".join(notes)] if notes else []), block])


def missing_baseline(runs: list[Run], baseline: str) -> str | None:
    """One line saying why there is no comparison table, or None when the baseline has finished runs."""
    if baseline in _by_model(runs):
        return None
    return printable(f"no comparison: baseline {baseline} has no finished run here; add it to --models or pass "
                     f"--baseline (one of {', '.join(sorted(_by_model(runs)))})")


def _per_user_matrix(group: list[Run], name: str) -> tuple[np.ndarray, np.ndarray]:
    """Users common to every run of the group, and their metric per run: (users, (runs, users))."""
    common = None
    for r in group:
        common = np.unique(r.users) if common is None else np.intersect1d(common, r.users)
    assert common is not None
    stacked = []
    for r in group:  # align each run's per-user values on `common`, whatever order they were stored in
        order = np.argsort(r.users, kind="stable")
        stacked.append(r.per_user[name][order][np.searchsorted(r.users[order], common)])
    return common, np.stack(stacked)


def _per_user_mean(group: list[Run], name: str) -> tuple[np.ndarray, np.ndarray]:
    """Users and their metric averaged over seeds (users common to every run of the group)."""
    users, values = _per_user_matrix(group, name)
    return users, values.mean(axis=0)


def comparison_rows(runs: list[Run], baseline: str, metrics: Iterable[str] | None = None,
                    n_permutations: int = 10000) -> list[dict[str, Any]]:
    """Per model and metric (all, or `metrics`): baseline vs model, with a paired sign-flip permutation p-value
    and the same p-value Holm-adjusted over the models compared on that metric (`p_holm`)."""
    groups = _by_model(runs)
    if baseline not in groups:
        raise ValueError(f"baseline {baseline!r} has no finished run here; models: {sorted(groups)}")
    names = metric_names(runs) if metrics is None else list(metrics)
    rows = []
    for model, group in groups.items():
        if model == baseline:
            continue
        for name in names:
            k = int(name.split("@")[1]) if "@" in name else None
            if not all(name in r.per_user for r in group + groups[baseline]):
                continue
            users_b, base = _per_user_mean(groups[baseline], name)
            users_m, mine = _per_user_mean(group, name)
            users = np.intersect1d(users_b, users_m)
            base = base[np.searchsorted(users_b, users)]
            mine = mine[np.searchsorted(users_m, users)]
            diff = float(mine.mean() - base.mean())
            rows.append({
                "model": model, "K": k, "metric": name, "baseline": float(base.mean()),
                "value": float(mine.mean()), "diff": diff,
                "pct_change": 100.0 * diff / base.mean() if base.mean() else float("nan"),
                "p_value": paired_permutation_test(mine, base, n_permutations=n_permutations),
                "users": int(len(users)),
            })
    for name in {r["metric"] for r in rows}:  # Holm over the models compared with the baseline on one metric
        same = [r for r in rows if r["metric"] == name]
        for r, adjusted in zip(same, holm([r["p_value"] for r in same]), strict=True):
            r["p_holm"] = float(adjusted)
    return rows


def comparison(runs: list[Run], baseline: str, fmt: str = "github", metrics: Iterable[str] | None = None) -> str:
    """One table: each model against the baseline on the displayed metrics (json: every metric)."""
    if fmt == "json":
        return json.dumps(comparison_rows(runs, baseline), indent=2)
    names = display_metrics(runs, metrics)
    rows = comparison_rows(runs, baseline, names)
    rows.sort(key=lambda r: names.index(r["metric"]))
    rows.sort(key=lambda r: r["model"])
    table = [[r["model"], r["metric"], f"{r['baseline']:.4f}", f"{r['value']:.4f}", f"{r['diff']:+.4f}",
              f"{r['pct_change']:+.1f}%", f"{r['p_value']:.4f}", f"{r['p_holm']:.4f}" + _stars(r["p_holm"])]
             for r in rows]
    return _render(["model", "metric", baseline, "model's", "diff", "% change", "p", "p (Holm)"], table, fmt)


def _stars(p: float) -> str:
    """' *' where the Holm-adjusted p is below 0.05: the differences a reader may call real."""
    return " *" if p < 0.05 else ""


def _render(headers: list[str], table: list[list[Any]], fmt: str) -> str:
    """The table in `fmt`, every cell and header printable (a model label cannot reach the terminal raw)."""
    headers = [printable(h) for h in headers]
    table = [[printable(cell) if isinstance(cell, str) else cell for cell in row] for row in table]
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(headers)
        writer.writerows(table)
        return buf.getvalue().rstrip("\n")
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    return tabulate(table, headers=headers, tablefmt=fmt, disable_numparse=True)
