"""`bench tune` reliability (issue 23): studies damaged or left half-done by a crash resume, a stopped study stops,
and bad tuning options are refused before any work."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from conftest import SYNTH, tune_config, worker_env
from optuna.trial import TrialState

import bench.runner as runner_mod
import bench.tune.storage as storage_mod
import bench.tune.study as tuner_mod
from bench.cli import main
from bench.tune.storage import check_url, open_url
from bench.tune.study import counts, finished, lost, open_study, tune, work

posix = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")


def config(tmp_path, **kw):
    return tune_config(tmp_path, **{"trials": 1, **kw})


def no_data_loads(monkeypatch) -> None:
    monkeypatch.setattr(runner_mod, "load_frames", lambda *a, **k: pytest.fail("data loaded before the refusal"))


# ---- a journal file damaged by a crash ----

def journal_with_a_study(tmp_path) -> tuple[Path, object]:
    path = tmp_path / "study.journal"
    cfg = config(tmp_path, storage=str(path))
    open_study(cfg)  # the study and its queued untuned trial: a few records
    assert path.read_bytes().endswith(b"\n") and path.read_bytes().count(b"\n") >= 3
    return path, cfg


CUT = b'{"op_code":5,"worker_id":"dead-1","trial_id":0,"par'  # a record its worker was killed while writing


def test_a_journal_cut_mid_record_drops_that_record_once_and_the_study_finishes(tmp_path, capsys):
    """A worker killed while writing left half a record without its newline: the next run's records were
    appended onto it, and from then on every run on the study failed with a bare JSON error."""
    path, cfg = journal_with_a_study(tmp_path)
    whole = path.read_bytes()
    path.write_bytes(whole + CUT)
    check_url(str(path))  # an unfinished last record is no reason to refuse
    study = tune(cfg)
    err = capsys.readouterr().err
    assert err.count("dropped its incomplete last record") == 1, err
    number = whole.count(b"\n") + 1
    assert f"journal {path}: dropped its incomplete last record (line {number}, {len(CUT)} bytes)" in err
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and all(json.loads(line)["op_code"] is not None for line in lines[:-1])
    assert finished(study) == 1 and study.get_trials()[0].state == TrialState.COMPLETE


def test_a_live_worker_never_appends_onto_a_record_another_one_was_killed_writing(tmp_path, capsys):
    """The survivors of a killed worker go on writing to the same journal."""
    path, cfg = journal_with_a_study(tmp_path)
    survivor = optuna.load_study(study_name=cfg.study_name(), storage=open_url(str(path)))
    with open(path, "ab") as f:
        f.write(CUT)
    survivor.set_user_attr("after", 1)
    assert CUT not in path.read_bytes()
    reread = optuna.load_study(study_name=cfg.study_name(), storage=open_url(str(path)))
    assert reread.user_attrs["after"] == 1 and len(reread.get_trials()) == 1
    assert "dropped its incomplete last record" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["middle", "last line, unfinished"])
def test_a_journal_line_that_is_no_record_is_refused_naming_file_line_and_repair(tmp_path, monkeypatch, where):
    path, _ = journal_with_a_study(tmp_path)
    lines = path.read_bytes().split(b"\n")[:-1]
    if where == "middle":
        damaged = b"\n".join([*lines[:2], b"\x00\x00garbage", *lines[2:]]) + b"\n"
        number = 3
    else:
        damaged = b"\n".join(lines) + b"\nnot a record"
        number = len(lines) + 1
    path.write_bytes(damaged)
    expected = f"line {number} of {path} is not a journal record (damaged file?): remove that line (or restore"
    with pytest.raises(ValueError, match=r"\(damaged file\?\)") as err:
        check_url(str(path))
    assert expected in str(err.value) and "\n" not in str(err.value)
    no_data_loads(monkeypatch)
    res = CliRunner().invoke(main, ["tune", "--models", "fm", "--trials", "1", *SYNTH, "--no-progress",
                                    "--storage", str(path), "--results-dir", str(tmp_path / "r")])
    assert res.exit_code == 2 and expected in res.output and "Traceback" not in res.output, res.output
    assert path.read_bytes() == damaged  # refused, never repaired by guesswork


# ---- a study left by a killed worker ----

HOT_JOURNAL = """
import sqlite3, sys, time
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("PRAGMA journal_mode=DELETE")
con.execute("PRAGMA cache_size=2")  # pages spill into the database file before the commit
con.execute("BEGIN IMMEDIATE")
con.execute("CREATE TABLE half_done(x BLOB)")
for _ in range(100):
    con.execute("INSERT INTO half_done VALUES (randomblob(4000))")
print("writing", flush=True)
time.sleep(60)
"""


@posix
def test_a_hot_journal_left_by_a_killed_writer_is_rolled_back_not_refused(tmp_path):
    """The check opened optuna.db read-only, which cannot roll back a hot journal: "attempt to write a readonly
    database" for a healthy file."""
    db = tmp_path / "optuna.db"
    url = f"sqlite:///{db}"
    optuna.create_study(study_name="kept", storage=url)
    writer = subprocess.Popen([sys.executable, "-c", HOT_JOURNAL, str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "writing"
    finally:
        writer.kill()
        writer.wait()
    hot = Path(f"{db}-journal")
    assert hot.stat().st_size > 0  # the state the killed writer left
    check_url(url)
    assert not hot.exists()  # rolled back
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert not con.execute("SELECT name FROM sqlite_master WHERE name = 'half_done'").fetchall()
    assert optuna.load_study(study_name="kept", storage=url).study_name == "kept"
    check_url(f"sqlite:///{tmp_path / 'missing.db'}")
    assert not (tmp_path / "missing.db").exists()  # checking never creates the file


def kill_state(study: optuna.Study, state: str) -> optuna.Trial:
    """A RUNNING trial as a worker killed at that moment leaves it."""
    dead = study.ask()
    dead.suggest_float("lr", 1e-4, 1e-2, log=True)
    if state != "no worker attr, no heartbeat":
        dead.set_user_attr("worker", "elsewhere:4242")
    if state == "heartbeat that stopped":
        study._storage.record_heartbeat(dead._trial_id)
    return dead


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
@pytest.mark.parametrize("state", ["no worker attr, no heartbeat", "worker attr, no heartbeat row",
                                   "heartbeat that stopped"])
def test_every_state_a_killed_worker_leaves_is_declared_lost_retried_and_the_study_finishes(tmp_path, monkeypatch,
                                                                                             state):
    """The heartbeat thread and the objective's first write race: a worker killed after its `worker` attr and
    before its first heartbeat row left a trial the next `bench tune` waited on for ever."""
    monkeypatch.setattr(storage_mod, "GRACE_S", 1)
    cfg = config(tmp_path, storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    study = open_study(cfg)
    dead = kill_state(study, state)
    lr = dead.params["lr"]
    optuna.storages.fail_stale_trials(study)  # first look: silent for no time yet
    assert study._storage.get_trial(dead._trial_id).state == TrialState.RUNNING
    time.sleep(1.5)
    optuna.storages.fail_stale_trials(study)
    frozen = study._storage.get_trial(dead._trial_id)
    assert frozen.state == TrialState.FAIL and frozen.user_attrs["lost"] is True
    assert frozen.user_attrs["fail_reason"].startswith("lost: its worker ")
    (queued,) = study.get_trials(states=(TrialState.WAITING,))
    assert queued.params == {"lr": lr} and queued.user_attrs["retry_of"] == frozen.number

    assert work(cfg) == 1  # the retry
    trials = study.get_trials()
    assert sum(counts(t) for t in trials) == 1 and [t.number for t in lost(study)] == [frozen.number]
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_a_trial_killed_before_it_drew_parameters_is_replaced_and_the_untuned_one_keeps_its_own(tmp_path,
                                                                                                  monkeypatch):
    """Its retry was queued with no parameters (a random trial, not a retry), and the untuned trial's retry lost
    the untuned configuration: the study never tried its defaults."""
    monkeypatch.setattr(storage_mod, "GRACE_S", 1)
    cfg = config(tmp_path, storage=f"sqlite:///{tmp_path / 'optuna.db'}", trials=3)
    study = open_study(cfg)
    (queued,) = study.get_trials(states=(TrialState.WAITING,))
    untuned, fresh = study.ask(), study.ask()  # both killed before drawing anything
    assert untuned.user_attrs.get("untuned") and not fresh.user_attrs.get("untuned")
    optuna.storages.fail_stale_trials(study)
    time.sleep(1.5)
    optuna.storages.fail_stale_trials(study)
    assert {t.number for t in lost(study)} == {untuned.number, fresh.number}
    (retry,) = study.get_trials(states=(TrialState.WAITING,))
    assert retry.user_attrs["retry_of"] == untuned.number and retry.user_attrs["untuned"] is True
    assert retry.system_attrs["fixed_params"] == queued.system_attrs["fixed_params"]
    assert "a new trial takes its place" in study._storage.get_trial(fresh._trial_id).user_attrs["fail_reason"]
    assert work(cfg) == 3
    done = {t.number: t for t in study.get_trials() if counts(t)}
    assert len(done) == 3 and done[retry.number].params == queued.system_attrs["fixed_params"]


# ---- options refused before any work ----

@pytest.mark.parametrize("option, value", [("--timeout", "-1"), ("--timeout", "0"), ("--timeout", "nan"),
                                           ("--objective", "hr@0"), ("--objective", "ndcg@-3"),
                                           ("--objective", "mrr@5")])
def test_a_timeout_not_above_zero_or_a_cutoff_below_one_is_refused_before_any_work(tmp_path, monkeypatch, option,
                                                                                    value):
    no_data_loads(monkeypatch)
    results = tmp_path / "r"
    res = CliRunner().invoke(main, ["tune", "--models", "fm", "--trials", "1", *SYNTH, "--no-progress",
                                    option, value, "--results-dir", str(results)])
    assert res.exit_code == 2 and option in res.output and "Traceback" not in res.output, res.output
    assert not results.exists()


def test_data_leaving_nothing_to_evaluate_is_refused_before_any_study_exists(tmp_path):
    results = tmp_path / "r"
    res = CliRunner().invoke(main, ["tune", "--models", "fm", "--trials", "1", *SYNTH, "--min-interactions", "100000",
                                    "--no-progress", "--results-dir", str(results)])
    assert res.exit_code == 2 and "nothing to evaluate" in res.output, res.output
    assert not (results / "optuna.db").exists()


def test_an_objective_cutoff_is_read_as_a_number(tmp_path, monkeypatch):
    seen = {}

    def record(cfg, *args):
        seen["objective"] = cfg.objective
        return optuna.create_study(direction="maximize")

    monkeypatch.setattr(tuner_mod, "tune", record)
    res = CliRunner().invoke(main, ["tune", "--models", "fm", *SYNTH, "--objective", "hr@010", "--no-progress",
                                    "--results-dir", str(tmp_path)])
    assert res.exit_code == 0 and seen["objective"] == "HR@10", res.output


# ---- Ctrl-C ----

def test_a_trial_aborted_by_ctrl_c_is_lost_not_counted_and_retried(tmp_path, monkeypatch):
    """A second Ctrl-C (or SIGTERM) aborts the running trial: it says nothing about its configuration."""
    cfg = config(tmp_path, trials=2)

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(tuner_mod, "train", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tune(cfg)
    study = open_study(cfg)
    (aborted,) = lost(study)
    assert "interrupted (KeyboardInterrupt (Ctrl-C))" in aborted.user_attrs["fail_reason"] and not counts(aborted)
    (queued,) = study.get_trials(states=(TrialState.WAITING,))
    assert queued.user_attrs["retry_of"] == aborted.number and queued.params == aborted.params
    monkeypatch.undo()
    tune(cfg)
    assert finished(study) == 2 and not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))


@posix
def test_ctrl_c_during_n_jobs_2_stops_after_the_current_trials_with_130_and_confirms_nothing(tmp_path):
    """It stopped the workers and then trained the confirmation seeds, and saved best params from a half study."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    cmd = [sys.executable, "-m", "bench", "tune", "--models", "fm", "--trials", "30", "--study", "s",
           "--storage", url, *SYNTH, "--epochs", "2", "--no-progress", "--threads", "1", "--n-jobs", "2",
           "--confirm-top", "1", "--confirm-seeds", "1", "--results-dir", str(tmp_path)]
    log = tmp_path / "tune.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=worker_env(), stdout=out,
                                stderr=subprocess.STDOUT)
    storage = open_url(url)
    try:
        deadline = time.monotonic() + 120
        while not _a_trial_under_way(storage):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(120) == 130, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "confirm trial" not in text and "interrupted (Ctrl-C): the study is kept" in text, text
    assert not (tmp_path / "best_params").exists()
    study = optuna.load_study(study_name="s-fm-cpu", storage=storage)
    assert 0 < finished(study) < 30 and not study.get_trials(states=(TrialState.RUNNING,))


def _a_trial_under_way(storage) -> bool:
    try:
        study = optuna.load_study(study_name="s-fm-cpu", storage=storage)
    except KeyError:
        return False
    return any(t.user_attrs.get("worker") for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


# ---- more workers than cores ----

@pytest.mark.parametrize("cores, n_jobs, threads, warned", [
    (2, 4, None, "--n-jobs 4 exceeds the 2 CPU core(s) available: each worker gets 1 torch thread(s)"),
    (4, 2, "4", "--n-jobs 2 x --threads 4 exceeds the 4 CPU core(s) available"),
    (4, 2, None, None),
])
def test_more_workers_than_cores_warns_in_one_line_and_goes_on(tmp_path, monkeypatch, cores, n_jobs, threads, warned):
    monkeypatch.setattr(tuner_mod, "cpu_count", lambda: cores)
    ran = []
    monkeypatch.setattr(tuner_mod, "tune", lambda cfg, *a: ran.append(cfg) or optuna.create_study(direction="maximize"))
    res = CliRunner().invoke(main, ["tune", "--models", "fm", *SYNTH, "--no-progress", "--n-jobs", str(n_jobs),
                                    *(["--threads", threads] if threads else []), "--results-dir", str(tmp_path)])
    assert res.exit_code == 0 and [cfg.n_jobs for cfg in ran] == [n_jobs], res.output
    lines = [line for line in res.stderr.splitlines() if "CPU core" in line]
    if warned is None:
        assert not lines, res.stderr
    else:
        assert len(lines) == 1 and lines[0].startswith("warning: ") and warned in lines[0], res.stderr
