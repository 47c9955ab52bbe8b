"""MLflow tracking (issue 28) against a real `mlflow server` started here on 127.0.0.1, read back with MLflow's own
client: runs and trials, their params, per-epoch metrics, intervals, tags and artifacts; and a server that is down
or fails mid-run costs only the tracking, with one warning."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import SYNTH

from bench.cli import main
from bench.results.store import ResultStore

FAST = ["--epochs", "2", "--batch-size", "512", "--embed-dim", "8", "--no-progress"]

try:
    import mlflow
except ImportError:  # under CI the extra is installed: a missing one fails
    if os.environ.get("CI"):
        raise
    pytest.skip("MLflow is not installed: pip install -e '.[mlflow]' (CI installs it)", allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real MLflow tracking server on a free local port, with a throw-away SQLite backend."""
    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                             "--backend-store-uri", f"sqlite:///{root / 'db.sqlite'}", "--default-artifact-root",
                             str(root / "artifacts"), "--workers", "1"], stdout=subprocess.DEVNULL,
                            stderr=open(root / "server.log", "w"), cwd=root)
    uri = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if urllib.request.urlopen(f"{uri}/health", timeout=1).status == 200:
                    break
            except OSError:
                time.sleep(0.5)
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited: {(root / 'server.log').read_text()[-2000:]}")
        else:
            pytest.fail("mlflow server did not answer in 150 s")
        yield uri
    finally:
        proc.terminate()
        proc.wait(30)


def _runs(uri: str) -> list:
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("deepfm-bench")
    return client, client.search_runs([experiment.experiment_id])


def test_a_run_is_logged_to_a_real_server_and_read_back(server, tmp_path):
    res = CliRunner().invoke(main, ["run", "--models", "fm,mostpop", "--baseline", "mostpop", "--lr", "0.002",
                                    *SYNTH, *FAST, "--results-dir", str(tmp_path), "--track", f"mlflow={server}"])
    assert res.exit_code == 0, res.output
    assert "warning" not in res.stderr
    client, runs = _runs(server)
    stored = {r.model: r for r in ResultStore(tmp_path).runs()}
    fm = next(r for r in runs if r.info.run_name == "fm seed 1")
    parent = next(r for r in runs if r.info.run_id == fm.data.tags["mlflow.parentRunId"])
    assert parent.info.run_name == "bench run fm,mostpop" and parent.info.status == "FINISHED"
    assert fm.data.params["train.lr"] == "0.002" and fm.data.params["data.dataset"] == "synthetic"
    assert fm.data.tags["run_id"] == str(stored["fm"].id)
    assert fm.data.tags["data_checksum"] == stored["fm"].config["data_checksum"] and "git_commit" in fm.data.tags
    assert fm.data.metrics["HR_10"] == pytest.approx(stored["fm"].metrics["HR@10"])
    assert fm.data.metrics["HR_10_ci_low"] <= fm.data.metrics["HR_10"] <= fm.data.metrics["HR_10_ci_high"]
    history = client.get_metric_history(fm.info.run_id, "val_NDCG_10")
    assert [m.step for m in history] == [1, 2]
    assert [m.value for m in history] == pytest.approx([row["val_NDCG@10"] for row in stored["fm"].history])
    artifacts = {a.path for a in client.list_artifacts(fm.info.run_id)}
    assert "per_user.csv" in artifacts and any(a.endswith(".safetensors") for a in artifacts)
    assert "leaderboard.md" in {a.path for a in client.list_artifacts(parent.info.run_id)}


def test_a_study_logs_each_trial_as_a_nested_run(server, tmp_path):
    res = CliRunner().invoke(main, ["tune", "--models", "fm", "--trials", "2", "--confirm-top", "0", *SYNTH, *FAST,
                                    "--results-dir", str(tmp_path), "--track", f"mlflow={server}"])
    assert res.exit_code == 0, res.output
    _, runs = _runs(server)
    trials = [r for r in runs if r.info.run_name.startswith("trial ") and r.data.tags.get("mlflow.parentRunId")
              and any(p.info.run_id == r.data.tags["mlflow.parentRunId"] and "-fm-" in p.info.run_name for p in runs)]
    assert len(trials) >= 2 and all(t.info.status in ("FINISHED", "KILLED") for t in trials)
    assert all("lr" in t.data.params and "value" in t.data.metrics for t in trials if t.info.status == "FINISHED")


def test_a_server_that_is_down_costs_only_the_tracking(tmp_path):
    down = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    res = CliRunner().invoke(main, ["run", "--models", "mostpop", "--baseline", "mostpop", *SYNTH, *FAST,
                                    "--results-dir", str(tmp_path), "--track", f"mlflow={down}"])
    assert res.exit_code == 0, res.output
    warnings = [line for line in res.stderr.splitlines() if line.startswith("warning: --track")]
    assert len(warnings) == 1 and "without tracking" in warnings[0]
    assert [r.status for r in ResultStore(tmp_path).runs()] == ["finished"]


def test_a_tracking_failure_mid_run_warns_once_and_the_runs_finish(tmp_path, monkeypatch):
    calls = {"n": 0}
    original = mlflow.MlflowClient.log_batch

    def flaky(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:  # the server goes away after the first batches
            raise ConnectionError("server went away")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(mlflow.MlflowClient, "log_batch", flaky)
    res = CliRunner().invoke(main, ["run", "--models", "fm,mostpop", "--baseline", "mostpop", *SYNTH, *FAST,
                                    "--results-dir", str(tmp_path), "--track", "mlflow"])
    assert res.exit_code == 0, res.output
    assert res.stderr.count("warning: --track") == 1 and "server went away" in res.stderr
    assert sorted(r.status for r in ResultStore(tmp_path).runs()) == ["finished", "finished"]


def test_the_local_store_lies_under_the_results_folder(tmp_path):
    res = CliRunner().invoke(main, ["run", "--models", "mostpop", "--baseline", "mostpop", *SYNTH, *FAST,
                                    "--results-dir", str(tmp_path), "--track", "mlflow"])
    assert res.exit_code == 0, res.output
    _, runs = _runs(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert {r.info.run_name for r in runs} == {"bench run mostpop", "mostpop seed 1"}
    assert (tmp_path / "mlartifacts").is_dir()


def test_track_without_mlflow_or_with_a_bad_value_is_one_line(tmp_path, monkeypatch):
    bad = CliRunner().invoke(main, ["run", "--models", "mostpop", "--track", "wandb", "--results-dir", str(tmp_path)])
    assert bad.exit_code == 2 and "--track 'wandb': expected mlflow or mlflow=URI" in bad.output
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if the extra were not installed
    missing = CliRunner().invoke(main, ["run", "--models", "mostpop", "--track", "mlflow", "--results-dir",
                                        str(tmp_path)])
    assert missing.exit_code == 2 and 'pip install "deepfm-bench[mlflow]"' in missing.output
    assert not Path(tmp_path / "bench.db").exists()
