"""tests/compat protects the plugin guide's compatibility promise (docs/plugins.md): a third-party plugin written to
any form the guide has documented keeps working.

`compat_plugins/` is such a package, frozen as written: models (an EmbeddingModel with its equation in head, one
without pair_scoring, a RankingModel subclass ranking by its own score_all, a plain nn.Module with trainable,
forward and score_all, a FittedModel), interaction layers (an Interaction with a declared pairs path, a plain
nn.Module with out_dim and forward and no num_fields, older layers defining pair_scores or forward_pairs without
declaring pair_path), an encoder, a dataset, a negative sampler and a history encoder. It is installed here
through entry points (a dist-info on sys.path, as pip leaves it) and run end to end through `bench run` and
`bench tune`: a change that breaks one fails here. The forms earlier guides documented that already broke are
marked xfail(strict=True), each with what would bring it back; they fail here once fixed, to drop the mark."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from click.testing import CliRunner

import registry
from bench.cli import main

HERE = Path(__file__).resolve().parent
FAST = ["--epochs", "1", "--batch-size", "512", "--embed-dim", "8", "--threads", "1", "--no-progress"]
TINY = ["--dataset", "compat-tiny", "--dataset-opt", "n_users=40", "--dataset-opt", "n_items=60"]
ENTRY_POINTS = """
[deepfm_bench.models]
compat-head = compat_plugins.models:HeadDeepFM
compat-formed = compat_plugins.models:FormedPairs
compat-score-all = compat_plugins.models:DotIds
compat-plain = compat_plugins.models:PlainIds
compat-fitted = compat_plugins.models:CoCounts
compat-rows-fitted = compat_plugins.models:RowsFitted
compat-retired = compat_plugins.retired_model:MyDeepFM

[deepfm_bench.interactions]
compat-inner = compat_plugins.layers:InnerProducts
compat-plain-layer = compat_plugins.layers:PlainMix
compat-pair-scores = compat_plugins.layers:OlderPairScores
compat-forward-pairs = compat_plugins.layers:OlderForwardPairs

[deepfm_bench.encoders]
compat-hash = compat_plugins.data:HashEncoder
compat-length = compat_plugins.retired_encoder:LengthEncoder

[deepfm_bench.datasets]
compat-tiny = compat_plugins.data:TinyRatings

[deepfm_bench.samplers]
compat-easy = compat_plugins.data:EasyNegatives
compat-user-rows = compat_plugins.data:UserRowNegatives

[deepfm_bench.history_encoders]
compat-max = compat_plugins.history:MaxPooling
"""
MODELS = ["compat-head", "compat-formed", "compat-score-all", "compat-plain", "compat-fitted"]
LAYERS = ["compat-inner", "compat-plain-layer", "compat-pair-scores", "compat-forward-pairs"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """compat-plugins installed: its package and a dist-info with its entry points on sys.path, the registry
    discovering entry points afresh (and forgetting them after this module)."""
    site = tmp_path_factory.mktemp("site")
    shutil.copytree(HERE / "compat_plugins", site / "compat_plugins", ignore=shutil.ignore_patterns("__pycache__"))
    info = site / "compat_plugins-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: compat-plugins\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(site))
        patch.setattr(registry.REGISTRY, "_discovered", {})
        yield site


def bench(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.fixture(scope="module")
def data(installed):
    """The compat dataset, encoded (the city by the compat encoder) with a 3-item history read by compat-max."""
    from bench.data.pipeline import prepare

    frames = registry.create("dataset", "compat-tiny").load()
    return prepare(frames, history=3, history_encoder="compat-max")


def test_every_documented_form_runs_end_to_end_through_bench_run(installed, tmp_path):
    """One `bench run`: the compat models and a composed model of fm and every compat layer, trained with the
    compat sampler on the compat dataset (its city encoded by the compat encoder), with a history window read by
    the compat history encoder; every run finishes and is ranked."""
    res = bench("run", "--models", ",".join(MODELS), "--baseline", "compat-fitted",
                "--interactions", ",".join(["fm", *LAYERS]), "--sampler", "compat-easy", *TINY,
                "--history", "3", "--history-encoder", "compat-max", *FAST, "--results-dir", str(tmp_path))
    assert res.exit_code == 0, res.output
    assert "6 of 6 runs finished" in res.stderr
    rows = [line.split("|")[1].strip() for line in res.stdout.splitlines() if line.startswith("| ")]
    assert set(MODELS) | {"composed"} <= set(rows)


def test_every_layer_is_among_the_choices_bench_tune_sweeps(installed, tmp_path):
    res = bench("tune", "--models", "fm", "--sweep", "interactions", "--trials", "1", "--confirm-top", "0", *TINY,
                *FAST[:2], "--threads", "1", "--no-progress", "--results-dir", str(tmp_path))
    assert res.exit_code == 0, res.output
    (summary,) = optuna.get_all_study_summaries(f"sqlite:///{tmp_path / 'optuna.db'}")
    choices = summary.user_attrs["interaction_choices"].split(";")
    for layer in LAYERS:
        assert layer in choices and f"{layer},fm" in choices  # combinations in name order


def test_each_older_layer_ranks_by_the_pairs_method_it_defines_and_equals_forward(installed, data):
    """pair_scores / forward_pairs without a declared pair_path keep their fast path; the plain layer with no
    num_fields builds from the numbers the registry gives it."""
    from bench.nn.model import create_model, score_every_pair

    torch.manual_seed(0)
    model = create_model("composed", data.spec, 8, interactions=",".join(LAYERS), mlp=(8,)).eval()
    assert [term.pair_path for term in model.terms.values()] == ["forward", None, "scores", "forward"]
    assert not hasattr(model.terms["compat-plain-layer"].layer, "num_fields")
    user_x, item_x = data.user_rows()(torch.from_numpy(data.test.states[:4])), data.item_features
    with torch.no_grad():
        torch.testing.assert_close(model.score_all(user_x, item_x), score_every_pair(model, user_x, item_x))
    assert model.terms["compat-pair-scores"].layer.pair_calls == 1
    assert model.terms["compat-forward-pairs"].layer.pair_calls == 1


def test_older_models_are_ranked_by_their_own_score_all(installed, data):
    from bench.eval.evaluator import evaluate
    from bench.nn.model import create_model, score_every_pair

    torch.manual_seed(0)
    dot = create_model("compat-score-all", data.spec, 8)
    evaluate(dot, data, "test")
    assert dot.score_all_calls >= 1
    plain = create_model("compat-plain", data.spec, 8)
    user_x, item_x = data.user_rows()(torch.from_numpy(data.test.states[:4])), data.item_features
    with torch.no_grad():
        torch.testing.assert_close(plain.item_scorer(item_x)(user_x), score_every_pair(plain, user_x, item_x))
    assert plain.floats_per_pair() >= 1 and plain.floats_per_user() == 0


def test_the_data_plugins_encode_and_read_history_as_written(installed, data):
    city = data.spec.field("city")
    assert city.vocab_size == 8 and data.user_features[:, city.column].max() <= 7
    assert registry.create("encoder", "compat-hash", buckets=7).fit([]).transform(["oslo", ""])[1] == 0
    model = registry.create("model", "compat-head", spec=data.spec, embed_dim=8)
    (bag,) = model.embedding.user.bags
    assert type(bag.encoder).__name__ == "MaxPooling" and bag.encoder.length == 3
    sampler = registry.create("sampler", "compat-easy", num_negatives=2, seed=0).fit(data)
    from bench.data.base import check_samples

    check_samples(sampler.sample(0), data, "compat-easy")  # raises on a broken epoch
    assert not np.array_equal(sampler.sample(0).items.numpy(), sampler.sample(1).items.numpy())


# --- forms earlier guides documented that already broke (strict: a fix makes these pass, so drop the mark) ---

def test_the_first_guides_model_form_runs(installed, tmp_path):
    res = bench("run", "--models", "compat-retired", "--baseline", "compat-retired", *TINY, *FAST,
                "--results-dir", str(tmp_path))
    assert res.exit_code == 0, res.output


def test_the_first_guides_encoder_form_runs(installed, tmp_path):
    res = bench("run", "--models", "compat-fitted", "--baseline", "compat-fitted", *TINY,
                "--dataset-opt", "city_encoder=compat-length", *FAST, "--results-dir", str(tmp_path))
    assert res.exit_code == 0, res.output


@pytest.mark.xfail(strict=True, reason="samplers before user states returned TrainSamples(users, items, labels); "
                   "the first array now means positives (indices into data.train), so the epoch is refused")
def test_the_user_rows_sampler_form_runs(installed, tmp_path):
    res = bench("run", "--models", "compat-head", "--baseline", "compat-head", "--sampler", "compat-user-rows",
                *TINY, *FAST, "--results-dir", str(tmp_path))
    assert res.exit_code == 0, res.output


@pytest.mark.xfail(strict=True, reason="fitted models before user states defined forward and score_all over "
                   "feature rows; FittedModel now asks score(states, items), and its default raises")
def test_the_rows_fitted_model_form_runs(installed, tmp_path):
    res = bench("run", "--models", "compat-rows-fitted", "--baseline", "compat-rows-fitted", *TINY, *FAST,
                "--results-dir", str(tmp_path))
    assert res.exit_code == 0, res.output
