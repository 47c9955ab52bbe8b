"""`bench tune` workers sharing one study on a real PostgreSQL server (a throw-away one, in a temp dir).

Needs the server binaries (initdb, pg_ctl: `apt-get install -y postgresql`) and the driver
(`pip install -e ".[postgres]"`). Without them the test is skipped on a developer's machine; under CI (the CI
environment variable set, as .ci/run does, after installing both) it fails instead, so it can never silently
not run there.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest
from test_tune_lost_trials import WORKER_SECONDS, assert_exactly, load, mid_trial, start, tune_cmd, wait_for

import bench.tune.storage as storage_mod
from bench.tune.study import counts


def _unavailable(why: str) -> None:
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail(f"CI must run the PostgreSQL test: {why}")
    pytest.skip(why)


def _server_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).parent
    _unavailable("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install -y postgresql")
    raise AssertionError("unreachable")


@pytest.fixture
def postgres_url():
    """A throw-away server on a unix socket only (no TCP port), with trust auth; stopped and removed after."""
    try:
        import psycopg
    except ImportError:
        _unavailable('the PostgreSQL driver is not installed: pip install -e ".[postgres]"')
    bindir = _server_bin()
    as_postgres: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        if shutil.which("runuser") is None or subprocess.run(["id", "-u", "postgres"], capture_output=True).returncode:
            _unavailable("running as root needs the `postgres` user and runuser to start the server")
        as_postgres = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="bench-pg-"))  # short: a socket path has a ~100-byte limit
    root.chmod(0o755)
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    if as_postgres:
        shutil.chown(root, "postgres")
        shutil.chown(sock, "postgres")

    def run(*cmd: str) -> None:
        res = subprocess.run([*as_postgres, *cmd], capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, f"{' '.join(cmd)}:\n{res.stdout}\n{res.stderr}"

    started = False
    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60", "-o",
            f"-k {sock} -c listen_addresses='' -c fsync=off -c max_connections=50", "start")
        started = True
        with psycopg.connect(host=str(sock), user="postgres", dbname="postgres", autocommit=True) as con:
            con.execute("CREATE DATABASE bench")
        yield f"postgresql://postgres@/bench?host={sock}"
    finally:
        if started:
            subprocess.run([*as_postgres, str(bindir / "pg_ctl"), "-D", str(data), "stop", "-m", "immediate"],
                           capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def test_two_workers_on_postgres_finish_exactly_even_after_kill_9_of_one(tmp_path, postgres_url):
    storage_mod.check_url(postgres_url)
    storage = storage_mod.open_url(postgres_url)  # creates the schema; the test only reads through it
    procs = []
    try:
        # two workers, one killed mid-trial: the survivor fails its trial as lost, retries it, finishes 6
        victim, survivor = procs = [start(tune_cmd(tmp_path, postgres_url, 6), tmp_path / f"w{i}.log")
                                    for i in range(2)]
        wait_for(lambda: mid_trial(storage, lambda pid: pid == victim.pid), WORKER_SECONDS,
                 "the victim's trial to be under way", procs)
        os.kill(victim.pid, signal.SIGKILL)
        assert victim.wait(10) == -signal.SIGKILL
        assert survivor.wait(WORKER_SECONDS) == 0, (tmp_path / "w1.log").read_text()
        assert_exactly(load(storage), 6, {victim.pid})
        # the same command on two workers with a larger budget resumes the study: exactly 10, none twice
        # (shorter trials: nothing is killed now; the last --epochs given wins)
        procs = [start(tune_cmd(tmp_path, postgres_url, 10, "--epochs", "5"), tmp_path / f"r{i}.log")
                 for i in range(2)]
        for i, p in enumerate(procs):
            assert p.wait(WORKER_SECONDS) == 0, (tmp_path / f"r{i}.log").read_text()
        study = load(storage)
        assert_exactly(study, 10, {victim.pid})
        assert len([t for t in study.get_trials() if counts(t)]) == 10
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
