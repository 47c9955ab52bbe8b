"""`bench run` / `bench report` end to end on small synthetic data, and the store's guarantees."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from conftest import SYNTH

import bench.runner as runner_mod
from bench.cli import main
from bench.config import ExperimentConfig, ModelConfig, TrainConfig, apply_sets
from bench.results.store import ResultStore
from bench.runner import run_benchmark

FAST = ["--epochs", "2", "--batch-size", "512", "--fm-dim", "8", "--no-progress"]


def invoke(*args):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result


def test_run_prints_json_leaderboard_and_report_rebuilds_it(tmp_path):
    res = invoke("run", "--models", "deepfm,neumf,mostpop", "--seeds", "1,2", *SYNTH, *FAST,
                 "--results-dir", str(tmp_path), "--format", "json")
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert {r["model"] for r in rows} == {"deepfm", "neumf", "mostpop"}
    for r in rows:
        for name in ("HR@5", "NDCG@10", "Recall@20", "MAP@10", "MRR"):
            assert set(r[name]) == {"mean", "std", "ci_low", "ci_high"} and 0 <= r[name]["mean"] <= 1
            assert r[name]["ci_low"] <= r[name]["mean"] <= r[name]["ci_high"]
        assert r["seeds"] == 2
    report = invoke("report", "--results-dir", str(tmp_path), "--format", "json")
    assert json.loads(report.stdout) == rows


def test_run_prints_comparison_against_the_baseline_and_writes_markdown(tmp_path):
    out = tmp_path / "board.md"
    res = invoke("run", "--models", "fm,mostpop", *SYNTH, *FAST, "--baseline", "mostpop",
                 "--results-dir", str(tmp_path), "--output", str(out))
    assert res.exit_code == 0, res.output
    comparison = [line for line in res.stdout.splitlines() if line.startswith("| fm ") and "NDCG@10" in line]
    assert "p (Holm)" in res.stdout and "| mostpop " in res.stdout and len(comparison) == 1
    text = out.read_text()
    assert text.startswith("# synthetic[") and "bench run --models fm,mostpop" in text
    assert "| model" in text and "Against the mostpop baseline" in text and comparison[0] in text
    assert "training negatives `uniform`," in text


def test_unknown_model_is_a_clear_cli_error(tmp_path):
    res = CliRunner().invoke(main, ["run", "--models", "deepfn", *SYNTH, "--results-dir", str(tmp_path)])
    assert res.exit_code != 0
    assert "Did you mean 'deepfm'?" in res.output and "xdeepfm" in res.output


def test_set_overrides_reach_model_and_trainer(tmp_path, monkeypatch):
    deepfm, fm = apply_sets((ModelConfig("deepfm"), ModelConfig("fm")),
                            ["deepfm.dropout=0.1", "train.lr=0.01", "deepfm.mlp=[16,8]"])
    assert (deepfm.params, deepfm.train) == ({"dropout": 0.1, "mlp": [16, 8]}, {"lr": 0.01})
    assert (fm.params, fm.train) == ({}, {"lr": 0.01})
    with pytest.raises(ValueError, match="MODEL.PARAM=VALUE"):
        apply_sets((ModelConfig("deepfm"),), ["dropout=0.1"])
    res = invoke("run", "--models", "deepfm", *SYNTH, *FAST, "--set", "deepfm.mlp=[16]", "--set",
                 "deepfm.lr=0.005", "--results-dir", str(tmp_path), "--format", "json")
    assert res.exit_code == 0, res.output
    run = ResultStore(tmp_path).runs()[0]
    assert run.config["model"]["params"] == {"mlp": [16]} and run.config["train"]["lr"] == 0.005


def test_interrupted_run_leaves_finished_runs_and_a_readable_store(tmp_path, small_data, monkeypatch):
    store = ResultStore(tmp_path)
    original = runner_mod.train
    calls = {"n": 0}

    def train_then_interrupt(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(*args, **kw)

    monkeypatch.setattr(runner_mod, "train", train_then_interrupt)
    config = ExperimentConfig(train=TrainConfig(epochs=1), device="cpu",
                              models=(ModelConfig("fm", embed_dim=8), ModelConfig("deepfm", embed_dim=8)))
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(config, store, data=small_data, log=lambda m: None)
    runs = ResultStore(tmp_path).runs()
    assert [(r.model, r.status) for r in runs] == [("fm", "finished"), ("deepfm", "interrupted")]
    assert runs[0].metrics["NDCG@10"] >= 0 and len(runs[0].per_user["NDCG@10"]) == len(runs[0].users)


def test_failed_run_is_recorded_with_reason_and_others_go_on(tmp_path, small_data, monkeypatch):
    import torch

    original = runner_mod.build_model

    def poisoned(model_cfg, data):
        model = original(model_cfg, data)
        if model_cfg.name == "deepfm":
            with torch.no_grad():
                model.bias.fill_(float("nan"))
        return model

    monkeypatch.setattr(runner_mod, "build_model", poisoned)
    store = ResultStore(tmp_path)
    config = ExperimentConfig(train=TrainConfig(epochs=1), device="cpu",
                              models=(ModelConfig("deepfm", embed_dim=8), ModelConfig("fm", embed_dim=8)))
    outcome = run_benchmark(config, store, data=small_data, log=lambda m: None)
    runs = store.runs()
    assert [(r.model, r.status) for r in runs] == [("deepfm", "failed"), ("fm", "finished")]
    assert "NaNLossError" in runs[0].reason and outcome.finished == [runs[1].id]
    assert [(f.model, f.seed) for f in outcome.failures] == [("deepfm", 1)]
    assert "NaNLossError" in outcome.failures[0].reason


def test_report_filters_and_plots(tmp_path):
    invoke("run", "--models", "fm,mostpop", *SYNTH, *FAST, "--results-dir", str(tmp_path))
    res = invoke("report", "--results-dir", str(tmp_path), "--models", "fm", "--format", "csv", "--plot")
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines()[0].startswith("model,HR@5") and "mostpop" not in res.stdout
    assert (tmp_path / "plots" / "training_curves.png").stat().st_size > 0
    assert (tmp_path / "plots" / "metrics_by_model.png").stat().st_size > 0
    empty = CliRunner().invoke(main, ["report", "--results-dir", str(tmp_path), "--models", "neumf"])
    assert empty.exit_code != 0 and "no finished runs" in empty.output


def test_report_refuses_to_mix_evaluation_setups(tmp_path):
    invoke("run", "--models", "mostpop", *SYNTH, *FAST, "--results-dir", str(tmp_path))
    invoke("run", "--models", "mostpop", *SYNTH, *FAST, "--protocol", "sampled", "--eval-negatives", "20",
           "--results-dir", str(tmp_path))
    mixed = CliRunner().invoke(main, ["report", "--results-dir", str(tmp_path)])
    assert mixed.exit_code == 2 and "protocol cards differ (candidates and masks: full ranking" in mixed.output
    anyway = CliRunner().invoke(main, ["report", "--results-dir", str(tmp_path), "--mixed"])
    assert anyway.exit_code == 2 and "model mostpop has runs under different protocol cards" in anyway.output
    full = invoke("report", "--results-dir", str(tmp_path), "--protocol", "full", "--format", "json")
    sampled = invoke("report", "--results-dir", str(tmp_path), "--protocol", "sampled", "--format", "json")
    assert json.loads(full.stdout)[0]["HR@10"]["mean"] < json.loads(sampled.stdout)[0]["HR@10"]["mean"]
    run = [r for r in ResultStore(tmp_path).runs() if r.protocol == "sampled"][0]
    assert run.num_negatives == 20 and run.timings["test_candidates_mean"] <= 21


def test_sampler_options_reach_the_sampler_and_are_recorded(tmp_path):
    res = invoke("run", "--models", "fm", *SYNTH, *FAST, "--sampler", "popularity", "--sampler-opt", "alpha=0.5",
                 "--sampler-opt", "exclude_held_out=true", "--results-dir", str(tmp_path), "--format", "json",
                 "--output", str(tmp_path / "page.md"))
    assert res.exit_code == 0, res.output
    train = ResultStore(tmp_path).runs()[0].config["train"]
    assert train["sampler"] == "popularity" and train["sampler_options"] == {"alpha": 0.5, "exclude_held_out": True}
    # the page says how the negatives were drawn, so a leaky comparison cannot pass for a leaderboard
    assert "training negatives `popularity alpha=0.5 exclude_held_out=True`," in (tmp_path / "page.md").read_text()


@pytest.mark.parametrize("option, value, message", [
    ("--sampler-opt", "nope=1", "--sampler-opt: uniform sampler: unknown options ['nope']; known: exclude_held_out"),
    ("--sampler-opt", "exclude_held_out=maybe", "exclude_held_out must be true or false"),
    ("--sampler", "nope", "unknown sampler 'nope'. Known samplers: popularity, uniform"),
    ("--epochs", "0", "--epochs: expected an integer >= 1"),
    ("--batch-size", "0", "--batch-size: expected an integer >= 1"),
    ("--lr", "-1", "--lr: expected a number >= 0"),
    ("--lr", "0", "--lr: expected a positive number"),
    ("--k", "0,10", "--k: "),
    ("--set", "train.val_metric=AUC", "--val-metric: expected MRR or one of"),
    ("--set", "fm.lr=-1", "--lr: expected a number >= 0"),
])
def test_bad_training_options_fail_before_any_work(tmp_path, option, value, message):
    res = CliRunner().invoke(main, ["run", "--models", "fm", *SYNTH, option, value, "--results-dir", str(tmp_path)])
    assert res.exit_code != 0 and message in res.output
    assert "seed 1" not in res.output  # refused up front, not run by run
    assert not (tmp_path / "bench.db").exists() or ResultStore(tmp_path).runs() == []
