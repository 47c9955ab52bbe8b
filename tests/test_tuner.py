"""`bench tune`: studies complete, resume, share work between processes, survive failures, prune."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import optuna
import pytest
from click.testing import CliRunner
from conftest import SYNTH, tune_config, worker_env
from optuna.trial import TrialState

import bench.train.trainer as trainer_mod
import bench.tune.storage as storage_mod
import bench.tune.study as tuner_mod
from bench.cli import main
from bench.config import TrainConfig
from bench.eval.evaluator import EvalResult
from bench.tune.best import load_best_params
from bench.tune.study import TuneConfig, open_study, tune

FAST = ["--epochs", "1", "--no-progress", "--threads", "1"]


def config(tmp_path, **kw) -> TuneConfig:
    return tune_config(tmp_path, **{"trials": 3, **kw})


def test_study_completes_saves_best_params_and_resumes(tmp_path):
    page = tmp_path / "tune.md"
    res = CliRunner().invoke(main, ["tune", "--models", "fm", "--trials", "3", *SYNTH, *FAST,
                                    "--results-dir", str(tmp_path), "--output", str(page)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    text = page.read_text()
    assert text.startswith("# Tuning results") and "bench tune --models fm --trials 3" in text
    assert "| trial" in text and "best_params" in text
    saved = json.loads((tmp_path / "best_params" / "synthetic[n_interactions=3000,n_items=90,n_users=60]-fm.json")
                       .read_text())
    assert saved["model"] == "fm" and {"lr", "weight_decay", "num_negatives", "embed_dim"} <= set(saved["params"])
    study = open_study(config(tmp_path))
    first = {t.number: t.params for t in study.get_trials()}
    assert len(first) == 3
    # the same command with a larger budget continues the study; nothing is repeated
    res = CliRunner().invoke(main, ["tune", "--models", "fm", "--trials", "5", *SYNTH, *FAST,
                                    "--results-dir", str(tmp_path)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    trials = open_study(config(tmp_path)).get_trials()
    assert len(trials) == 5 and {t.number: t.params for t in trials if t.number < 3} == first
    assert all(t.state == TrialState.COMPLETE for t in trials)
    # --params best feeds the tuned configuration to bench run
    params = load_best_params("best", str(tmp_path), config(tmp_path).experiment.data, ("fm", "neumf"))
    assert set(params) == {"fm"} and params["fm"][0] == "fm"  # (plugin, params)


@pytest.mark.parametrize("option, value, message", [
    ("--sampler-opt", "nope=1", "--sampler-opt: uniform sampler: unknown options ['nope']"),
    ("--sampler", "nope", "unknown sampler 'nope'. Known samplers: popularity, uniform"),
])
def test_bad_sampler_options_fail_before_any_trial(tmp_path, option, value, message):
    res = CliRunner().invoke(main, ["tune", "--models", "fm", "--trials", "2", *SYNTH, *FAST, option, value,
                                    "--results-dir", str(tmp_path)])
    assert res.exit_code != 0 and message in res.output
    assert "Traceback" not in res.output and not list(tmp_path.iterdir())  # no study was created


def test_params_best_reruns_tuned_next_to_defaults_and_baseline(tmp_path):
    best = tmp_path / "best.json"
    best.write_text(json.dumps({"model": "fm", "params": {"lr": 0.005, "fm_dim": 8}}))
    res = CliRunner().invoke(main, ["run", "--models", "fm", "--params", str(best), *SYNTH, *FAST,
                                    "--baseline", "mostpop", "--results-dir", str(tmp_path), "--format", "json"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert {r["model"] for r in json.loads(res.stdout)} == {"fm", "fm:tuned", "mostpop"}
    bad = CliRunner().invoke(main, ["run", "--models", "fm", "--params", str(tmp_path / "nope.json"), *SYNTH])
    assert bad.exit_code != 0 and "no such file" in bad.output


@pytest.mark.parametrize("storage", ["sqlite", "journal"])
def test_two_worker_processes_share_one_study_exactly(tmp_path, storage):
    url = f"sqlite:///{tmp_path / 'shared.db'}" if storage == "sqlite" else str(tmp_path / "shared.journal")
    cmd = [sys.executable, "-m", "bench", "tune", "--models", "fm", "--trials", "6", "--study", "shared",
           "--storage", url, *SYNTH, *FAST, "--results-dir", str(tmp_path)]
    workers = [subprocess.Popen(cmd, env=worker_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    outs = [w.communicate(timeout=300) for w in workers]
    assert all(w.returncode == 0 for w in workers), outs
    study = optuna.load_study(study_name="shared-fm-cpu", storage=storage_mod.open_url(url))
    real = [t for t in study.get_trials() if not t.user_attrs.get("surplus")]
    assert len(real) == 6 and all(t.state == TrialState.COMPLETE for t in real)
    # no configuration was trained twice, and no trial was left behind running
    assert len({json.dumps(t.params, sort_keys=True) for t in real}) == 6
    assert all(t.state != TrialState.RUNNING for t in study.get_trials())


def test_a_failing_trial_is_recorded_and_the_study_goes_on(tmp_path, monkeypatch):
    original = tuner_mod.build_model
    calls = {"n": 0}

    def flaky(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("CUDA out of memory (simulated)")
        return original(*args, **kw)

    monkeypatch.setattr(tuner_mod, "build_model", flaky)
    study = tune(config(tmp_path, trials=3))
    states = [t.state for t in study.get_trials()]
    assert states.count(TrialState.FAIL) == 1 and states.count(TrialState.COMPLETE) == 2
    failed = next(t for t in study.get_trials() if t.state == TrialState.FAIL)
    assert "out of memory" in failed.user_attrs["fail_reason"]


def test_pruning_prunes_a_hopeless_trial(tmp_path, monkeypatch):
    # trials 0-2 report 0.5 every epoch, trial 3 reports 0.01: the median pruner must stop it
    per_trial = iter([0.5] * 3 + [0.5] * 3 + [0.5] * 3 + [0.01] * 3)

    def scripted(model, data, *args, **kw):
        v = next(per_trial)
        return EvalResult(metrics={"NDCG@10": v}, per_user={}, users=None, n_candidates=0.0, protocol="full",
                          ties="expected", num_negatives=None, split="val", seconds=0.0, users_per_s=0.0)

    monkeypatch.setattr(trainer_mod, "evaluate", scripted)
    cfg = config(tmp_path, trials=4, pruner_startup=2)
    cfg = replace(cfg, experiment=replace(cfg.experiment, train=TrainConfig(epochs=3, patience=10)))
    study = tune(cfg)
    states = [t.state for t in sorted(study.get_trials(), key=lambda t: t.number)]
    assert states == [TrialState.COMPLETE] * 3 + [TrialState.PRUNED]
    assert len(study.get_trials()[3].intermediate_values) == 2  # stopped after epoch 2, not 3


def test_sweep_makes_plugin_choices_categorical(tmp_path):
    study = tune(config(tmp_path, trials=4, sweep=("interactions", "sampler")))
    trials = study.get_trials()
    assert all({"interactions", "sampler"} <= set(t.params) for t in trials)
    assert all(t.user_attrs["registry_model"] == "composed" for t in trials)
    assert all(t.state == TrialState.COMPLETE for t in trials)


def test_confirmation_retrains_the_top_trials_and_keeps_the_best_mean(tmp_path, monkeypatch):
    import bench.tune.confirm as confirm_mod
    from bench.runner import DataSource
    from bench.tune.best import save_best

    cfg = config(tmp_path, trials=4)
    study = tune(cfg)
    ranked = sorted((t for t in study.get_trials() if t.state == TrialState.COMPLETE), key=lambda t: -t.value)
    tuned = [t for t in ranked if not t.user_attrs.get("untuned")]
    lucky, steady = tuned[0].number, tuned[1].number
    # the search's best tuned trial was lucky: on new seeds the runner-up is better. The untuned trial (the
    # defaults) is confirmed wherever it ranks; `top` reaches the runner-up even when the defaults rank above it.
    top = next(i for i, t in enumerate(ranked) if t.number == steady) + 1
    untuned = next(t.number for t in ranked if t.user_attrs.get("untuned"))
    scripted = {lucky: [0.01, 0.02], steady: [0.5, 0.6], untuned: [0.0, 0.0]}
    calls = []

    def value(cfg_, plugin, params, seed, data, device):
        number = next(t.number for t in study.get_trials() if json.loads(t.user_attrs["run_params"]) == params)
        calls.append((number, seed))
        value = scripted[number][seed - cfg_.seed - confirm_mod.CONFIRM_SEED]
        return value, (value,) * 50  # every validation user alike: a clear difference

    monkeypatch.setattr(confirm_mod, "validation_value", value)
    confirmed = confirm_mod.confirm(study, cfg, top=top, seeds=2, data=DataSource(), device="cpu", log=lambda m: None)
    chosen = confirm_mod.choose(confirmed)
    assert chosen.trial == steady and abs(chosen.mean - 0.55) < 1e-12 and chosen.gap == tuned[1].value - 0.55
    seeds = [cfg.seed + confirm_mod.CONFIRM_SEED + k for k in (0, 1)]
    assert sorted(calls) == sorted((n, s) for n in scripted for s in seeds)
    again = confirm_mod.confirm(study, cfg, top=top, seeds=2, data=DataSource(), device="cpu", log=lambda m: None)
    assert len(calls) == 2 * len(scripted) and again == confirmed  # kept in the study: not trained again
    saved = json.loads(save_best(study, cfg, chosen).read_text())
    assert saved["trial"] == steady and saved["confirmed"]["values"] == [0.5, 0.6]
    assert saved["confirmed"]["p_vs_defaults"] < 0.001  # 0.55 against the defaults' 0.0 on every user


def test_a_tuned_trial_replaces_the_defaults_only_when_the_validation_users_say_it_is_better(tmp_path, monkeypatch):
    """Two trials with the same mean gain over the defaults: one gains on every user, the other's gain is a
    few users' luck; only the first is established (and a higher --confirm-p would take the second)."""
    import numpy as np

    import bench.tune.confirm as confirm_mod
    from bench.runner import DataSource

    cfg = config(tmp_path, trials=3)
    study = tune(cfg)
    untuned = next(t.number for t in study.get_trials() if t.user_attrs.get("untuned"))
    tuned = next(t.number for t in study.get_trials() if t.number != untuned)
    rng = np.random.default_rng(0)
    defaults = rng.random(400) * 0.2
    steady, lucky = defaults + 0.01, defaults.copy()
    lucky[:4] += 1.0  # the same mean gain, 0.01, all of it from 4 of the 400 users
    for users, established in ((steady, True), (lucky, False)):
        for k in [k for k in study.user_attrs if k.startswith("confirmed")]:  # confirm afresh
            study.set_user_attr(k, [])

        def value(cfg_, plugin, params, seed, data, device, users=users):
            number = next(t.number for t in study.get_trials() if json.loads(t.user_attrs["run_params"]) == params)
            per_user = users if number == tuned else defaults
            return float(np.mean(per_user)), tuple(per_user)

        monkeypatch.setattr(confirm_mod, "validation_value", value)
        monkeypatch.setattr(optuna.trial.FrozenTrial, "value", property(
            lambda t: 1.0 if t.number == tuned else 0.5 if t.number == untuned else 0.0))
        confirmed = confirm_mod.confirm(study, cfg, top=1, seeds=2, data=DataSource(), device="cpu",
                                        log=lambda m: None)
        best = next(c for c in confirmed if c.trial == tuned)
        assert abs(best.mean - next(c for c in confirmed if c.untuned).mean - 0.01) < 1e-9
        assert (best.p_vs_defaults < 0.05) is established, best.p_vs_defaults
        assert confirm_mod.choose(confirmed, 0.05).trial == (tuned if established else untuned)
        assert confirm_mod.choose(confirmed, 1.0).trial == tuned  # the best mean, as before the test
    # a study confirmed before per-user values were kept has nothing to test: its best mean wins
    study.set_user_attr(f"confirmed.{tuned}", [0.9, 0.9])
    study.set_user_attr(f"confirmed_users.{tuned}", [])
    old = confirm_mod.confirm(study, cfg, top=1, seeds=2, data=DataSource(), device="cpu", log=lambda m: None)
    assert next(c for c in old if c.trial == tuned).p_vs_defaults is None
    assert confirm_mod.choose(old, 0.05).trial == tuned


def test_a_new_study_tries_the_untuned_configuration_first_and_bench_run_would_train_the_same(tmp_path):
    from bench.config import DataConfig, ModelConfig
    from bench.tune.space import untuned_params

    train = TrainConfig()
    assert untuned_params(ModelConfig("fm"), train, DataConfig()) == {
        "lr": 1e-3, "weight_decay": 1e-5, "num_negatives": 4, "batch_size": 256, "embed_dim": 16}
    model = ModelConfig("deepfm+history")
    params = untuned_params(model, TrainConfig(lr=2e-3), DataConfig())
    assert params == {"lr": 2e-3, "weight_decay": 1e-5, "num_negatives": 4, "batch_size": 256, "embed_dim": 16,
                      "history": 10, "mlp": "128,64,32", "dropout": 0.2}
    applied = model.with_params(params)  # what the trial trains is what bench run trains
    assert applied.train_config(TrainConfig(lr=2e-3), 1) == model.train_config(TrainConfig(lr=2e-3), 1)
    assert applied.data_config(DataConfig()) == model.data_config(DataConfig())
    assert applied.embed_dim == model.embed_dim and applied.params["dropout"] == 0.2
    assert untuned_params(ModelConfig("ease"), train, DataConfig()) == {"reg": 250.0}
    layers = untuned_params(ModelConfig("xdeepfm"), train, DataConfig())  # an interaction layer's own defaults
    assert (layers["cin.layers"], layers["cin.split_half"]) == ("64,64", True)
    # a default the space cannot propose, or a plugin sweep: no untuned trial
    assert untuned_params(ModelConfig("fm"), TrainConfig(lr=0.5), DataConfig()) is None
    assert untuned_params(ModelConfig("fm", embed_dim=12), train, DataConfig()) is None
    assert untuned_params(ModelConfig("fm"), train, DataConfig(), sweep=("sampler",)) is None

    study = tune(config(tmp_path, trials=2))
    first = study.get_trials()[0]
    assert first.user_attrs["untuned"] is True and json.loads(first.user_attrs["run_params"]) == {
        "lr": 1e-3, "weight_decay": 1e-5, "num_negatives": 4, "batch_size": 256, "embed_dim": 16}
    assert not study.get_trials()[1].user_attrs.get("untuned")
    resumed = tune(config(tmp_path, trials=3)).get_trials()  # a resumed study does not enqueue it again
    assert sum(bool(t.user_attrs.get("untuned")) for t in resumed) == 1 and len(resumed) == 3


def test_the_untuned_trial_is_confirmed_wherever_it_ranked_and_chosen_when_its_mean_is_best(tmp_path, monkeypatch):
    import bench.tune.confirm as confirm_mod
    from bench.runner import DataSource

    cfg = config(tmp_path, trials=4)
    study = tune(cfg)
    ranked = sorted((t for t in study.get_trials() if t.state == TrialState.COMPLETE), key=lambda t: -t.value)
    untuned = next(t.number for t in ranked if t.user_attrs.get("untuned"))
    others = [t.number for t in ranked if t.number != untuned]
    # rank the untuned trial last in the search, whatever its one-epoch value was
    monkeypatch.setattr(optuna.trial.FrozenTrial, "value", property(
        lambda t: -1.0 if t.number == untuned else t.values[0]))
    calls = []

    def value(cfg_, plugin, params, seed, data, device):
        number = next(t.number for t in study.get_trials() if json.loads(t.user_attrs["run_params"]) == params)
        calls.append(number)
        value = 0.9 if number == untuned else 0.1
        return value, (value,) * 50

    monkeypatch.setattr(confirm_mod, "validation_value", value)
    confirmed = confirm_mod.confirm(study, cfg, top=2, seeds=1, data=DataSource(), device="cpu", log=lambda m: None)
    assert [c.trial for c in confirmed] == others[:2] + [untuned]  # the top 2 of the search, then the defaults
    assert [c.untuned for c in confirmed] == [False, False, True] and sorted(calls) == sorted(others[:2] + [untuned])
    assert confirm_mod.choose(confirmed).trial == untuned  # tuning found nothing better: the defaults stay


def test_tune_confirms_on_the_command_line_and_a_fitted_model_tunes_only_its_own_knobs(tmp_path):
    res = CliRunner().invoke(main, ["tune", "--models", "ease", "--trials", "3", "--confirm-top", "2",
                                    "--confirm-seeds", "2", *SYNTH, *FAST, "--results-dir", str(tmp_path)],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "mean of 2 new seeds" in res.stdout and "chosen" in res.stdout and "p vs defaults" in res.stdout
    saved = json.loads(next((tmp_path / "best_params").glob("*-ease.json")).read_text())
    assert set(saved["params"]) == {"reg"} and saved["confirmed"]["seeds"] == 2
    assert saved["confirmed"]["gap"] == 0.0  # a closed form: the same value on every seed


def test_tuned_only_runs_the_tuned_configuration_in_place_of_the_defaults(tmp_path):
    best = tmp_path / "best.json"
    best.write_text(json.dumps([{"model": "fm", "params": {"lr": 0.005, "embed_dim": 8}}]))
    res = CliRunner().invoke(main, ["run", "--models", "fm,neumf", "--params", str(best), "--tuned-only", *SYNTH,
                                    *FAST, "--baseline", "mostpop", "--results-dir", str(tmp_path), "--format",
                                    "json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert {r["model"] for r in json.loads(res.stdout)} == {"fm:tuned", "neumf", "mostpop"}
    assert "own configuration" not in res.stderr  # tuned params that differ from the defaults: no warning


def test_tuned_params_equal_to_the_defaults_are_warned_about(tmp_path):
    """A study that kept its defaults (AFM's did) writes them as its best params: `--params` would train the
    untuned configuration again under another label, seeds and minutes for a duplicate row."""
    best = tmp_path / "best.json"
    best.write_text(json.dumps([{"model": "fm", "params": {"lr": 1e-3, "weight_decay": 1e-5, "embed_dim": 16}}]))
    res = CliRunner().invoke(main, ["run", "--models", "fm", "--params", str(best), "--tuned-only", *SYNTH, *FAST,
                                    "--baseline", "fm:tuned", "--results-dir", str(tmp_path)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert f"fm:tuned from --params {best} is fm's own configuration" in res.stderr


def test_same_configuration_fills_in_the_defaults_of_the_model_and_its_layers():
    from bench.config import DataConfig, ExperimentConfig, ModelConfig
    from bench.runner import same_configuration

    cfg = ExperimentConfig(data=DataConfig(dataset="synthetic"), train=TrainConfig(),
                           models=(ModelConfig("deepfm"),))
    deepfm = ModelConfig("deepfm")
    assert same_configuration(deepfm.with_params({"mlp": [128, 64, 32], "dropout": 0.2, "lr": 1e-3}), deepfm, cfg)
    assert same_configuration(deepfm.with_params({"mlp": "128,64,32"}), deepfm, cfg)
    assert not same_configuration(deepfm.with_params({"dropout": 0.1}), deepfm, cfg)
    assert not same_configuration(deepfm.with_params({"lr": 2e-3}), deepfm, cfg)
    assert not same_configuration(deepfm.with_params({"embed_dim": 32}), deepfm, cfg)
    assert not same_configuration(deepfm.with_params({"history_encoder": "recency"}), deepfm, cfg)
    assert not same_configuration(ModelConfig("xdeepfm"), deepfm, cfg)
    afm = ModelConfig("afm")  # options through **kwargs, named after the interaction layer
    assert same_configuration(afm.with_params({"afm.att_dim": 16, "afm.dropout": 0.2}), afm, cfg)
    assert not same_configuration(afm.with_params({"afm.att_dim": 32}), afm, cfg)


def test_a_studys_fixed_settings_travel_with_its_best_params_and_guard_its_resumption(tmp_path):
    """Tuned with --loss sampled_softmax: the best params carry the loss, so `--params best` trains what was
    tuned (it trained BCE before: the searched values under another loss), and the study refuses to go on
    under another loss, which would rank trials of two problems together."""
    from bench.results.store import ResultStore

    args = ["tune", "--models", "fm", "--trials", "2", *SYNTH, *FAST, "--results-dir", str(tmp_path)]
    res = CliRunner().invoke(main, [*args, "--loss", "sampled_softmax", "--epochs", "2"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    saved = json.loads(next((tmp_path / "best_params").glob("*-fm.json")).read_text())
    assert saved["settings"] == {"loss": "sampled_softmax"}  # not the budget (epochs), not the searched lr
    res = CliRunner().invoke(main, ["run", "--models", "fm", "--params", "best", "--tuned-only", *SYNTH, *FAST,
                                    "--results-dir", str(tmp_path)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    (run,) = ResultStore(str(tmp_path), readonly=True).runs(models=["fm:tuned"])
    assert run.config["train"]["loss"] == "sampled_softmax"
    assert run.config["train"]["lr"] == saved["params"]["lr"]  # the searched params still win

    res = CliRunner().invoke(main, [*args[:4], "3", *args[5:]])  # the default loss now
    assert res.exit_code != 0
    assert 'was started with other fixed settings (loss was "sampled_softmax", now "bce")' in res.output
    assert len(open_study(config(tmp_path, experiment=replace(
        config(tmp_path).experiment, train=TrainConfig(loss="sampled_softmax")))).get_trials()) == 2
    res = CliRunner().invoke(main, [*args[:4], "3", *args[5:], "--loss", "sampled_softmax", "--lr", "0.05"],
                             catch_exceptions=False)  # a searched option may differ: the search sets it
    assert res.exit_code == 0, res.output


def test_a_params_file_with_settings_a_study_does_not_fix_is_refused(tmp_path):
    best = tmp_path / "best.json"
    best.write_text(json.dumps({"model": "fm", "params": {"lr": 0.005}, "settings": {"epochs": 3}}))
    res = CliRunner().invoke(main, ["run", "--models", "fm", "--params", str(best), *SYNTH, *FAST,
                                    "--results-dir", str(tmp_path)])
    assert res.exit_code != 0 and "'settings' names epochs, which are not settings a study fixes" in res.output
    assert not (tmp_path / "bench.db").exists()


def test_a_full_softmax_study_does_not_search_the_negatives_it_never_draws(tmp_path):
    """Under --loss softmax every item is a negative: num_negatives would be an inert dimension of the search
    (SASRec's and GRU4Rec's studies sampled it for nothing), and sweeping the sampler is refused up front."""
    res = CliRunner().invoke(main, ["tune", "--models", "fm", "--trials", "2", "--loss", "softmax", *SYNTH, *FAST,
                                    "--results-dir", str(tmp_path)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    cfg = config(tmp_path, trials=2, experiment=replace(config(tmp_path).experiment, train=TrainConfig(loss="softmax")))
    trials = open_study(cfg).get_trials()
    assert len(trials) == 2 and all("num_negatives" not in t.params and "lr" in t.params for t in trials)
    res = CliRunner().invoke(main, ["tune", "--models", "fm", "--trials", "2", "--loss", "bce", *SYNTH, *FAST,
                                    "--results-dir", str(tmp_path / "bce")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    bce = open_study(replace(cfg, results_dir=str(tmp_path / "bce"), experiment=config(tmp_path).experiment))
    assert len(bce.get_trials()) == 2 and all("num_negatives" in t.params for t in bce.get_trials())
    res = CliRunner().invoke(main, ["tune", "--models", "fm", "--sweep", "sampler", "--loss", "softmax", *SYNTH,
                                    *FAST, "--results-dir", str(tmp_path / "refused")])
    assert res.exit_code != 0 and "--sweep sampler with --loss softmax" in res.output
    assert not (tmp_path / "refused").exists() or not any((tmp_path / "refused").iterdir())
