"""The same command with the same seed gives identical metrics, and `bench run --rerun RUN_ID` repeats a
stored run from its recorded configuration exactly."""

from __future__ import annotations

import json

from click.testing import CliRunner
from conftest import SYNTH

from bench.cli import main
from bench.results.store import ResultStore

ARGS = ["run", "--models", "deepfm+history,ease", "--baseline", "ease", *SYNTH, "--epochs", "3", "--batch-size",
        "256", "--embed-dim", "8", "--history", "4", "--no-progress", "--format", "json"]


def test_the_same_command_twice_gives_identical_metrics(tmp_path):
    first = CliRunner().invoke(main, [*ARGS, "--results-dir", str(tmp_path / "a")])
    second = CliRunner().invoke(main, [*ARGS, "--results-dir", str(tmp_path / "b")])
    assert first.exit_code == second.exit_code == 0, first.output
    a, b = ResultStore(tmp_path / "a").runs(), ResultStore(tmp_path / "b").runs()
    assert [r.metrics for r in a] == [r.metrics for r in b] and len(a) == 2
    assert all((x.per_user[k] == y.per_user[k]).all() for x, y in zip(a, b, strict=True) for k in x.per_user)


def test_rerun_repeats_a_stored_run_exactly_from_its_record(tmp_path):
    res = CliRunner().invoke(main, [*ARGS, "--set", "deepfm+history.dropout=0.3", "--set", "train.lr=2e-3",
                                    "--results-dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    original = next(r for r in ResultStore(tmp_path).runs() if r.model == "deepfm+history")
    record = original.config
    assert record["model"]["params"] == {"dropout": 0.3} and record["train"]["lr"] == 2e-3
    assert record["data"]["history"] == 4 and record["data_checksum"] and original.git_commit
    assert {"torch", "numpy", "python", "threads"} <= set(original.versions)
    again = CliRunner().invoke(main, ["run", "--rerun", str(original.id), "--no-progress", "--format", "json",
                                      "--results-dir", str(tmp_path)])
    assert again.exit_code == 0, again.output
    assert f"rerun of run {original.id} as run" in again.stderr and "every metric identical" in again.stderr
    rerun = ResultStore(tmp_path).runs()[-1]
    assert rerun.metrics == original.metrics and rerun.config["train"] == record["train"]
    assert rerun.config["model"]["params"] == record["model"]["params"] and rerun.config["data"] == record["data"]
    assert json.loads(again.stdout)[0]["model"] == "deepfm+history"


def test_rerun_of_a_missing_run_is_one_line(tmp_path):
    CliRunner().invoke(main, ["run", "--models", "mostpop", *SYNTH, "--no-progress", "--results-dir", str(tmp_path)])
    res = CliRunner().invoke(main, ["run", "--rerun", "99", "--results-dir", str(tmp_path)])
    assert res.exit_code == 2 and "--rerun 99: no run 99" in res.output


def test_deterministic_runs_in_torchs_deterministic_mode_and_is_recorded(tmp_path, monkeypatch):
    """--deterministic switches torch's deterministic algorithms on for the run (on CPU the metrics do not
    change: its ops are deterministic already), records it, and the next run without it switches them off."""
    import torch

    import bench.runner as runner

    seen: list[bool] = []
    real_train = runner.train

    def spying_train(*args, **kwargs):
        seen.append(torch.are_deterministic_algorithms_enabled())
        return real_train(*args, **kwargs)

    monkeypatch.setattr(runner, "train", spying_train)
    base = ["run", "--models", "fm", *SYNTH, "--epochs", "2", "--embed-dim", "8", "--no-progress"]
    on = CliRunner().invoke(main, [*base, "--deterministic", "--results-dir", str(tmp_path / "on")])
    off = CliRunner().invoke(main, [*base, "--results-dir", str(tmp_path / "off")])
    assert on.exit_code == off.exit_code == 0, on.output
    assert seen == [True, False] and not torch.are_deterministic_algorithms_enabled()
    a, b = ResultStore(tmp_path / "on").runs()[0], ResultStore(tmp_path / "off").runs()[0]
    assert a.config["train"]["deterministic"] is True and b.config["train"]["deterministic"] is False
    assert a.metrics == b.metrics
