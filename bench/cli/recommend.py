"""`bench recommend`: a finished run's top-K items for chosen users, from its checkpoint.

The run's model is rebuilt from its checkpoint (`bench.results.checkpoints`) on its data, loaded again with the
run's recorded configuration and checked against the recorded checksum. A user is ranked at their test-time state,
exactly as the evaluator ranked them for test (`bench.eval.evaluator.top_k_items`): what they had liked strictly
before their test item is known (their history, and for the closed-form models x_u), what they had shown us (the
evaluator's test masks: training and validation items) is excluded unless `--include-seen`, and ties go to the
lower item row. A user without a test item (too few positives, or none after the global split's cutoff) has no
test-time state and is refused.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
import numpy as np

from bench.cli.common import RESULTS_DIR, comma_option, fail, guard
from bench.text import printable

FORMATS = ("table", "json", "csv")
MAX_RUN_ID = 2**63 - 1


@click.command()
@click.option("--run", "run_id", required=True, type=click.IntRange(1, MAX_RUN_ID), metavar="RUN_ID",
              help="the finished run whose checkpoint recommends (bench report --format json lists ids)")
@click.option("--users", required=True, callback=comma_option(str),
              help="comma list of raw user ids, as in the dataset's files (e.g. 1,17,42)")
@click.option("--k", default=10, show_default=True, type=click.IntRange(min=1), help="items per user")
@click.option("--include-seen", is_flag=True, help="also rank what the user had already shown us (the items the "
              "evaluator masks at test: training and validation items)")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option("--results-dir", default=RESULTS_DIR, show_default=True, type=click.Path(file_okay=False))
@click.option("--data-dir", default=None, type=click.Path(file_okay=False),
              help="a local copy of the run's data (else as recorded, BENCH_DATA_DIR, the cache or a download)")
def recommend(run_id: int, users: tuple[str, ...], k: int, include_seen: bool, fmt: str, results_dir: str,
              data_dir: str | None) -> None:
    """Print each user's top-K items (ids and, where the dataset has them, titles) from a run's checkpoint."""
    from bench.results.checkpoints import checkpoint_path, load_checkpoint, restore_model

    if not users:
        fail("--users: expected one or more raw user ids, e.g. 1,17,42")
    users = tuple(dict.fromkeys(users))  # a user named twice is listed once
    run = _finished_run(run_id, results_dir)
    path = checkpoint_path(results_dir, run_id)
    if not path.is_file():
        fail(f"run {run_id} has no checkpoint ({path} is missing): it ran with --no-checkpoint or before runs kept "
             f"one; `bench run --rerun {run_id}` trains it again and keeps one")
    checkpoint = guard(lambda: load_checkpoint(path))
    if checkpoint.run_id != run_id:
        fail(f"{path}: holds run {checkpoint.run_id}'s model, not run {run_id}'s")
    config = guard(lambda: _config(run.config, data_dir))
    frames, data = guard(lambda: _load(config))
    recorded, now = run.config.get("data_checksum"), data.info.get("checksum")
    if recorded != now or checkpoint.data_checksum not in (None, recorded):
        fail(f"the data changed since run {run_id} (checksum {recorded} then, {now} now): its rows may not be the "
             "run's; point --data-dir at the data it ran on")
    positions = _positions(data, users, run_id)
    model_cfg = config.models[0]
    model = guard(lambda: restore_model(checkpoint, model_cfg.plugin, model_cfg.embed_dim, model_cfg.params, data))
    from bench.eval.evaluator import top_k_items

    items, scores = guard(lambda: top_k_items(model, data, "test", positions, k, include_seen=include_seen))
    click.echo(_render(_rows(users, items, scores, data, _titles(frames)), fmt))


def _finished_run(run_id: int, results_dir: str) -> Any:
    """The stored run, or one line saying why there is none to recommend from."""
    from bench.results.store import DB_NAME, ResultStore

    db = Path(results_dir) / DB_NAME
    if not db.exists():
        fail(f"no results store at {db}; run `bench run` first")
    found = guard(lambda: ResultStore(results_dir, readonly=True).runs(ids=[run_id]))
    for damaged in found.damaged:
        fail(f"--run {run_id}: run {run_id} in {db} cannot be read ({damaged.reason})")
    if not found:
        fail(f"--run {run_id}: no run {run_id} in {db}")
    run = found[0]
    if run.status != "finished":
        why = f": {run.reason}" if run.reason else ""
        fail(f"--run {run_id}: run {run_id} did not finish ({run.status}{why}); only a finished run has a model "
             "to recommend from")
    return run


def _config(record: dict[str, Any], data_dir: str | None) -> Any:
    """The run's one-model experiment, reading its data from --data-dir, or as recorded where that folder exists
    here (else BENCH_DATA_DIR, the cache or a download)."""
    from bench.config import ExperimentConfig

    if not {"data", "train", "eval", "model"} <= set(record):
        raise ValueError("the run was recorded by an older deepfm-bench, without its full configuration")
    config = ExperimentConfig.from_record(record)
    here: dict[str, Any] = {}
    if data_dir:
        here["data_dir"] = data_dir
    for key in ("data_dir", "cache_dir"):
        recorded = getattr(config.data, key)
        if key not in here and recorded and not Path(recorded).exists():
            here[key] = None  # recorded on another machine
    return replace(config, data=replace(config.data, **here))


def _load(config: Any) -> tuple[Any, Any]:
    """The dataset's frames (for titles) and the data the run's model was tested on."""
    from bench.runner import load_frames, prepare_data

    data_cfg = config.models[0].data_config(config.data)
    frames = load_frames(data_cfg)
    return frames, prepare_data(frames, data_cfg)


def _positions(data: Any, users: tuple[str, ...], run_id: int) -> np.ndarray:
    """Each raw user id's row in the test split, or one line naming the first user that has none."""
    rows = {str(raw): row for row, raw in enumerate(data.user_ids) if row > 0}
    tested = {int(row): i for i, row in reversed(list(enumerate(np.asarray(data.test.users))))}
    positions = []
    for user in users:
        if user not in rows:
            examples = ", ".join(str(u) for u in data.user_ids[1:4])
            fail(f"--users: user {user!r} is not in run {run_id}'s data {data.name} (users with a positive, by raw id, "
                 f"e.g. {examples})")
        if rows[user] not in tested:
            fail(f"--users: user {user!r} has no test item in run {run_id}'s data (fewer positives than "
                 f"--min-interactions {data.info.get('min_interactions')}, or none after the test cutoff), so no "
                 "test-time state to recommend for")
        positions.append(tested[rows[user]])
    return np.asarray(positions, dtype=np.int64)


def _titles(frames: Any) -> dict[str, str] | None:
    """Raw item id -> title, where the dataset's items frame has a 'title' column."""
    items = frames.items
    if "title" not in items.columns:
        return None
    return {str(raw): str(title) for raw, title in zip(items["item_id"], items["title"], strict=True)}


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value json writes."""
    return value.item() if isinstance(value, np.generic) else value


def _rows(users: tuple[str, ...], items: np.ndarray, scores: np.ndarray, data: Any,
          titles: dict[str, str] | None) -> list[dict[str, Any]]:
    """One dict per (user, rank): the raw user and item ids, the title where known and the model's score."""
    rows = []
    for user, ranked, scored in zip(users, items, scores, strict=True):
        for rank, (item, score) in enumerate(zip(ranked, scored, strict=True), start=1):
            if item == 0:  # fewer candidates than --k
                break
            raw = _plain(data.item_ids[item])
            row = {"user": user, "rank": rank, "item": raw, "score": float(score)}
            if titles is not None:
                row["title"] = titles.get(str(raw))
            rows.append(row)
    return rows


def _render(rows: list[dict[str, Any]], fmt: str) -> str:
    if fmt == "json":
        grouped: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            grouped.setdefault(row["user"], []).append({k: v for k, v in row.items() if k != "user"})
        return json.dumps([{"user": user, "items": items} for user, items in grouped.items()], indent=2)
    headers = ["user", "rank", "item", *(["title"] if rows and "title" in rows[0] else []), "score"]
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(headers)
        writer.writerows([[printable(str(row[h])) if h in ("user", "title") else row[h] for h in headers]
                          for row in rows])
        return buf.getvalue().rstrip("\n")
    from tabulate import tabulate

    table = [[printable(str(row[h])) if h in ("user", "item", "title") else
              (f"{row[h]:.4f}" if h == "score" else row[h]) for h in headers] for row in rows]
    return tabulate(table, headers=headers, tablefmt="github", disable_numparse=True)
