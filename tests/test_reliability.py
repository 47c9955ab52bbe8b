"""Issue 11: a failed run never shows up as a result, bad input is refused before any work, and a run
whose process dies (SIGTERM, SIGKILL) does not stay 'running' forever."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import torch
from click.testing import CliRunner
from conftest import SYNTH, worker_env

import bench.results.store as store_mod
import bench.runner as runner_mod
from bench.cli import main
from bench.results.store import ResultStore

FAST = ["--epochs", "2", "--batch-size", "512", "--fm-dim", "8", "--no-progress"]


def invoke(*args):
    return CliRunner().invoke(main, list(args))


def poison(monkeypatch, *names):
    """Models of these names train to a NaN loss, so their runs fail at run time."""
    original = runner_mod.build_model

    def build(model_cfg, data):
        model = original(model_cfg, data)
        if model_cfg.name in names:
            with torch.no_grad():
                for p in model.parameters():
                    p.fill_(float("nan"))
        return model

    monkeypatch.setattr(runner_mod, "build_model", build)


def test_an_invocation_whose_runs_all_fail_prints_no_earlier_results_and_exits_1(tmp_path, monkeypatch):
    first = invoke("run", "--models", "fm,neumf", "--baseline", "neumf", *SYNTH, *FAST, "--results-dir", str(tmp_path))
    assert first.exit_code == 0 and "| fm" in first.stdout
    poison(monkeypatch, "deepfm")
    second = invoke("run", "--models", "deepfm", "--baseline", "neumf", *SYNTH, *FAST, "--results-dir", str(tmp_path))
    assert second.exit_code == 1
    assert second.stdout == ""  # no table at all: nothing of this invocation finished
    assert "| fm" not in second.output and "| neumf" not in second.output
    assert "1 of 1 runs FAILED" in second.stderr and "deepfm seed 1: NaNLossError" in second.stderr
    assert "Traceback" not in second.output


def test_all_runs_failing_on_an_empty_store_is_a_summary_not_a_traceback(tmp_path, monkeypatch):
    poison(monkeypatch, "fm", "neumf")
    res = invoke("run", "--models", "fm,neumf", *SYNTH, *FAST, "--results-dir", str(tmp_path))
    assert res.exit_code == 1 and "Traceback" not in res.output and res.exception is None or \
        isinstance(res.exception, SystemExit)
    assert "2 of 2 runs FAILED" in res.stderr


def test_one_failed_run_shows_the_others_and_exits_1_with_a_summary(tmp_path, monkeypatch):
    poison(monkeypatch, "deepfm")
    res = invoke("run", "--models", "fm,deepfm,mostpop", "--seeds", "1,2", "--baseline", "mostpop", *SYNTH, *FAST,
                 "--results-dir", str(tmp_path), "--format", "json")
    assert res.exit_code == 1
    assert {r["model"] for r in json.loads(res.stdout)} == {"fm", "mostpop"}
    assert "2 of 6 runs FAILED" in res.stderr
    assert "deepfm seed 1: NaNLossError" in res.stderr and "deepfm seed 2: NaNLossError" in res.stderr
    statuses = sorted((r.model, r.status) for r in ResultStore(tmp_path).runs())
    assert statuses.count(("deepfm", "failed")) == 2


def test_a_missing_baseline_is_one_line_not_a_missing_table(tmp_path):
    res = invoke("run", "--models", "fm", "--baseline", "neumf", *SYNTH, *FAST, "--results-dir", str(tmp_path))
    assert res.exit_code == 0
    assert "baseline neumf has no finished run here; add it to --models or pass --baseline" in res.stderr
    assert "| fm" in res.stdout


@pytest.mark.parametrize("args, message", [
    (["--set", "deepfm.dropout=abc"], "model deepfm: dropout: expected a number in [0, 1), got 'abc'"),
    (["--set", "deepfm.dropout=2"], "model deepfm: dropout: expected a number in [0, 1), got 2"),
    (["--set", "deepfm.embed_dim=0"], "model deepfm: embed_dim: expected an integer >= 1, got 0"),
    (["--set", "deepfm.mlp=[64,0]"], "model deepfm: mlp: expected positive widths"),
    (["--set", "deepfm.dropot=0.1"], "model deepfm: unknown option 'dropot' (did you mean 'dropout'?)"),
    (["--set", "neumf.mlp_dim=abc"], "model neumf: mlp_dim: expected an integer >= 1, got 'abc'"),
    (["--set", "neumf.nope=1"], "model neumf: unknown option 'nope'; its options: embed_dim, mlp_dim, mlp, dropout"),
    (["--set", "train.dropout=0.1"], "'dropout' is not a training option"),
    (["--fm-dim", "0"], "--fm-dim"),
    (["--threads", "0"], "--threads"),
    (["--threads", "-3"], "--threads"),
    (["--seeds", "-1"], "--seeds: expected integers >= 0"),
    (["--interactions", "fm,nope"], "unknown interaction 'nope'"),
])
def test_bad_options_are_refused_before_any_work(tmp_path, args, message):
    models = "neumf,deepfm" if any("neumf" in a for a in args) else "deepfm,fm"
    res = invoke("run", "--models", models, *SYNTH, *FAST, *args, "--results-dir", str(tmp_path / "r"))
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output
    assert "seed 1" not in res.output  # nothing was trained
    assert not (tmp_path / "r").exists()  # no store was created


def test_results_dir_and_output_are_checked_before_any_work(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    res = invoke("run", "--models", "fm", *SYNTH, *FAST, "--results-dir", str(afile))
    assert res.exit_code == 2 and "is a file" in res.output
    res = invoke("run", "--models", "fm", *SYNTH, *FAST, "--results-dir", str(tmp_path / "r"),
                 "--output", str(afile / "page.md"))
    assert res.exit_code == 2 and f"{afile} is not a writable folder" in res.output and "seed 1" not in res.output
    assert not (tmp_path / "r").exists()
    res = invoke("run", "--models", "fm", *SYNTH, *FAST, "--results-dir", str(afile / "r"))
    assert res.exit_code == 2 and "is not a writable folder" in res.output and "seed 1" not in res.output


def test_a_data_load_failure_creates_no_store(tmp_path):
    res = invoke("run", "--models", "fm", "--dataset", "synthetic", "--dataset-opt", "n_users=0",
                 "--results-dir", str(tmp_path / "r"))
    assert res.exit_code == 2 and "n_users" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "r").exists()


def test_a_corrupt_store_is_one_line_naming_the_file(tmp_path):
    (tmp_path / "bench.db").write_bytes(b"this is not a database at all" * 100)
    for command in (["run", "--models", "fm", *SYNTH, *FAST], ["report"]):
        res = invoke(*command, "--results-dir", str(tmp_path))
        assert res.exit_code == 2 and "Traceback" not in res.output
        assert str(tmp_path / "bench.db") in res.output and "not a usable results store" in res.output
        assert "seed 1" not in res.output


def test_a_full_disk_fails_the_run_with_one_line_naming_the_store(tmp_path, monkeypatch):
    invoke("run", "--models", "mostpop", *SYNTH, *FAST, "--results-dir", str(tmp_path))
    original = ResultStore._connect

    def full(self):  # the store may not grow by a single page: SQLite's own "database or disk is full"
        conn = original(self)
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")
        return conn

    monkeypatch.setattr(ResultStore, "_connect", full)
    res = invoke("run", "--models", "fm", *SYNTH, *FAST, "--results-dir", str(tmp_path))
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert f"{tmp_path / 'bench.db'}: the disk is full" in res.stderr and "this was not recorded" in res.stderr


def test_a_page_that_cannot_be_written_leaves_nothing_half_written(tmp_path, monkeypatch):
    def no_space(fd):  # the page's bytes reach the disk when synced: a full disk says so there
        raise OSError(28, "No space left on device")

    page = tmp_path / "page.md"
    monkeypatch.setattr(store_mod.os, "fsync", no_space)
    res = invoke("run", "--models", "mostpop", *SYNTH, *FAST, "--results-dir", str(tmp_path), "--output", str(page),
                 "--no-checkpoint")
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert f"{page}: the disk is full; nothing was written" in res.output
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith("bench.db")] == []  # no page, no temp file


def test_non_finite_scores_fail_the_run(tmp_path, monkeypatch):
    original = runner_mod.build_model

    def explode(model_cfg, data):
        model = original(model_cfg, data)
        model.score = lambda states, items: torch.full((len(states), len(items)), float("inf"))
        return model

    monkeypatch.setattr(runner_mod, "build_model", explode)
    res = invoke("run", "--models", "mostpop", *SYNTH, *FAST, "--results-dir", str(tmp_path))
    assert res.exit_code == 1 and "NaN or infinite scores" in res.stderr
    assert [r.status for r in ResultStore(tmp_path).runs()] == ["failed"]


def test_a_diverging_loss_is_flagged_in_the_run_and_the_tables(tmp_path):
    res = invoke("run", "--models", "fm", *SYNTH, "--epochs", "2", "--lr", "10", "--fm-dim", "8", "--no-progress",
                 "--results-dir", str(tmp_path))
    run = ResultStore(tmp_path).runs()[0]  # the loss stays finite (hundreds), so the run finishes, flagged
    assert res.exit_code == 0 and run.status == "finished"
    assert run.notes and "training loss rose from" in run.notes[0]
    assert "| fm (!)" in res.stdout and "(!) fm seed 1: training loss rose from" in res.stdout


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "bench", *args]


def _wait_for_running(results_dir, proc, timeout=120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        db = results_dir / "bench.db"
        if db.exists():
            try:
                with sqlite3.connect(db) as conn:
                    if conn.execute("SELECT COUNT(*) FROM runs WHERE status='running'").fetchone()[0]:
                        time.sleep(1.0)  # into training
                        return
            except sqlite3.Error:
                pass
        time.sleep(0.2)
    raise AssertionError("no run started")


SLOW = [*SYNTH, "--models", "fm", "--epochs", "200", "--patience", "200", "--batch-size", "64", "--no-progress",
        "--threads", "1"]


def test_sigterm_marks_the_run_interrupted_and_exits_143(tmp_path):
    proc = subprocess.Popen(_cli("run", *SLOW, "--results-dir", str(tmp_path)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=worker_env())
    _wait_for_running(tmp_path, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    (run,) = ResultStore(tmp_path).runs()
    assert run.status == "interrupted" and run.reason == "SIGTERM"


def test_a_killed_run_is_found_dead_and_reported_interrupted(tmp_path):
    proc = subprocess.Popen(_cli("run", *SLOW, "--results-dir", str(tmp_path)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=worker_env())
    _wait_for_running(tmp_path, proc)
    proc.kill()
    proc.wait(timeout=30)
    store = ResultStore(tmp_path)  # opening the store recognises the dead process
    (run,) = store.runs()
    assert run.status == "interrupted" and f"pid {proc.pid}" in run.reason and "died" in run.reason
    assert store.recovered == [run.id]
    res = invoke("report", "--results-dir", str(tmp_path))
    assert res.exit_code == 2 and "no finished runs" in res.output
    assert "interrupted" in res.stderr and "died" in res.stderr


def test_a_live_run_of_another_process_is_left_running(tmp_path):
    store = ResultStore(tmp_path)
    run_id = store.start_run(dataset="d", model="m", seed=1, device="cpu", protocol="full", ties="expected",
                             num_negatives=None, config={}, versions={}, git_commit=None)
    with sqlite3.connect(tmp_path / "bench.db") as conn:  # as if another live process (pid 1) owned it
        conn.execute("UPDATE runs SET pid = 1, pid_started = NULL WHERE id = ?", (run_id,))
    assert ResultStore(tmp_path).runs()[0].status == "running"
    with sqlite3.connect(tmp_path / "bench.db") as conn:  # pid 1 again, but a different process start time
        conn.execute("UPDATE runs SET pid_started = 'not-its-start' WHERE id = ?", (run_id,))
    if store_mod._process_started(1) is not None:
        assert ResultStore(tmp_path).runs()[0].status == "interrupted"


def test_an_empty_id_list_selects_no_runs(tmp_path):
    invoke("run", "--models", "mostpop", *SYNTH, *FAST, "--results-dir", str(tmp_path))
    store = ResultStore(tmp_path)
    assert store.runs(ids=[]) == [] and len(store.runs()) == 1
