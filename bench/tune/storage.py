"""Where studies live, checked before use, with heartbeats so that no trial is lost when a worker dies; and the
one module that touches Optuna's private internals.

A database URL (SQLite by default, PostgreSQL when many machines share a study) or a journal file. Every
running trial sends a heartbeat every HEARTBEAT_S seconds; the first worker that sees one silent for GRACE_S
seconds fails it with the reason (user attrs `lost`, `fail_reason`) and queues it again with the same
parameters (a WAITING trial, `retry_of` its number; one killed before it drew any is not: a new trial takes its
place). A trial lost MAX_RETRIES + 1 times (its configuration may be what kills the worker, e.g. the kernel's
out-of-memory killer) is failed for good.

Optuna's internals used here, and only here (the rest of `bench.tune` uses its public API): the heartbeat base
class and the RDB storage's stale-trial hook, its table models and scoped sessions (a queued trial claimed by
one conditional UPDATE), and the journal file's lock. Tested with Optuna 4.5.0 and 5.1.0, the ends of the
range pyproject.toml allows (CI runs the tuner's tests at both); a release outside it may change them.
"""

from __future__ import annotations

import inspect
import json
import os
import socket
import sqlite3
import sys
import time
import warnings
from collections.abc import Iterable
from contextlib import closing
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend
from optuna.storages.journal._file import get_lock_file
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from bench.text import printable

# A running trial's heartbeat: one small write every HEARTBEAT_S seconds (an UPDATE of one row on a database; a
# 140-byte line in a journal file, about 250 kB per trial-hour). A trial silent for GRACE_S seconds (5 missed
# beats: a live worker stalls that long only when stopped or starved) is lost: found within seconds, not minutes.
HEARTBEAT_S = 2
GRACE_S = 10
MAX_RETRIES = 2
POSTGRES_EXTRA = 'pip install "deepfm-bench[postgres]"'


def _is_journal(url: str) -> bool:
    return url.endswith((".log", ".journal")) and "://" not in url


STORAGE_HELP = ("expected a database URL such as sqlite:///path/optuna.db or postgresql://user:pw@host/db, "
                "or a journal file path ending .journal or .log")


def check_url(url: str | None) -> None:
    """Refuse a --storage that cannot work, in one line, before any data loads or trial runs.

    Garbage, an unknown database, an in-memory SQLite database (each process would get its own), a file in a
    missing or read-only folder, a file that is not a SQLite database, a database whose driver is not installed
    (for postgresql:// the `postgres` extra). None (the default SQLite file under --results-dir) passes.
    """
    if url is None:
        return
    if _is_journal(url):
        path = Path(url)
        if path.is_dir():
            raise ValueError(f"--storage {url}: is a folder ({STORAGE_HELP})")
        _check_folder(url, path, "a journal file")
        _check_journal(url, path)
        return
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError(f"--storage {url!r}: not a storage URL ({STORAGE_HELP})") from None
    shown = parsed.render_as_string(hide_password=True)
    try:
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        raise ValueError(f"--storage {shown}: unknown database {parsed.drivername!r} ({STORAGE_HELP})") from None
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        backend = parsed.get_backend_name()
        hint = (f'{POSTGRES_EXTRA} (psycopg 3, which postgresql:// uses)' if backend == "postgresql" and
                parsed.get_driver_name() == "psycopg" else f"install the Python module {exc.name or exc}")
        if backend == "postgresql" and parsed.get_driver_name() != "psycopg":
            hint += f", or use postgresql:// with {POSTGRES_EXTRA}"
        raise ValueError(f"--storage {shown}: the {backend} driver {parsed.get_driver_name()} is not installed: "
                         f"{hint}") from None
    if parsed.get_backend_name() == "sqlite":
        _check_sqlite(shown, parsed.database)


def _check_folder(url: str, path: Path, what: str) -> None:
    folder = path.parent
    if not folder.is_dir():
        raise ValueError(f"--storage {url}: folder {folder} does not exist (expected {what} in an existing folder)")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.R_OK | os.W_OK)):
        raise ValueError(f"--storage {url}: {path if path.exists() else folder} is not writable")


def _check_sqlite(url: str, database: str | None) -> None:
    if database and database.startswith("file:"):
        return  # a SQLite URI filename: left to SQLite
    if not database or database == ":memory:":
        raise ValueError(f"--storage {url}: an in-memory SQLite database is private to one process and lost at "
                         "exit; expected a file, e.g. sqlite:///path/optuna.db")
    path = Path(database)
    if path.is_dir():
        raise ValueError(f"--storage {url}: {path} is a folder, not a SQLite file")
    _check_folder(url, path, "a SQLite file")
    if path.exists() and path.stat().st_size:
        try:  # read-write, never create: SQLite rolls back a hot journal left by a killed writer (read-only it cannot)
            with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True)) as con:
                con.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as exc:
            raise ValueError(f"--storage {url}: {path} is not a usable SQLite database ({exc})") from None


# Optuna's journal writes each record as one line `{"op_code":N,...}` + newline, appended under a lock file; a line
# without its newline is a record whose writer was killed mid-write: Optuna never applied it.
JOURNAL_RECORD = b'{"op_code":'
JOURNAL_REPAIR = "remove that line (or restore the file from a backup); the records after it are kept"


def _is_record(line: bytes) -> bool:
    try:
        record = json.loads(line)
    except ValueError:  # not JSON, or not UTF-8
        return False
    return isinstance(record, dict) and "op_code" in record


def _is_record_start(tail: bytes) -> bool:
    """Whether an unfinished last line is the beginning of a record (cut mid-write), not something else."""
    return JOURNAL_RECORD.startswith(tail[:len(JOURNAL_RECORD)])


def _check_journal(url: str, path: Path) -> None:
    """Refuse a journal with a line that is no record (a bare JSON error from Optuna otherwise), naming the line.
    An unfinished last line that begins a record is accepted: the next write drops it (_JournalFile)."""
    if not path.is_file():
        return
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if _is_record(line) if line.endswith(b"\n") else _is_record_start(line):
                continue
            raise ValueError(f"--storage {url}: line {number} of {path} is not a journal record (damaged file?): "
                             f"{JOURNAL_REPAIR}")


def _line_number(f: Any, offset: int) -> int:
    f.seek(0)
    return f.read(offset).count(b"\n") + 1


def _last_line_start(f: Any, size: int) -> int:
    """The offset just past the file's last newline (0 when it has none), read backwards from the end."""
    end = size
    while end > 0:
        start = max(0, end - 65536)
        f.seek(start)
        found = f.read(end - start).rfind(b"\n")
        if found >= 0:
            return start + found + 1
        end = start
    return 0


def _drop_incomplete_record(path: str) -> None:
    """With the journal's lock held: truncate the file back to its last complete line when a killed worker left
    a record half written (it held the lock, so no live worker is mid-write now). That record was never
    committed (Optuna's reader skips it); a record appended onto it would make the line, and from then on the
    whole file, unreadable."""
    with open(path, "r+b") as f:
        size = f.seek(0, os.SEEK_END)
        if not size:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        start = _last_line_start(f, size)
        f.seek(start)
        tail = f.read()
        number = _line_number(f, start)
        if not _is_record_start(tail):
            raise ValueError(f"journal {path}: line {number} is not a journal record (damaged file?): {JOURNAL_REPAIR}")
        f.truncate(start)
        f.flush()
        os.fsync(f.fileno())
    print(printable(f"warning: journal {path}: dropped its incomplete last record (line {number}, {len(tail)} "
                    "bytes): a worker was stopped while writing it, so it was never committed"),
          file=sys.stderr, flush=True)


class _JournalFile(JournalFileBackend):
    """Optuna's journal file backend, which never appends onto a record a killed worker left half written."""

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        lines = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs)  # as Optuna writes them
        with get_lock_file(self._lock):
            _drop_incomplete_record(self._file_path)
            with open(self._file_path, "ab") as f:
                f.write(lines.encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())


def worker_id() -> str:
    """host:pid of this process, recorded on each trial it runs."""
    return f"{socket.gethostname()}:{os.getpid()}"


class _Silence:
    """Which running trials have sent no heartbeat for GRACE_S seconds, as seen by this process's own clock.

    A trial's heartbeat token (its last heartbeat's time, or None for "no heartbeat yet") is remembered with
    the moment this process first saw it; a token unchanged for GRACE_S seconds means its worker is gone. No
    two machines' clocks are ever compared, so clock skew between them cannot fail a live trial.
    """

    def __init__(self) -> None:
        self._seen: dict[int, tuple[Any, float]] = {}

    def stale(self, tokens: dict[int, Any]) -> list[int]:
        """`tokens`: each running trial's id -> its heartbeat token now."""
        now, seen, stale = time.monotonic(), {}, []
        for trial_id, value in tokens.items():
            before = self._seen.get(trial_id)
            since = before[1] if before is not None and before[0] == value else now
            seen[trial_id] = (value, since)
            if now - since > GRACE_S:
                stale.append(trial_id)
        self._seen = seen
        return stale


def _mark_lost(storage: optuna.storages.BaseStorage, trial_ids: Iterable[int]) -> list[int]:
    """Record on each silent trial, while it is still RUNNING, why it is about to fail; returns those that are
    still running (another worker may have finished or failed one meanwhile)."""
    marked = []
    for trial_id in dict.fromkeys(trial_ids):
        try:
            trial = storage.get_trial(trial_id)
            if trial.state != TrialState.RUNNING:
                continue
            retried = len(trial.system_attrs.get("retry_history", []))
            silent = (f"its worker {trial.user_attrs.get('worker', '(not yet known)')} sent no heartbeat for "
                      f"{GRACE_S} s (killed or crashed)")
            if retried >= MAX_RETRIES:
                reason = (f"lost {retried + 1} times, {silent}: its configuration may be what kills the worker "
                          "(out of memory?); not retried")
            else:
                reason = f"lost: {silent}; " + ("retried with the same parameters" if _has_parameters(trial) else
                                                "it had drawn no parameters yet: a new trial takes its place")
                storage.set_trial_user_attr(trial_id, "lost", True)
            storage.set_trial_user_attr(trial_id, "fail_reason", reason)
        except (UpdateFinishedTrialError, KeyError):
            continue
        marked.append(trial_id)
    return marked


def _has_parameters(trial: FrozenTrial) -> bool:
    """Whether a trial has a configuration to retry: parameters it drew, or ones it was queued with (the untuned
    configuration), even if its worker was killed before drawing them."""
    return bool(trial.params or trial.system_attrs.get("fixed_params"))


def retry_lost(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue a lost trial again with its parameters, and those it was queued with, as the untuned trial if it was
    (Optuna's heartbeat-stale callback). One killed before it had any is not: a new trial takes its place."""
    if not trial.user_attrs.get("lost") or not _has_parameters(trial):
        return
    history = [*trial.system_attrs.get("retry_history", []), trial.number]
    queued = {"fixed_params": trial.system_attrs["fixed_params"]} if "fixed_params" in trial.system_attrs else {}
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
        user_attrs={"retry_of": history[0], **{k: v for k, v in trial.user_attrs.items() if k == "untuned"}},
        system_attrs={"failed_trial": history[0], "retry_history": history, **queued}))  # as RetryFailedTrialCallback


# the heartbeat-stale callback's keyword: `failed_trial_callback` until Optuna 4.9 renamed it
_STALE_CALLBACK = ("heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in
                   inspect.signature(optuna.storages.RDBStorage.__init__).parameters else "failed_trial_callback")


class _RDBStorage(optuna.storages.RDBStorage):
    """Optuna's heartbeat (timed by the database's clock), plus: the reason recorded on each lost trial, a
    trial whose worker died before its first heartbeat is found too, and a queued trial is taken by exactly
    one worker (`_claim`)."""

    def __init__(self, url: str, **kw: Any) -> None:
        super().__init__(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S, **{_STALE_CALLBACK: retry_lost},
                         **kw)
        self._silence = _Silence()

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Any = None) -> bool:
        if state == TrialState.RUNNING and values is None:  # a worker taking a queued trial
            return self._claim(trial_id)
        return super().set_trial_state_values(trial_id, state, values)

    def _claim(self, trial_id: int) -> bool:
        """WAITING -> RUNNING in one conditional UPDATE: True for the one worker that took the trial. Optuna
        reads the state and then writes it, under SELECT ... FOR UPDATE, which locks nothing on SQLite: two
        workers starting together both took the queued untuned trial and ran it twice (the second one's
        result was refused and the worker crashed)."""
        from datetime import datetime, timezone

        from optuna.storages._rdb.models import TrialModel
        from optuna.storages._rdb.storage import _create_scoped_session
        from sqlalchemy import update

        trials = TrialModel.__table__  # the table, not the model: its start time is stored as naive UTC
        with _create_scoped_session(self.scoped_session) as session:
            claimed = session.execute(
                update(trials)
                .where(trials.c.trial_id == trial_id, trials.c.state == TrialState.WAITING)
                .values(state=TrialState.RUNNING, datetime_start=datetime.now(timezone.utc).replace(tzinfo=None)))
            return claimed.rowcount == 1

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        """Every state a killed worker can leave: a heartbeat row that stopped (Optuna's check, by the database's
        clock), and any running trial whose heartbeat (its row's time, or none yet) this process has seen unchanged
        for GRACE_S: a worker killed before its heartbeat thread's first write, whether or not the objective had
        already recorded its `worker` attr (the two race), is found too."""
        stale = super()._get_stale_trial_ids(study_id)
        return _mark_lost(self, [*stale, *self._silence.stale(self._heartbeats(study_id))])

    def _heartbeats(self, study_id: int) -> dict[int, Any]:
        """Each running trial's id -> the time of its last heartbeat (None when it has sent none)."""
        from optuna.storages._rdb.models import TrialHeartbeatModel, TrialModel
        from optuna.storages._rdb.storage import _create_scoped_session
        from sqlalchemy import select

        trials, beats = TrialModel.__table__, TrialHeartbeatModel.__table__
        query = (select(trials.c.trial_id, beats.c.heartbeat)
                 .select_from(trials.outerjoin(beats, beats.c.trial_id == trials.c.trial_id))
                 .where(trials.c.study_id == study_id, trials.c.state == TrialState.RUNNING))
        with _create_scoped_session(self.scoped_session) as session:
            return dict(session.execute(query).all())


class _JournalStorage(optuna.storages.JournalStorage, BaseHeartbeat):
    """Optuna's journal storage has no heartbeat: here it is a trial system attr written every HEARTBEAT_S."""

    def __init__(self, backend: Any) -> None:
        super().__init__(backend)
        self._silence = _Silence()

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self.set_trial_system_attr(trial_id, "heartbeat", time.time())
        except (UpdateFinishedTrialError, KeyError):
            pass  # failed meanwhile as lost by another worker: nothing left to keep alive

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        return _mark_lost(self, self._silence.stale({t._trial_id: t.system_attrs.get("heartbeat") for t in running}))

    def get_heartbeat_interval(self) -> int:
        return HEARTBEAT_S

    def get_heartbeat_stale_trial_callback(self) -> Any:
        return retry_lost

    get_failed_trial_callback = get_heartbeat_stale_trial_callback  # its name before Optuna 4.9


def open_url(url: str) -> optuna.storages.BaseStorage:
    """A journal file (path ending .log/.journal), else an RDB URL; both with heartbeats for lost trials.

    Workers starting together race to create the RDB schema; the loser retries once it exists.
    """
    if _is_journal(url):
        return _JournalStorage(_JournalFile(url))
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    for attempt in range(10):
        try:
            with warnings.catch_warnings():  # heartbeats are an ExperimentalWarning in Optuna, stable since 2.9
                warnings.simplefilter("ignore", ExperimentalWarning)
                return _RDBStorage(url, engine_kwargs=engine)
        except SQLAlchemyError as exc:  # "table studies already exists", duplicate alembic version, locked
            if attempt == 9:
                shown = make_url(url).render_as_string(hide_password=True)
                detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
                raise ValueError(f"--storage {shown}: cannot open the study storage ({detail})") from None
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


