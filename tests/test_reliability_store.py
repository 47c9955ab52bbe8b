"""Issue 23, the results store: atomic writes that never follow a planted link, a store that survives other
versions and damaged rows, a reader that writes nothing, a full disk said as such, ids beyond 64 bits, and
`bench kernel` refusing a bad store before it measures."""

from __future__ import annotations

import hashlib
import os
import pathlib
import pickle
import shutil
import sqlite3
import subprocess
from contextlib import closing

import pytest
from click.testing import CliRunner
from conftest import SYNTH

import bench.cli.kernel as kernel_cli
import bench.results.store as store_mod
from bench.cli import main
from bench.results.store import SCHEMA_VERSION, ResultStore, StoreError, write_atomic

FAST = ["--epochs", "1", "--batch-size", "512", "--fm-dim", "8", "--no-progress"]
MODELS = ["--models", "mostpop,itemknn", "--seeds", "1,2", "--baseline", "mostpop"]  # 4 runs, no training


def invoke(*args):
    return CliRunner().invoke(main, list(args))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A real store: four finished runs of `bench run` (ids 1-4: mostpop seeds 1 and 2, then itemknn's)."""
    folder = tmp_path_factory.mktemp("built")
    res = invoke("run", *MODELS, *SYNTH, *FAST, "--results-dir", str(folder))
    assert res.exit_code == 0, res.output
    return folder / "bench.db"


@pytest.fixture
def store_dir(built, tmp_path):
    """A private copy of the built store in tmp_path."""
    shutil.copy(built, tmp_path / "bench.db")
    return tmp_path


def snapshot(folder):
    """Every file in the folder with its bytes' digest and mtime: what a reader must leave as it found it."""
    return {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in folder.iterdir()}


def sql(db, *statements):
    """Run statements on the store and close it: no connection of the test's keeps a -wal or -shm beside it."""
    with closing(sqlite3.connect(db)) as conn, conn:
        return [conn.execute(*([statement] if isinstance(statement, str) else statement)).fetchall()
                for statement in statements]


def report(folder, *args):
    return invoke("report", "--results-dir", str(folder), *args)


# 1. atomic writes

def test_write_atomic_never_follows_a_link_planted_at_its_temporary_name(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    page = tmp_path / "page.md"
    (tmp_path / "page.md.tmp").symlink_to(victim)  # the name the old write used
    write_atomic(page, "the page")
    assert victim.read_text() == "precious"
    assert page.read_text() == "the page" and not page.is_symlink()
    assert os.readlink(tmp_path / "page.md.tmp") == str(victim)  # the planted link itself is left alone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["page.md", "page.md.tmp", "victim.txt"]


def test_write_atomic_gives_a_new_file_the_umasks_mode_and_keeps_an_old_files(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    page = write_atomic(tmp_path / "page.md", "one")
    assert page.stat().st_mode & 0o777 == 0o666 & ~umask  # not the temporary file's private 0600
    page.chmod(0o640)
    write_atomic(page, "two")
    assert page.stat().st_mode & 0o777 == 0o640 and page.read_text() == "two"


# 2. the store across versions

def test_a_new_store_records_its_schema_version(tmp_path):
    ResultStore(tmp_path)
    assert sql(tmp_path / "bench.db", "PRAGMA user_version") == [[(SCHEMA_VERSION,)]] and SCHEMA_VERSION >= 1


def test_a_store_from_a_newer_version_is_refused_by_name(store_dir):
    db = store_dir / "bench.db"
    sql(db, "PRAGMA user_version = 99")
    before = snapshot(store_dir)
    for command in (["report"], ["run", "--models", "mostpop", *SYNTH, *FAST]):
        res = invoke(*command, "--results-dir", str(store_dir))
        assert res.exit_code == 2 and "Traceback" not in res.output, res.output
        assert (f"{db}: written by a newer deepfm-bench (schema 99; this one reads up to {SCHEMA_VERSION}); "
                "upgrade deepfm-bench") in res.output
    assert snapshot(store_dir) == before


def test_an_older_store_without_some_columns_is_read_then_migrated(store_dir):
    db = store_dir / "bench.db"
    dropped = ("device", "history", "notes", "host", "pid", "pid_started")
    sql(db, *[f"ALTER TABLE runs DROP COLUMN {column}" for column in dropped], "PRAGMA user_version = 0")  # as
    # written before these columns, and before the version was recorded
    res = report(store_dir)  # a reader reads it as it is
    assert res.exit_code == 0 and "| mostpop" in res.stdout and "| itemknn" in res.stdout, res.output
    store = ResultStore(store_dir)  # a writer brings it up to date
    version, columns = sql(db, "PRAGMA user_version", "PRAGMA table_info(runs)")
    assert version == [(SCHEMA_VERSION,)] and set(dropped) <= {row[1] for row in columns}
    runs = store.runs()
    assert [r.model for r in runs] == ["mostpop"] * 2 + ["itemknn"] * 2 and runs[0].device is None and runs[0].metrics
    assert not runs.damaged


def test_a_runs_table_without_an_essential_column_is_refused_naming_it(store_dir):
    db = store_dir / "bench.db"
    sql(db, "ALTER TABLE runs DROP COLUMN model")
    before = snapshot(store_dir)
    for command in (["report"], ["run", "--models", "mostpop", *SYNTH, *FAST]):
        res = invoke(*command, "--results-dir", str(store_dir))
        assert res.exit_code == 2 and "Traceback" not in res.output, res.output
        assert f"{db}: table runs has no column model" in res.output
    assert snapshot(store_dir) == before


def test_an_extra_column_our_insert_cannot_fill_is_refused_before_any_run(tmp_path):
    db = tmp_path / "bench.db"
    foreign = store_mod.SCHEMA.replace("    notes TEXT\n", "    notes TEXT,\n    owner TEXT NOT NULL\n", 1)
    with closing(sqlite3.connect(db)) as conn:
        conn.executescript(foreign)
    res = invoke("run", "--models", "mostpop", *SYNTH, *FAST, "--results-dir", str(tmp_path))
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert f"{db}: table runs has a column owner that every row must fill" in res.output
    assert "seed 1" not in res.output  # refused before any run
    assert sql(db, "SELECT COUNT(*) FROM runs") == [[(0,)]]


# 3. damaged rows

class _Touch:
    """Unpickled, it would create its file: the proof that a stored pickle was loaded."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.path),)


def _damage(db, run_id, column, value):
    if callable(value):
        value = value(sql(db, (f"SELECT {column} FROM runs WHERE id = ?", (run_id,)))[0][0][0])
    sql(db, (f"UPDATE runs SET {column} = ? WHERE id = ?", (value, run_id)))


@pytest.mark.parametrize("column, value, reason", [
    ("metrics", "{'hr@10': 0.5", "metrics: not JSON"),
    ("metrics", "[1, 2]", "metrics: JSON list, expected dict"),
    ("per_user", lambda blob: blob[: len(blob) // 2], "per_user: not readable numpy arrays"),
    ("users", lambda blob: blob[:-40], "users: not readable numpy arrays"),
    ("per_user", "PICKLE", "per_user: holds pickled Python objects, which are never loaded"),
])
def test_report_shows_every_readable_run_and_names_a_damaged_one(store_dir, column, value, reason):
    db = store_dir / "bench.db"
    marker = store_dir / "unpickled"
    _damage(db, 2, column, pickle.dumps({"hr@10": _Touch(marker)}) if value == "PICKLE" else value)
    res = report(store_dir, "--format", "csv")
    assert res.exit_code == 0 and "Traceback" not in res.output, res.output
    assert res.stdout.count("mostpop") == 1 and res.stdout.count("itemknn") == 1  # the readable runs, averaged
    assert "runs that cannot be read" in res.stderr
    damaged_line = next(line for line in res.stderr.splitlines() if line.split("|")[1:3] == ["    2 ", " mostpop "])
    assert reason in damaged_line
    assert not marker.exists()
    runs = ResultStore(store_dir, readonly=True).runs()
    assert [r.id for r in runs] == [1, 3, 4] and [(d.id, d.model) for d in runs.damaged] == [(2, "mostpop")]
    assert reason in runs.damaged[0].reason


def test_a_stored_pickle_is_never_loaded_even_inside_a_numpy_archive(store_dir):
    import io

    import numpy as np

    marker = store_dir / "unpickled"
    buf = io.BytesIO()
    np.savez_compressed(buf, hr=np.array([_Touch(marker)], dtype=object))
    _damage(store_dir / "bench.db", 1, "per_user", buf.getvalue())
    runs = ResultStore(store_dir).runs()
    assert [d.id for d in runs.damaged] == [1] and "pickled" in runs.damaged[0].reason and not marker.exists()


# 4. a reader opens the store read-only and writes nothing

def _spy_connections(monkeypatch):
    """Every sqlite3.connect call's database argument and keywords."""
    opened = []
    original = sqlite3.connect

    def connect(database, *args, **kw):
        opened.append((str(database), kw.get("uri", False)))
        return original(database, *args, **kw)

    monkeypatch.setattr(sqlite3, "connect", connect)
    return opened


@pytest.mark.parametrize("read_only", ["file", "file and folder"])
def test_report_reads_a_read_only_store_and_writes_nothing(store_dir, monkeypatch, read_only):
    db = store_dir / "bench.db"
    before = snapshot(store_dir)
    opened = _spy_connections(monkeypatch)
    db.chmod(0o444)
    if read_only == "file and folder":
        store_dir.chmod(0o555)
    try:  # as root chmod stops no write: the spy shows every connection read-only, the snapshot that none wrote
        res = report(store_dir)
    finally:
        store_dir.chmod(0o755)
        db.chmod(0o644)
    assert res.exit_code == 0 and "| mostpop" in res.stdout and "Traceback" not in res.output, res.output
    assert opened and all(uri and name.startswith("file:") and "mode=ro" in name for name, uri in opened), opened
    assert snapshot(store_dir) == before  # no -wal, -shm or journal left, the store's bytes and mtime as they were


@pytest.mark.parametrize("content", [b"", "foreign"])
def test_report_on_an_empty_or_foreign_file_changes_nothing(tmp_path, content):
    db = tmp_path / "bench.db"
    if content == "foreign":
            sql(db, "CREATE TABLE photos (id INTEGER PRIMARY KEY, path TEXT)")
    else:
        db.write_bytes(content)
    before = snapshot(tmp_path)
    res = report(tmp_path)
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert str(db) in res.output and "not a results store" in res.output
    assert snapshot(tmp_path) == before


def test_a_reader_shows_a_dead_run_interrupted_without_writing(store_dir):
    store = ResultStore(store_dir)
    run_id = store.start_run(dataset="d", model="m", seed=1, device="cpu", protocol="full", ties="expected",
                             num_negatives=None, config={}, versions={}, git_commit=None)
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that no longer runs
    sql(store_dir / "bench.db", ("UPDATE runs SET pid = ?, pid_started = NULL WHERE id = ?", (gone.pid, run_id)))
    before = snapshot(store_dir)
    res = report(store_dir)
    assert res.exit_code == 0, res.output
    assert "interrupted" in res.stderr and f"pid {gone.pid}" in res.stderr and "died" in res.stderr
    assert snapshot(store_dir) == before
    assert sql(store_dir / "bench.db", ("SELECT status FROM runs WHERE id = ?", (run_id,))) == [[("running",)]]


def test_a_reader_sees_runs_still_in_the_write_ahead_log(store_dir):
    writer = sqlite3.connect(store_dir / "bench.db")  # a live writer: the log is not folded into the file
    try:
        writer.execute("SELECT COUNT(*) FROM runs").fetchone()
        ResultStore(store_dir).start_run(dataset="d", model="walmodel", seed=1, device="cpu", protocol="full",
                                         ties="expected", num_negatives=None, config={}, versions={}, git_commit=None)
        assert (store_dir / "bench.db-wal").stat().st_size > 0
        runs = ResultStore(store_dir, readonly=True).runs()
        assert [r.model for r in runs][-1] == "walmodel" and runs[-1].status == "running"
    finally:
        writer.close()


# 5. a full disk

def test_a_full_disk_is_said_as_such_not_as_an_unusable_store(store_dir, monkeypatch):
    def full(*args, **kw):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(sqlite3, "connect", full)
    res = invoke("run", "--models", "mostpop", *SYNTH, *FAST, "--results-dir", str(store_dir))
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert f"{store_dir / 'bench.db'}: the disk is full" in res.output and "nothing was written" in res.output
    assert "not a usable results store" not in res.output and "move it away" not in res.output


def test_a_run_that_cannot_be_recorded_on_a_full_disk_says_so(store_dir, monkeypatch):
    store = ResultStore(store_dir)
    original = ResultStore._connect

    def full(self):  # the store may not grow by a page: SQLite's own "database or disk is full"
        conn = original(self)
        conn.execute(f"PRAGMA max_page_count = {conn.execute('PRAGMA page_count').fetchone()[0]}")
        return conn

    monkeypatch.setattr(ResultStore, "_connect", full)
    with pytest.raises(StoreError) as err:
        store.start_run(dataset="d", model="m" * 100_000, seed=1, device="cpu", protocol="full", ties="expected",
                        num_negatives=None, config={}, versions={}, git_commit=None)
    assert str(err.value).startswith(f"{store.path}: the disk is full") and "this was not recorded" in str(err.value)
    assert len(ResultStore(store_dir, readonly=True).runs()) == 4


def test_a_page_on_a_full_disk_says_the_disk_is_full_and_leaves_nothing(tmp_path, monkeypatch):
    def no_space(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError) as err:
        write_atomic(tmp_path / "page.md", "the page")
    assert str(err.value) == f"{tmp_path / 'page.md'}: the disk is full; nothing was written"
    assert list(tmp_path.iterdir()) == []


def test_a_results_dir_on_a_full_disk_is_refused_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 4096, 4096))
    res = invoke("run", "--models", "mostpop", *SYNTH, *FAST, "--results-dir", str(tmp_path / "r"))
    assert res.exit_code == 2 and "the disk is full (4096 bytes free)" in res.output, res.output
    assert not (tmp_path / "r").exists()


# 6. ids beyond 64 bits

def test_report_ids_beyond_64_bits_are_refused_naming_the_option(store_dir):
    res = report(store_dir, "--ids", "1,99999999999999999999")
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert "--ids" in res.output and "99999999999999999999 is not a run id" in res.output


def test_runs_by_an_id_beyond_64_bits_find_no_such_run(store_dir):
    for opened in (lambda: ResultStore(store_dir), lambda: ResultStore(store_dir, readonly=True)):  # writer, reader
        store = opened()
        assert store.runs(ids=[2**64]) == [] and [r.id for r in store.runs(ids=[1, -(2**70), 2**70])] == [1]


# 7. bench kernel checks the store before it measures

KERNEL = ["kernel", "--impl", "fused", "--dtype", "float32", "--devices", "cpu", "--batch", "8", "--fields", "2",
          "--dim", "2", "--repeat", "1", "--warmup", "0", "--copy-mb", "1", "--no-backward"]


@pytest.mark.parametrize("store", ["corrupt", "newer", "full disk"])
def test_kernel_refuses_a_bad_store_before_measuring(tmp_path, monkeypatch, store):
    measured = []
    monkeypatch.setattr(kernel_cli, "run_kernel_bench", lambda *a, **kw: measured.append(1) or [])
    db = tmp_path / "bench.db"
    if store == "corrupt":
        db.write_bytes(b"this is not a database at all" * 100)
        expected = f"{db}: not a usable results store"
    elif store == "newer":
        ResultStore(tmp_path)
        sql(db, "PRAGMA user_version = 7")
        expected = f"{db}: written by a newer deepfm-bench (schema 7"
    else:
        monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 0))
        expected = "the disk is full (0 bytes free)"
    res = invoke(*KERNEL, "--results-dir", str(tmp_path))
    assert res.exit_code == 2 and expected in res.output and "Traceback" not in res.output, res.output
    assert measured == []
