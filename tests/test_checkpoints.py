"""Checkpoints and `bench recommend`: each finished run keeps its model as safetensors (never pickle), the file
restores the exact weights, `bench recommend` lists exactly what the evaluator ranked for test, and every refusal
is one clear line with exit code 2."""

from __future__ import annotations

import json
import pickle
import struct

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from datagen import write_ml100k

import bench.runner as runner_mod
from bench.cli import main
from bench.config import DataConfig, ExperimentConfig, ModelConfig, TrainConfig
from bench.eval.evaluator import evaluate
from bench.results.checkpoints import (
    CheckpointWarning,
    checkpoint_path,
    load_checkpoint,
    restore_model,
    save_checkpoint,
)
from bench.results.store import ResultStore

MODELS = ("mostpop", "ease", "itemknn", "fm", "deepfm+history")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One run of each kind of model (counted, closed-form, trained, trained with history) on a small ML-100K
    folder, with the model and the EvalResult the runner's test evaluation produced for each run."""
    root = tmp_path_factory.mktemp("checkpoints")
    folder = write_ml100k(root / "ml-100k", n_users=40, n_items=50, n_ratings=700)
    config = ExperimentConfig(data=DataConfig(dataset="ml-100k", data_dir=str(folder), min_interactions=6),
                              train=TrainConfig(epochs=1, batch_size=512),
                              models=tuple(ModelConfig(m, embed_dim=8) for m in MODELS))
    seen = []

    def spy(model, data, split, *args, **kw):
        result = evaluate(model, data, split, *args, **kw)
        if split == "test":
            seen.append((model, data, result))
        return result

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner_mod, "evaluate", spy)
        outcome = runner_mod.run_benchmark(config, ResultStore(root / "results"), log=lambda line: None)
    assert not outcome.failures and len(outcome.finished) == len(MODELS) == len(seen)
    data = seen[0][1]
    return {"results": root / "results", "folder": folder, "runs": dict(zip(MODELS, outcome.finished, strict=True)),
            "evaluated": dict(zip(MODELS, seen, strict=True)),
            "tested": [str(data.user_ids[row]) for row in data.test.users[:2]]}  # raw ids of users with a test item


def recommend(*args):
    return CliRunner().invoke(main, ["recommend", *map(str, args)])


def test_each_finished_run_keeps_a_safetensors_file_that_restores_the_exact_weights(finished):
    for name, run_id in finished["runs"].items():
        model, data, result = finished["evaluated"][name]
        path = checkpoint_path(finished["results"], run_id)
        blob = path.read_bytes()
        (header_len,) = struct.unpack("<Q", blob[:8])  # the safetensors layout: a JSON header, then raw tensors
        header = json.loads(blob[8:8 + header_len])
        ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
        assert header["__metadata__"]["run"] == str(run_id) and 8 + header_len + max(ends) == len(blob)  # nothing else
        checkpoint = load_checkpoint(path)
        assert checkpoint.data_checksum == data.info["checksum"]
        assert checkpoint.config["model"]["name"] == name
        restored = restore_model(checkpoint, checkpoint.config["model"]["plugin"], 8,
                                 checkpoint.config["model"]["params"], data)
        state, again = model.state_dict(), restored.state_dict()
        assert state.keys() == again.keys() and state  # every tensor, the fitted ones included
        assert all(torch.equal(state[key].cpu(), again[key]) for key in state), name
        rescored = evaluate(restored, data, "test", top=True)  # a reloaded model scores identically
        assert rescored.metrics == result.metrics and np.array_equal(rescored.top, result.top), name


def test_recommend_lists_exactly_what_the_evaluator_ranked_for_test(finished):
    for name, run_id in finished["runs"].items():
        _, data, result = finished["evaluated"][name]
        picked = [0, 3, len(data.test) - 1]
        users = [str(data.user_ids[data.test.users[p]]) for p in picked]
        out = recommend("--run", run_id, "--users", ",".join(users), "--k", 10, "--format", "json",
                        "--results-dir", finished["results"])
        assert out.exit_code == 0, out.output
        listed = json.loads(out.stdout)
        assert [entry["user"] for entry in listed] == users
        for entry, position in zip(listed, picked, strict=True):
            expected = [data.item_ids[row] for row in result.top[position, :10] if row]
            assert [item["item"] for item in entry["items"]] == expected, name
            assert [item["rank"] for item in entry["items"]] == list(range(1, len(expected) + 1))


def test_recommend_excludes_what_the_user_had_shown_unless_include_seen(finished):
    model, data, _ = finished["evaluated"]["fm"]
    position = 0
    user_row, state = int(data.test.users[position]), int(data.test.states[position])
    seen = {data.item_ids[i] for csr in data.eval_masks("test") for i in csr.rows_pairs(np.array([user_row]))[1]}
    with torch.no_grad():
        scores = model.item_scorer(data.item_features)(data.user_rows()(torch.tensor([state])))[0].double().numpy()
    brute = [data.item_ids[i] for i in sorted(range(1, data.n_items), key=lambda i: (-scores[i], i))]
    user = str(data.user_ids[user_row])
    k = data.n_items - 1
    masked, everything = (json.loads(recommend("--run", finished["runs"]["fm"], "--users", user, "--k", k,
                                               "--format", "json", "--results-dir", finished["results"],
                                               *extra).stdout)[0]["items"] for extra in ((), ("--include-seen",)))
    assert seen and not seen & {item["item"] for item in masked}
    assert [item["item"] for item in masked] == [i for i in brute if i not in seen]
    assert [item["item"] for item in everything] == brute


def test_recommend_prints_a_table_and_a_csv(finished):
    run_id = finished["runs"]["ease"]
    one, two = finished["tested"]
    table = recommend("--run", run_id, "--users", f"{one},{two},{one}", "--k", 3, "--results-dir", finished["results"])
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert [c.strip() for c in lines[0].split("|")[1:-1]] == ["user", "rank", "item", "title", "score"]
    assert len(lines) == 2 + 2 * 3  # header, rule, three items for each of two users
    rows = recommend("--run", run_id, "--users", one, "--k", 3, "--format", "csv", "--results-dir",
                     finished["results"]).stdout.splitlines()
    assert rows[0] == "user,rank,item,title,score" and [r.split(",")[:2] for r in rows[1:]] == [[one, "1"], [one, "2"],
                                                                                           [one, "3"]]


def test_recommend_shows_titles_where_the_items_have_them(tmp_path):
    rng = np.random.default_rng(0)
    users, items = rng.integers(1, 20, 600), rng.integers(1, 30, 600)
    lines = ["user_id,item_id,rating,timestamp"] + [f"u{u},m{i},{rng.integers(1, 6)},{t}" for t, (u, i) in
                                                    enumerate(zip(users, items, strict=True))]
    (tmp_path / "ratings.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "items.csv").write_text("item_id,title\n" + "".join(f"m{i},Film number {i}\n" for i in range(1, 30)))
    config = ExperimentConfig(data=DataConfig(dataset="csv", data_dir=str(tmp_path), options={
        "interactions": "ratings.csv", "items": "items.csv", "rating_col": "rating", "timestamp_col": "timestamp"}),
        models=(ModelConfig("mostpop"),))
    run_id = runner_mod.run_benchmark(config, ResultStore(tmp_path / "results"), log=lambda line: None).finished[0]
    out = recommend("--run", run_id, "--users", "u3", "--k", 4, "--format", "json", "--results-dir",
                    tmp_path / "results")
    assert out.exit_code == 0, out.output
    items = json.loads(out.stdout)[0]["items"]
    assert len(items) == 4 and all(item["title"] == f"Film number {item['item'][1:]}" for item in items)


def test_loading_a_checkpoint_never_unpickles(finished, monkeypatch):
    def refuse(*args, **kw):
        raise AssertionError("something was unpickled")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    out = recommend("--run", finished["runs"]["deepfm+history"], "--users", finished["tested"][0], "--results-dir",
                    finished["results"])
    assert out.exit_code == 0, out.output


def test_a_shared_tensor_is_written_once_and_restored_under_both_names(tmp_path):
    class Shared(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Embedding(5, 3)
            self.b = torch.nn.Module()
            self.b.table = self.a  # one table under two names, as a field sharing another's

    model = Shared()
    path = save_checkpoint(model, tmp_path / "shared.safetensors", run_id=1, config={}, data_checksum=None)
    loaded = load_checkpoint(path)
    assert torch.equal(loaded.tensors["a.weight"], model.a.weight) and torch.equal(loaded.tensors["b.table.weight"],
                                                                                 model.a.weight)
    again = Shared()
    again.load_state_dict(loaded.tensors)
    assert torch.equal(again.a.weight, model.a.weight)


def test_no_checkpoint_is_kept_when_asked_and_recommend_says_so(finished, tmp_path):
    config = ExperimentConfig(data=DataConfig(dataset="ml-100k", data_dir=str(finished["folder"])),
                              models=(ModelConfig("mostpop"),))
    run_id = runner_mod.run_benchmark(config, ResultStore(tmp_path), log=lambda line: None,
                                      checkpoints=False).finished[0]
    assert not (tmp_path / "checkpoints").exists()
    out = recommend("--run", run_id, "--users", "1", "--results-dir", tmp_path)
    assert out.exit_code == 2 and f"run {run_id} has no checkpoint" in out.output
    assert len(out.output.strip().splitlines()) == 1


def test_a_checkpoint_that_cannot_be_written_is_a_warning_and_the_run_stays_finished(finished, tmp_path):
    (tmp_path / "checkpoints").write_text("a file where the folder should be")
    config = ExperimentConfig(data=DataConfig(dataset="ml-100k", data_dir=str(finished["folder"])),
                              models=(ModelConfig("mostpop"),))
    store = ResultStore(tmp_path)
    with pytest.warns(CheckpointWarning, match="no checkpoint kept"):
        outcome = runner_mod.run_benchmark(config, store, log=lambda line: None)
    assert [r.status for r in store.runs(ids=outcome.finished)] == ["finished"]


def refusal(out, *expected):
    assert out.exit_code == 2, out.output
    assert len(out.output.strip().splitlines()) == 1 and all(e in out.output for e in expected), out.output


def test_recommend_refuses_an_unknown_user_and_a_user_without_a_test_item(finished):
    run_id, (_, data, _) = finished["runs"]["fm"], finished["evaluated"]["fm"]
    refusal(recommend("--run", run_id, "--users", f"{finished['tested'][0]},99999", "--results-dir",
                      finished["results"]),
            "user '99999' is not in run")
    untested = sorted(set(range(1, data.n_users)) - set(data.test.users.tolist()))
    assert untested  # users with fewer than --min-interactions 6 positives: nothing held out
    user = str(data.user_ids[untested[0]])
    refusal(recommend("--run", run_id, "--users", user, "--results-dir", finished["results"]),
            f"user {user!r} has no test item", "--min-interactions 6")


def test_recommend_refuses_a_run_that_did_not_finish_or_does_not_exist(finished, tmp_path):
    store = ResultStore(tmp_path)
    run_id = store.start_run(dataset="ml-100k", model="fm", seed=1, device="cpu", protocol="full", ties="expected",
                             num_negatives=None, config={}, versions={}, git_commit=None)
    store.end_run(run_id, "failed", "ValueError: the loss became NaN")
    refusal(recommend("--run", run_id, "--users", "1", "--results-dir", tmp_path),
            f"run {run_id} did not finish (failed: ValueError: the loss became NaN)")
    refusal(recommend("--run", 77, "--users", "1", "--results-dir", tmp_path), "no run 77 in")
    refusal(recommend("--run", 1, "--users", "1", "--results-dir", tmp_path / "empty"), "no results store at")


def test_recommend_refuses_data_whose_checksum_changed(finished, tmp_path):
    import shutil

    folder = shutil.copytree(finished["folder"], tmp_path / "ml-100k")
    lines = (folder / "u.data").read_text().splitlines()
    (folder / "u.data").write_text("\n".join(lines[:-40]) + "\n")  # some ratings gone: other positives
    refusal(recommend("--run", finished["runs"]["ease"], "--users", finished["tested"][0], "--results-dir",
                      finished["results"],
                      "--data-dir", folder), "the data changed since run", "--data-dir")


def test_recommend_refuses_a_damaged_checkpoint(finished, tmp_path):
    import shutil

    results = shutil.copytree(finished["results"], tmp_path / "results")
    run_id = finished["runs"]["fm"]
    checkpoint_path(results, run_id).write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    refusal(recommend("--run", run_id, "--users", finished["tested"][0], "--results-dir", results),
            "not a readable safetensors checkpoint")
