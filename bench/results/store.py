"""The results store: one SQLite file under the results dir, every run recorded as it happens.

A run is inserted as 'running' before training starts and updated once, in one transaction, when it
ends: 'finished' with its metrics, 'failed' with the reason (NaN loss, out of memory, ...), or
'interrupted' (Ctrl-C, SIGTERM). A crash therefore never leaves a half-written row, and finished runs are
never touched again. A run left 'running' by a process that died without a word (SIGKILL, power loss)
is recognised by its host, pid and the pid's start time the next time the store is opened on that
host, and marked 'interrupted' with the reason (a reader shows it so, and leaves the marking to the next
writer). Per-user metric values are kept (compressed numpy) so significance tests can be rebuilt from the
store alone.

The store records its schema version (SQLite's user_version): an older store is brought up to date when
opened to write, a newer or foreign one is refused naming the file. A reader (`readonly=True`, what
`bench report` uses) opens it read-only and writes nothing, not even a log beside it. A run whose row
cannot be read (damaged JSON or per-user arrays) is set aside with the reason, never guessed at, and
per-user arrays are never unpickled.
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import socket
import sqlite3
import tempfile
import time
import urllib.parse
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

DB_NAME = "bench.db"
STUDY_DB = "optuna.db"  # bench tune's default study store, beside the run store

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

SCHEMA_VERSION = 1  # PRAGMA user_version of the schema above; 0: a store written before it was recorded
INT64 = (-(2**63), 2**63 - 1)  # the ids SQLite can hold
MIN_FREE_BYTES = 1 << 20  # less free space than this on the results disk is a full disk


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


@dataclass
class DamagedRun:
    """A stored run whose row cannot be read (a field that is not the JSON it should be, per-user arrays cut
    short or pickled): listed with the reason so that a reader sees it exists, never shown as a result."""

    id: int
    model: str
    status: str
    reason: str


class Runs(list):
    """The readable runs a query found, in id order; `damaged`: the matching rows that could not be read."""

    def __init__(self, runs: Iterable[Run] = (), damaged: list[DamagedRun] | None = None):
        super().__init__(runs)
        self.damaged: list[DamagedRun] = damaged or []


class StoreError(OSError):
    """The results store cannot be used (corrupt file, full disk, no permission): one line naming the file."""


class _Damaged(ValueError):
    """One field of a stored run cannot be read; the message says which and why."""


def _disk_full(exc: BaseException) -> bool:
    """Whether an error is the disk (or the file's size limit) being full."""
    return (getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "database or disk is full" in str(exc)
            or getattr(exc, "errno", None) == errno.ENOSPC)


def _file_mode(path: Path) -> int:
    """The permissions the file would have had if written in place: its own when it exists, else the umask's
    (a temporary file is created private)."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0o022)
        os.umask(umask)
        return 0o666 & ~umask


def write_atomic(path: str | Path, text: str | bytes) -> Path:
    """Write a results file whole or not at all: a temporary file beside it, created exclusively under a fresh
    unpredictable name (a link planted there is never followed), synced, then renamed into place. `bytes` are
    written as they are (a checkpoint), text as text."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        tmp = Path(name)
        with os.fdopen(fd, "wb" if isinstance(text, bytes) else "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(tmp, _file_mode(path))
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        why = "the disk is full" if _disk_full(exc) else f"could not write it ({exc.strerror or exc})"
        raise OSError(f"{path}: {why}; nothing was written") from None
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


def _unpack(blob: bytes | None, column: str = "per_user") -> dict[str, np.ndarray]:
    """The arrays `_pack` stored; anything else (cut short, not numpy's archive, pickled objects, which are never
    loaded) is a _Damaged naming the column."""
    if not blob:
        return {}
    try:
        loaded = np.load(io.BytesIO(blob), allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise _Damaged(f"{column}: a single array, not the archive of arrays a run stores")
        with loaded as z:
            return {k: z[k] for k in z.files}
    except _Damaged:
        raise
    except Exception as exc:  # a damaged archive fails in many ways (zip, zlib, numpy header, pickled objects)
        if "pickle" in str(exc):
            raise _Damaged(f"{column}: holds pickled Python objects, which are never loaded") from None
        raise _Damaged(f"{column}: not readable numpy arrays ({type(exc).__name__}: {exc})") from None


def _json(row: dict[str, Any], column: str, kind: type, empty: Any) -> Any:
    """A JSON column decoded and of the type a run stores there; else a _Damaged naming the column."""
    value = row.get(column)
    if value is None or value == "":
        return empty
    try:
        decoded = json.loads(value)
    except (ValueError, TypeError, RecursionError) as exc:
        raise _Damaged(f"{column}: not JSON ({type(exc).__name__}: {str(exc)[:80]})") from None
    if not isinstance(decoded, kind):
        raise _Damaged(f"{column}: JSON {type(decoded).__name__}, expected {kind.__name__}")
    return decoded


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


def _died(row: dict[str, Any], host: str) -> str | None:
    """Why a run left 'running' on this host is over (its process no longer exists), or None."""
    pid = row.get("pid")
    if row.get("status") != "running" or row.get("host") != host or not isinstance(pid, int) or \
            not 0 < pid < 2**31 or _alive(pid, row.get("pid_started")):  # a damaged pid: left as recorded
        return None
    return f"its process (pid {pid} on {host}) died without ending it (killed or crashed)"


def _expected_columns() -> dict[str, list[tuple]]:
    """Each table's columns as SCHEMA declares them: PRAGMA table_info rows (cid, name, type, notnull, default,
    pk), read from the schema itself so that there is one list of columns."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.executescript(SCHEMA)
        return {table: conn.execute(f"PRAGMA table_info({table})").fetchall() for table in ("runs", "kernel_rows")}
    finally:
        conn.close()


EXPECTED = _expected_columns()


def _inspect(conn: sqlite3.Connection) -> tuple[int, dict[str, list[tuple]], set[str]]:
    """A store's schema version, its tables' columns (as table_info rows) and its table names."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    columns = {table: [tuple(r) for r in conn.execute(f"PRAGMA table_info({table})")] for table in EXPECTED}
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return version, columns, names


def _check_schema(path: Path, version: int, columns: dict[str, list[tuple]], names: set[str]) -> None:
    """Refuse a store this version cannot use: a newer schema, another program's database, a table without a
    column every store has, or with a column of its own that an insert would have to fill."""
    if version > SCHEMA_VERSION:
        raise StoreError(f"{path}: written by a newer deepfm-bench (schema {version}; this one reads up to "
                         f"{SCHEMA_VERSION}); upgrade deepfm-bench")
    if names and "runs" not in names:
        raise StoreError(f"{path}: a SQLite database without a runs table, not a results store; move it away or "
                         "pick another --results-dir")
    for table, expected in EXPECTED.items():
        present = {row[1]: row for row in columns[table]}
        ours = {row[1] for row in expected}
        for _, name, _, notnull, _, pk in expected if present else ():
            if (notnull or pk) and name not in present:
                raise StoreError(f"{path}: table {table} has no column {name}, which every results store has; "
                                 "written by another program or version: pick another --results-dir")
        for _, name, _, notnull, default, pk in present.values():
            if name not in ours and notnull and default is None and not pk:
                raise StoreError(f"{path}: table {table} has a column {name} that every row must fill (NOT NULL, "
                                 "no default), unknown to this deepfm-bench; written by another version or program: "
                                 "upgrade deepfm-bench or pick another --results-dir")


def _read_only_uri(path: Path, immutable: bool = False) -> str:
    """A SQLite URI opening `path` read-only (its characters quoted)."""
    return f"file:{urllib.parse.quote(os.path.abspath(path))}?mode=ro" + ("&immutable=1" if immutable else "")


def _wal_mode(path: Path) -> bool:
    """Whether the file's SQLite header says write-ahead logging (file format read and write versions 2)."""
    with open(path, "rb") as file:
        header = file.read(20)
    return header[:16] == b"SQLite format 3\0" and header[18:20] == b"\x02\x02"


def _file_state(path: Path) -> tuple[int, int, int, bool]:
    """What a writer changes: the file's identity, size and mtime, and whether a write-ahead log exists."""
    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns, os.path.exists(f"{path}-wal")


def _query(uri: str, query: Callable[[sqlite3.Connection], Any]) -> Any:
    conn = sqlite3.connect(uri, uri=True, timeout=60)
    try:
        conn.row_factory = sqlite3.Row
        return query(conn)
    finally:
        conn.close()


def _read(path: Path, query: Callable[[sqlite3.Connection], Any]) -> Any:
    """`query(conn)` on a read-only connection that leaves nothing beside the store. A WAL store without its
    log (no writer connected) is read as immutable, since a read-only connection would create a -wal and -shm
    and leave them; if a writer changed the file meanwhile, it is read again. With a log, through the log."""
    for _ in range(3):
        before = _file_state(path)
        if before[3] or not _wal_mode(path):
            break
        try:
            result = _query(_read_only_uri(path, immutable=True), query)
        except sqlite3.DatabaseError:
            if _file_state(path) == before:
                raise
            continue
        if _file_state(path) == before:
            return result
    return _query(_read_only_uri(path), query)


def _unusable(path: Path, exc: sqlite3.Error) -> str:
    """The one line saying why a store could not be opened or read."""
    if _disk_full(exc):
        return f"{path}: the disk is full ({exc}); nothing was written: free some space and run again"
    if (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY):
        return (f"{path}: cannot be read without writing beside it ({exc}): a write-ahead log without its -shm "
                "file, or a journal a crash left, in a folder this user cannot write; open it once with write access")
    return f"{path}: not a usable results store ({exc}); move it away or pick another --results-dir"


def check_results_dir(results_dir: str | Path) -> Path:
    """Refuse, before any work, a results dir that is a file, cannot be written or is on a full disk, and a store
    file that is not a results store this version can use; creates nothing."""
    path = Path(results_dir)
    if path.exists() and not path.is_dir():
        raise StoreError(f"--results-dir {path}: is a file, expected a folder")
    existing = next((p for p in [path, *path.parents] if p.exists()), None)
    if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise StoreError(f"--results-dir {path}: {existing or path} is not a writable folder")
    free = shutil.disk_usage(existing).free
    if free < MIN_FREE_BYTES:
        raise StoreError(f"--results-dir {path}: the disk is full ({free} bytes free), nothing could be recorded; "
                         "free some space")
    store = path / DB_NAME
    if store.exists():
        ResultStore.check(store)
    return path


class ResultStore:
    """The store under `results_dir`, created or brought up to this schema when missing or older. `readonly`:
    a reader, which opens an existing store read-only and writes nothing (no schema, no recovery of dead runs:
    a run whose process died is shown 'interrupted' but left as it is recorded)."""

    def __init__(self, results_dir: str | Path = "results", *, readonly: bool = False):
        self.dir = Path(results_dir)
        self.path = self.dir / DB_NAME
        self.readonly = readonly
        self.recovered: list[int] = []
        if readonly:
            if not self.path.is_file():
                raise StoreError(f"no results store at {self.path}")
            self.check(self.path, reading=True)
            return
        if self.path.exists():
            self.check(self.path)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"{self.dir}: cannot create the results folder ({exc.strerror or exc})") from None
        with self._errors():
            self._create_or_migrate()
        self.recovered = self._mark_dead_runs()

    @staticmethod
    def check(path: str | Path, *, reading: bool = False) -> None:
        """Read an existing store file's schema, read-only and creating nothing: a corrupt, foreign or newer file
        is a StoreError naming it; `reading`: it must hold a runs table (an empty file does not)."""
        path = Path(path)
        try:
            version, columns, names = _read(path, _inspect)
        except sqlite3.Error as exc:
            raise StoreError(_unusable(path, exc)) from None
        except OSError as exc:
            raise StoreError(f"{path}: cannot be read ({exc.strerror or exc})") from None
        _check_schema(path, version, columns, names)
        if reading and "runs" not in names:
            what = "an empty file" if not path.stat().st_size else "no tables"
            raise StoreError(f"{path}: not a results store ({what})")

    def _create_or_migrate(self) -> None:
        """Create a new store's tables, or bring an older store up to this schema (its missing columns added,
        its version recorded), in one transaction; a store already up to date is not written."""
        conn = self._connect()
        conn.isolation_level = None  # transactions by hand: BEGIN IMMEDIATE serialises two writers opening it
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                version, columns, names = _inspect(conn)
                _check_schema(self.path, version, columns, names)  # again, under the write lock
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)  # CREATE TABLE IF NOT EXISTS: writes only what is missing
                for table, expected in EXPECTED.items():
                    present = {row[1] for row in columns[table]}
                    for _, name, kind, _, _, _ in expected if present else ():
                        if name not in present:  # a store written before runs recorded it; nullable (checked)
                            conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
                if version != SCHEMA_VERSION:
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # SQLite may have rolled it back itself (a full disk)
                    conn.execute("ROLLBACK")
                raise
        finally:
            conn.close()

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """sqlite errors (corrupt file, full disk, locked too long) as one-line StoreErrors naming the file."""
        try:
            yield
        except sqlite3.Error as exc:
            if _disk_full(exc):
                raise StoreError(f"{self.path}: the disk is full ({exc}); this was not recorded: free some space "
                                 "and run again") from None
            raise StoreError(f"{self.path}: {exc}") from None

    def _connect(self) -> sqlite3.Connection:
        if self.readonly:
            raise StoreError(f"{self.path}: opened to read, not to write")
        conn = sqlite3.connect(self.path, timeout=60)
        conn.execute("PRAGMA journal_mode=WAL")
        return conn

    def _select(self, sql: str, args: list[Any]) -> list[sqlite3.Row]:
        """Rows of a query: read-only (creating nothing) for a reader, through the writer's connection otherwise."""
        if self.readonly:
            try:
                return _read(self.path, lambda conn: conn.execute(sql, args).fetchall())
            except sqlite3.Error as exc:
                raise StoreError(_unusable(self.path, exc)) from None
            except OSError as exc:
                raise StoreError(f"{self.path}: cannot be read ({exc.strerror or exc})") from None
        with self._errors():
            conn = self._connect()
            conn.row_factory = sqlite3.Row
            try:
                return conn.execute(sql, args).fetchall()
            finally:
                conn.close()

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
            conn.row_factory = sqlite3.Row
            try:
                rows = conn.execute("SELECT id, status, host, pid, pid_started FROM runs WHERE status = 'running' "
                                    "AND host = ?", (host,)).fetchall()
                dead = [(row["id"], reason) for row in rows if (reason := _died(dict(row), host))]
                with conn:
                    for run_id, reason in dead:
                        conn.execute("UPDATE runs SET finished=?, status='interrupted', reason=? WHERE id=? AND "
                                     "status='running'", (time.time(), reason, run_id))
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
             since: float | None = None, ids: list[int] | None = None) -> Runs:
        """The matching runs, in id order; rows that cannot be read are set aside in the result's `damaged`."""
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
        if ids is not None:  # an empty list selects nothing (not everything); an id beyond 64 bits is in no store
            ids = [i for i in ids if INT64[0] <= i <= INT64[1]]
            where.append(f"id IN ({','.join('?' * len(ids))})")
            args += ids
        sql = "SELECT * FROM runs" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
        found, host = Runs(), socket.gethostname()
        for r in self._select(sql, args):
            row = dict(zip(r.keys(), r, strict=True))
            try:
                run = self._run(row)
            except _Damaged as exc:
                found.damaged.append(DamagedRun(row["id"], str(row["model"]), str(row["status"]), str(exc)))
                continue
            if self.readonly and (reason := _died(row, host)):  # shown as a writer would record it, not written
                run.status, run.reason = "interrupted", reason
            found.append(run)
        return found

    @staticmethod
    def _run(row: dict[str, Any]) -> Run:
        """A run from its row (columns a store written before them lacks are empty); a _Damaged names the first
        field that cannot be read."""
        users = _unpack(row.get("users"), "users").get("users")
        per_user = _unpack(row.get("per_user"), "per_user")
        if per_user and (users is None or users.ndim != 1):
            raise _Damaged("users: missing or not one id per user, though per-user values are stored")
        for name, values in per_user.items():
            if values.shape != users.shape:
                raise _Damaged(f"per_user: {name} has {values.size} values for {users.size} users")
        metrics = _json(row, "metrics", dict, {})
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in metrics.values()):
            raise _Damaged("metrics: a value that is not a number")
        history = _json(row, "history", list, [])
        if not all(isinstance(epoch, dict) for epoch in history):
            raise _Damaged("history: an epoch that is not a JSON object")
        return Run(row["id"], row["started"], row.get("finished"), row["status"], row.get("reason"), row["dataset"],
                   row["model"], row["seed"], row.get("device"), row.get("protocol"), row.get("ties"),
                   row.get("num_negatives"), _json(row, "config", dict, {}), _json(row, "versions", dict, {}),
                   row.get("git_commit"), history, metrics, _json(row, "timings", dict, {}), users, per_user,
                   [str(note) for note in _json(row, "notes", list, [])])

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
