"""The results store: one SQLite file under the results dir, every run recorded as it happens.

A run is inserted as 'running' before training starts and updated once, in one transaction, when it
ends: 'finished' with its metrics, 'failed' with the reason (NaN loss, out of memory, ...), or
'interrupted' (Ctrl-C, SIGTERM). A crash therefore never leaves a half-written row, and finished runs are
never touched again. A run left 'running' by a process that died without a word (SIGKILL, power loss)
is recognised by its host, pid and the pid's start time the next time the store is opened on that
host, and marked 'interrupted' with the reason. Per-user metric values are kept (compressed numpy) so
significance tests can be rebuilt from the store alone.
"""

from __future__ import annotations

import io
import json
import os
import socket
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

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
    per_user BLOB,
    host TEXT,
    pid INTEGER,
    pid_started TEXT,
    notes TEXT
);
CREATE TABLE IF NOT EXISTS kernel_rows (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    batch_id INTEGER NOT NULL,
    created REAL NOT NULL,
    config TEXT,
    row TEXT NOT NULL
);
"""


ADDED_COLUMNS = (("host", "TEXT"), ("pid", "INTEGER"), ("pid_started", "TEXT"), ("notes", "TEXT"))


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
    notes: list[str] = field(default_factory=list)  # warnings a reader must see, e.g. a diverging loss


def write_atomic(path: str | Path, text: str) -> Path:
    """Write a results file whole or not at all (a temp file renamed into place)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text)
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OSError(f"{path}: could not write it ({exc.strerror or exc}); nothing was written") from None
    return path


def check_writable_file(path: str | Path, option: str) -> Path:
    """Refuse, before any work, an output file that is a folder or cannot be written: its folder (created
    when missing, like the results folder) must be creatable and writable."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{option} {path}: is a folder, expected a file name")
    existing = next((p for p in path.parents if p.exists()), None)
    if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK) or \
            (path.exists() and not os.access(path, os.W_OK)):
        raise ValueError(f"{option} {path}: {existing or path.parent} is not a writable folder")
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


class StoreError(OSError):
    """The results store cannot be used (corrupt file, full disk, no permission): one line naming the file."""


def _process_started(pid: int) -> str | None:
    """When process `pid` started (Linux: clock ticks since boot, /proc/PID/stat field 22), or None where
    that cannot be read: with the pid it tells a live run's process from a later one reusing its pid."""
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return started is None or _process_started(pid) in (None, started)


def check_results_dir(results_dir: str | Path) -> Path:
    """Refuse, before any work, a results dir that is a file or cannot be written, and a store file that
    is not a results store; creates nothing."""
    path = Path(results_dir)
    if path.exists() and not path.is_dir():
        raise StoreError(f"--results-dir {path}: is a file, expected a folder")
    existing = next((p for p in [path, *path.parents] if p.exists()), None)
    if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise StoreError(f"--results-dir {path}: {existing or path} is not a writable folder")
    store = path / DB_NAME
    if store.exists():
        ResultStore.check(store)
    return path


class ResultStore:
    def __init__(self, results_dir: str | Path = "results"):
        self.dir = Path(results_dir)
        self.path = self.dir / DB_NAME
        if self.path.exists():
            self.check(self.path)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"{self.dir}: cannot create the results folder ({exc.strerror or exc})") from None
        with self._errors():
            conn = self._connect()
            try:
                with conn:
                    conn.executescript(SCHEMA)
                    columns = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
                    for column, kind in ADDED_COLUMNS:
                        if column not in columns:  # a store written before runs recorded these
                            conn.execute(f"ALTER TABLE runs ADD COLUMN {column} {kind}")
            finally:
                conn.close()
        self.recovered = self._mark_dead_runs()

    @staticmethod
    def check(path: str | Path) -> None:
        """Open an existing store file read-only and read its tables: a corrupt or foreign file is a
        StoreError naming it."""
        path = Path(path)
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)
            try:
                conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: not a usable results store ({exc}); move it away or pick another "
                             "--results-dir") from None

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """sqlite errors (corrupt file, full disk, locked too long) as one-line StoreErrors naming the file."""
        try:
            yield
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from None

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=60)
        conn.execute("PRAGMA journal_mode=WAL")
        return conn

    def _write(self, sql: str, args: tuple) -> int:
        with self._errors():
            conn = self._connect()
            try:
                with conn:  # one transaction: committed whole or rolled back
                    cur = conn.execute(sql, args)
                return int(cur.lastrowid or 0)
            finally:
                conn.close()

    def _mark_dead_runs(self) -> list[int]:
        """Runs left 'running' on this host by a process that no longer exists become 'interrupted'."""
        host = socket.gethostname()
        with self._errors():
            conn = self._connect()
            try:
                rows = conn.execute("SELECT id, pid, pid_started FROM runs WHERE status = 'running' AND host = ?",
                                    (host,)).fetchall()
                dead = [(run_id, pid) for run_id, pid, started in rows if pid is not None and not _alive(pid, started)]
                with conn:
                    for run_id, pid in dead:
                        conn.execute("UPDATE runs SET finished=?, status='interrupted', reason=? WHERE id=? AND "
                                     "status='running'", (time.time(), f"its process (pid {pid} on {host}) died "
                                                          "without ending it (killed or crashed)", run_id))
            finally:
                conn.close()
        return [run_id for run_id, _ in dead]

    def start_run(self, *, dataset: str, model: str, seed: int, device: str, protocol: str, ties: str,
                  num_negatives: int | None, config: dict[str, Any], versions: dict[str, Any],
                  git_commit: str | None) -> int:
        return self._write(
            "INSERT INTO runs (started, status, dataset, model, seed, device, protocol, ties, num_negatives,"
            " config, versions, git_commit, host, pid, pid_started)"
            " VALUES (?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (time.time(), dataset, model, seed, device, protocol, ties, num_negatives,
             json.dumps(config, default=str), json.dumps(versions), git_commit, socket.gethostname(), os.getpid(),
             _process_started(os.getpid())),
        )

    def finish_run(self, run_id: int, *, metrics: dict[str, float], history: list[dict[str, Any]],
                   timings: dict[str, float], users: np.ndarray, per_user: dict[str, np.ndarray],
                   notes: list[str] | None = None) -> None:
        self._write(
            "UPDATE runs SET finished=?, status='finished', metrics=?, history=?, timings=?, users=?,"
            " per_user=?, notes=? WHERE id=?",
            (time.time(), json.dumps(metrics), json.dumps(history), json.dumps(timings),
             _pack({"users": np.asarray(users)}), _pack(per_user), json.dumps(notes or []), run_id),
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
        if ids is not None:  # an empty list selects nothing (not everything)
            where.append(f"id IN ({','.join('?' * len(ids))})")
            args += ids
        sql = "SELECT * FROM runs" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
        with self._errors():
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
                   js(r["timings"], {}), users, _unpack(r["per_user"]), js(r["notes"], []))

    def record_kernel(self, rows: list[dict[str, Any]], config: dict[str, Any]) -> int:
        """Store one `bench kernel` invocation's rows under a new batch id; returns the batch id."""
        with self._errors():
            return self._record_kernel(rows, config)

    def _record_kernel(self, rows: list[dict[str, Any]], config: dict[str, Any]) -> int:
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
