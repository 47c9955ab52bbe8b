"""The results store: one SQLite file under the results dir, every run recorded as it happens.

A run is inserted as 'running' before training starts and updated once, in one transaction, when it
ends: 'finished' with its metrics, 'failed' with the reason (NaN loss, out of memory, ...), or
'interrupted' (Ctrl-C). A crash therefore never leaves a half-written row, and finished runs are never
touched again. Per-user metric values are kept (compressed numpy) so significance tests can be rebuilt
from the store alone.
"""

from __future__ import annotations

import io
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DB_NAME = "bench.db"

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started REAL NOT NULL,
    finished REAL,
    status TEXT NOT NULL,
    reason TEXT,
    dataset TEXT NOT NULL,
    model TEXT NOT NULL,
    seed INTEGER NOT NULL,
    device TEXT,
    protocol TEXT,
    ties TEXT,
    num_negatives INTEGER,
    config TEXT,
    versions TEXT,
    git_commit TEXT,
    history TEXT,
    metrics TEXT,
    timings TEXT,
    users BLOB,
    per_user BLOB
);
CREATE TABLE IF NOT EXISTS kernel_rows (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    batch_id INTEGER NOT NULL,
    created REAL NOT NULL,
    config TEXT,
    row TEXT NOT NULL
);
"""


@dataclass
class Run:
    id: int
    started: float
    finished: float | None
    status: str
    reason: str | None
    dataset: str
    model: str
    seed: int
    device: str | None
    protocol: str | None
    ties: str | None
    num_negatives: int | None
    config: dict[str, Any]
    versions: dict[str, Any]
    git_commit: str | None
    history: list[dict[str, Any]]
    metrics: dict[str, float]
    timings: dict[str, float]
    users: np.ndarray | None
    per_user: dict[str, np.ndarray]


def write_atomic(path: str | Path, text: str) -> Path:
    """Write a results file whole or not at all (a temp file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def _pack(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def _unpack(blob: bytes | None) -> dict[str, np.ndarray]:
    if not blob:
        return {}
    with np.load(io.BytesIO(blob)) as z:
        return {k: z[k] for k in z.files}


class ResultStore:
    def __init__(self, results_dir: str | Path = "results"):
        self.dir = Path(results_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / DB_NAME
        with self._connect() as conn:
            conn.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=60)
        conn.execute("PRAGMA journal_mode=WAL")
        return conn

    def _write(self, sql: str, args: tuple) -> int:
        conn = self._connect()
        try:
            with conn:  # one transaction: committed whole or rolled back
                cur = conn.execute(sql, args)
            return int(cur.lastrowid or 0)
        finally:
            conn.close()

    def start_run(self, *, dataset: str, model: str, seed: int, device: str, protocol: str, ties: str,
                  num_negatives: int | None, config: dict[str, Any], versions: dict[str, Any],
                  git_commit: str | None) -> int:
        return self._write(
            "INSERT INTO runs (started, status, dataset, model, seed, device, protocol, ties, num_negatives,"
            " config, versions, git_commit) VALUES (?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (time.time(), dataset, model, seed, device, protocol, ties, num_negatives,
             json.dumps(config, default=str), json.dumps(versions), git_commit),
        )

    def finish_run(self, run_id: int, *, metrics: dict[str, float], history: list[dict[str, Any]],
                   timings: dict[str, float], users: np.ndarray, per_user: dict[str, np.ndarray]) -> None:
        self._write(
            "UPDATE runs SET finished=?, status='finished', metrics=?, history=?, timings=?, users=?,"
            " per_user=? WHERE id=?",
            (time.time(), json.dumps(metrics), json.dumps(history), json.dumps(timings),
             _pack({"users": np.asarray(users)}), _pack(per_user), run_id),
        )

    def end_run(self, run_id: int, status: str, reason: str, history: list[dict[str, Any]] | None = None) -> None:
        """Mark a run 'failed' or 'interrupted' with its reason."""
        if status not in ("failed", "interrupted"):
            raise ValueError(f"status must be failed or interrupted, got {status!r}")
        self._write("UPDATE runs SET finished=?, status=?, reason=?, history=? WHERE id=?",
                    (time.time(), status, reason, json.dumps(history or []), run_id))

    def runs(self, *, dataset: str | None = None, models: list[str] | None = None, status: str | None = None,
             since: float | None = None, ids: list[int] | None = None) -> list[Run]:
        where, args = [], []
        if dataset:
            where.append("dataset = ?")
            args.append(dataset)
        if models:
            where.append(f"model IN ({','.join('?' * len(models))})")
            args += models
        if status:
            where.append("status = ?")
            args.append(status)
        if since is not None:
            where.append("started >= ?")
            args.append(since)
        if ids:
            where.append(f"id IN ({','.join('?' * len(ids))})")
            args += ids
        sql = "SELECT * FROM runs" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
        conn = self._connect()
        conn.row_factory = sqlite3.Row
        try:
            rows = conn.execute(sql, args).fetchall()
        finally:
            conn.close()
        return [self._run(r) for r in rows]

    @staticmethod
    def _run(r: sqlite3.Row) -> Run:
        def js(v: str | None, empty: Any) -> Any:
            return json.loads(v) if v else empty

        users = _unpack(r["users"]).get("users")
        return Run(r["id"], r["started"], r["finished"], r["status"], r["reason"], r["dataset"], r["model"],
                   r["seed"], r["device"], r["protocol"], r["ties"], r["num_negatives"], js(r["config"], {}),
                   js(r["versions"], {}), r["git_commit"], js(r["history"], []), js(r["metrics"], {}),
                   js(r["timings"], {}), users, _unpack(r["per_user"]))

    def record_kernel(self, rows: list[dict[str, Any]], config: dict[str, Any]) -> int:
        """Store one `bench kernel` invocation's rows under a new batch id; returns the batch id."""
        conn = self._connect()
        try:
            with conn:
                batch = conn.execute("SELECT COALESCE(MAX(batch_id), 0) + 1 FROM kernel_rows").fetchone()[0]
                now = time.time()
                conn.executemany(
                    "INSERT INTO kernel_rows (batch_id, created, config, row) VALUES (?, ?, ?, ?)",
                    [(batch, now, json.dumps(config, default=str), json.dumps(row, default=str)) for row in rows],
                )
            return int(batch)
        finally:
            conn.close()

    def kernel_rows(self, batch_id: int | None = None) -> list[dict[str, Any]]:
        conn = self._connect()
        try:
            if batch_id is None:
                batch_id = conn.execute("SELECT MAX(batch_id) FROM kernel_rows").fetchone()[0]
            rows = conn.execute("SELECT row FROM kernel_rows WHERE batch_id = ? ORDER BY id", (batch_id,)).fetchall()
        finally:
            conn.close()
        return [json.loads(r[0]) for r in rows]
