"""History encoders as plugins, the sequential baselines (SASRec, GRU4Rec), the softmax losses and the
shuffled-order control: each reads only a row's strictly-earlier window, and order is what a planted rule needs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from conftest import SYNTH

import registry
from bench.cli import main
from bench.config import EvalConfig, ModelConfig, TrainConfig
from bench.data.pipeline import prepare
from bench.data.types import ColumnSchema, DatasetFrames
from bench.eval.evaluator import evaluate
from bench.nn.model import score_every_pair
from bench.runner import build_model
from bench.train.trainer import train

ENCODERS = ["mean", "recency", "target", "transformer", "gru"]
CPU = torch.device("cpu")


def planted(n_users: int = 200, n_items: int = 100, pairs: int = 10, seed: int = 0) -> DatasetFrames:
    """Sequences of pairs (a, f(a)): a random item, then its partner under a fixed random permutation f. The
    test item is always the partner of the validation item (the most recent past item), so a model that reads
    which item came last finds it; the window's set alone (every pair, plus the lone last item) hides it."""
    rng = np.random.default_rng(seed)
    f = rng.permutation(n_items) + 1
    while (f == np.arange(1, n_items + 1)).any():
        f = rng.permutation(n_items) + 1
    rows = []
    for u in range(n_users):
        firsts = rng.choice(n_items, pairs, replace=False) + 1
        rows += [(u, int(i), 5, t) for t, i in enumerate(np.stack([firsts, f[firsts - 1]], 1).reshape(-1))]
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    schema = [ColumnSchema("user_id", "user", "label", is_id=True),
              ColumnSchema("item_id", "item", "label", is_id=True)]
    return DatasetFrames("planted", inter, pd.DataFrame({"user_id": range(n_users)}),
                         pd.DataFrame({"item_id": range(1, n_items + 1)}), schema)


def test_hr10(frames, name, params=None, order="time", encoder="mean", loss="softmax", epochs=20):
    data = prepare(frames, history=10, history_encoder=encoder, history_order=order)
    torch.manual_seed(0)
    model = build_model(ModelConfig(name, embed_dim=32, params=params or {}), data)
    train(model, data, TrainConfig(epochs=epochs, batch_size=128, lr=1e-2, loss=loss, patience=epochs), EvalConfig(),
          CPU)
    return evaluate(model, data, "test", EvalConfig(ks=(10,))).metrics["HR@10"]


test_hr10.__test__ = False  # a helper, not a test


@pytest.fixture(scope="module")
def planted_frames():
    return planted()


@pytest.mark.parametrize("name", ["sasrec", "gru4rec"])
def test_the_sequential_baselines_find_a_planted_next_item_rule(planted_frames, name):
    assert test_hr10(planted_frames, name, {"dropout": 0.0}) >= 0.95


def test_mean_pooling_cannot_find_the_rule_that_needs_the_order(planted_frames):
    assert test_hr10(planted_frames, "deepfm", loss="bce", epochs=10) < 0.4


def test_a_shuffled_history_hides_the_order_the_rule_needs(planted_frames):
    assert test_hr10(planted_frames, "sasrec", {"dropout": 0.0}, order="shuffled") < 0.5


# --- every encoder reads only the row's window ---------------------------------------------------------------

@pytest.mark.parametrize("encoder", ENCODERS)
def test_every_encoder_reads_only_the_rows_strictly_earlier_window(small_frames, encoder):
    """Changing the vectors of every item outside a row's window (and other than its own item) leaves the row's
    score unchanged; changing one inside its window changes it. So whatever an encoder computes, it sees no
    held-out, later or same-second item: only what the window (checked by tests/test_history.py) holds."""
    data = prepare(small_frames, history=4, history_encoder=encoder)
    torch.manual_seed(0)
    model = build_model(ModelConfig("deepfm", embed_dim=8), data).eval()
    rows = torch.from_numpy(data.test.states[:20])
    user_x, item_x = data.user_rows()(rows), data.item_features[torch.from_numpy(data.test.items[:20])]
    table = model.embedding.item.groups[0].vectors.weight  # the item id's table, which the history shares
    offset = model.embedding.user.bags[0].offset
    window = data.spec.field("history").columns
    with torch.no_grad():
        # row by row, as the checks below score: a batch of 20 rounds differently from a batch of 1 in the
        # transformer's kernels (~2e-6 on some CPUs), which is not what this test is about
        before = torch.cat([model(user_x[r:r + 1], item_x[r:r + 1]) for r in range(len(rows))])
        for r in range(len(rows)):
            seen = {int(i) for i in user_x[r, window] if i > 0} | {int(item_x[r, 0])}
            outside = [i for i in range(1, data.n_items) if i not in seen]
            saved = table.clone()
            table[torch.tensor(outside) + offset] += torch.randn(len(outside), table.shape[1])
            assert torch.allclose(model(user_x[r:r + 1], item_x[r:r + 1]), before[r:r + 1], atol=1e-6), r
            table.copy_(saved)
        r = next(r for r in range(len(rows)) if (user_x[r, window] > 0).any())
        inside = int(next(i for i in user_x[r, window] if i > 0 and i != item_x[r, 0]))
        table[inside + offset] += torch.randn(table.shape[1])  # not a constant: a LayerNorm would remove it
        assert not torch.allclose(model(user_x[r:r + 1], item_x[r:r + 1]), before[r:r + 1])


@pytest.mark.parametrize("encoder", ENCODERS)
def test_every_encoder_ranks_all_items_exactly_as_pair_by_pair(small_frames, encoder):
    data = prepare(small_frames, history=4, history_encoder=encoder)
    torch.manual_seed(0)
    model = build_model(ModelConfig("deepfm", embed_dim=8), data)
    train(model, data, TrainConfig(epochs=1, batch_size=256), EvalConfig(), CPU)
    model.eval()
    user_x = data.user_rows()(torch.from_numpy(data.test.states[:6]))
    with torch.no_grad():
        torch.testing.assert_close(model.score_all(user_x, data.item_features),
                                   score_every_pair(model, user_x, data.item_features), atol=1e-5, rtol=1e-5)
    full = evaluate(model, data, "test")
    one_by_one = evaluate(model, data, "test", batch_users=1)
    np.testing.assert_allclose(full.per_user["MRR"], one_by_one.per_user["MRR"])


@pytest.mark.parametrize("name", ["sasrec", "gru4rec"])
def test_the_sequential_baselines_rank_all_items_exactly_as_pair_by_pair(small_frames, name):
    data = prepare(small_frames, history=6)
    torch.manual_seed(0)
    model = build_model(ModelConfig(name, embed_dim=8), data).eval()
    user_x = data.user_rows()(torch.from_numpy(data.test.states[:6]))
    with torch.no_grad():
        torch.testing.assert_close(model.score_all(user_x, data.item_features),
                                   score_every_pair(model, user_x, data.item_features), atol=1e-5, rtol=1e-5)


def test_an_empty_window_encodes_to_zeros():
    for encoder in ENCODERS:
        made = registry.create("history_encoder", encoder, dim=4, length=3).eval()
        history, mask = torch.zeros(2, 3, 4), torch.zeros(2, 3, dtype=torch.bool)
        args = (history, mask, torch.randn(2, 4)) if made.target_aware else (history, mask)
        assert torch.equal(made(*args), torch.zeros(2, 4)), encoder


def test_the_gru_reads_each_windows_items_alone_oldest_first():
    """Each row's state is the GRU run over its n items by themselves, in order: never over the padding in
    front of them, however many layers."""
    torch.manual_seed(0)
    made = registry.create("history_encoder", "gru", dim=4, length=5, layers=2).eval()
    lengths = [5, 3, 1]
    mask = torch.tensor([[i >= 5 - n for i in range(5)] for n in lengths])
    history = torch.randn(3, 5, 4) * mask.unsqueeze(2)
    with torch.no_grad():
        encoded = made(history, mask)
        for row, n in enumerate(lengths):
            _, alone = made.gru(history[row:row + 1, 5 - n:])
            torch.testing.assert_close(encoded[row], alone[-1, 0])


# --- the shuffled-order control ------------------------------------------------------------------------------

def test_a_shuffled_window_holds_earlier_positives_only_in_a_fixed_random_order(small_frames):
    timed = prepare(small_frames, history=5)
    shuffled = prepare(small_frames, history=5, history_order="shuffled")
    again = prepare(small_frames, history=5, history_order="shuffled")
    states = torch.arange(1, len(timed.states))
    a, b, c = timed.states.history(states), shuffled.states.history(states), again.states.history(states)
    assert torch.equal(b, c)  # seeded: the same windows every time
    s = timed.states
    for row, state in enumerate(states.tolist()):
        past = s.sequence[s.begin[s.user[state]]:s.end[state]].tolist()  # the strictly-earlier positives
        window = [i for i in b[row].tolist() if i > 0]
        assert len(window) == min(5, len(past)) and set(window) <= set(past)
        assert (b[row, :5 - len(window)] == 0).all()  # padded at the front, as the time-ordered window
    assert not torch.equal(a, b)  # not the last five in time order
    assert shuffled.info["history_order"] == "shuffled"


# --- losses and the command line ---------------------------------------------------------------------------

def test_a_softmax_over_all_items_is_refused_for_a_model_that_cannot_score_them_at_once(tmp_path):
    res = CliRunner().invoke(main, ["run", "--models", "deepfm+history", "--history-encoder", "target", "--loss",
                                    "softmax", *SYNTH, "--results-dir", str(tmp_path)])
    assert res.exit_code == 2 and "--loss softmax needs a model that scores every item" in res.output
    assert not (tmp_path / "bench.db").exists()


def test_sasrec_runs_from_the_command_line_with_its_own_history_window(tmp_path):
    res = CliRunner().invoke(main, ["run", "--models", "sasrec,gru4rec,deepfm+history", "--baseline", "sasrec",
                                    "--history-encoder", "transformer", "--history-opt", "layers=1", "--loss",
                                    "softmax", "--epochs", "2", "--embed-dim", "16", *SYNTH, "--no-progress",
                                    "--format", "json", "--results-dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    from bench.results.store import ResultStore

    runs = {r.model: r for r in ResultStore(tmp_path).runs()}
    assert runs["sasrec"].config["data"]["history"] == 50 and runs["sasrec"].config["train"]["loss"] == "softmax"
    assert runs["deepfm+history"].config["data"]["history_encoder"] == "transformer"
    assert runs["deepfm+history"].config["data"]["history_options"] == {"layers": 1}


def test_a_sequence_model_without_a_history_field_says_how_to_give_it_one(small_data):
    with pytest.raises(ValueError, match="reads the user's history: give it --history L"):
        build_model(ModelConfig("sasrec"), small_data)


def test_bench_list_shows_the_history_encoders():
    res = CliRunner().invoke(main, ["list", "history_encoder"])
    assert res.exit_code == 0 and all(f"| {name} " in res.output for name in ENCODERS)


def test_tune_sweeps_the_encoder_its_length_and_its_own_knobs(tmp_path):
    import optuna

    res = CliRunner().invoke(main, ["tune", "--models", "deepfm+history", "--sweep", "history", "--trials", "3",
                                    "--epochs", "1", "--confirm-top", "0", *SYNTH, "--no-progress",
                                    "--results-dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    (summary,) = optuna.get_all_study_summaries(f"sqlite:///{tmp_path / 'optuna.db'}")
    study = optuna.load_study(study_name=summary.study_name, storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    for trial in study.trials:
        assert {"history", "history_encoder"} <= set(trial.params)
        knobs = {k for k in trial.params if k.startswith("history.")}
        declared = set(registry.search_space("history_encoder", trial.params["history_encoder"],
                                             optuna.trial.FixedTrial(trial.params)))
        assert knobs == declared
