"""The global-timeline split, the leakage audit and the protocol card (issue 27): nothing trains at or after the
validation cutoff, targets are each user's first positives after a cutoff, every evaluated row sees exactly its
strictly-earlier past, the audit measures leave-one-out's future and finds none in the global split, and every
table carries a card that changes with each factor."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from conftest import SYNTH, require_ml100k

import registry
from bench.cli import main
from bench.data.audit import leakage_audit
from bench.data.pipeline import prepare
from bench.data.split import global_split

FAST = ["--epochs", "1", "--batch-size", "512", "--embed-dim", "8", "--no-progress"]


@pytest.fixture(scope="module")
def timeline():
    return registry.create("dataset", "synthetic", n_users=80, n_items=70, n_interactions=3000, seed=5).load()


def test_nothing_trains_at_or_after_the_validation_cutoff_and_targets_are_first_positives(timeline):
    positives, summary = global_split(timeline.interactions, 4.0, val=0.7, test=0.85)
    t_val, t_test = summary["cutoffs"]["val"], summary["cutoffs"]["test"]
    assert (positives.loc[positives.split == "train", "timestamp"] < t_val).all()
    assert not positives.loc[positives.timestamp >= t_val, "split"].eq("train").any()
    for name, low, high in (("val", t_val, t_test), ("test", t_test, np.inf)):
        expected = {}
        for user, rows in positives.groupby("user_id", sort=False):
            inside = rows[(rows.timestamp >= low) & (rows.timestamp < high)]
            if len(inside) and (rows.timestamp < low).any():  # warm: a positive before the cutoff
                expected[user] = inside.iloc[0].item_id  # rows are in (time, file position) order
        got = positives[positives.split == name].set_index("user_id").item_id.to_dict()
        assert got == expected and len(got) > 5
        cold = sum(1 for _, rows in positives.groupby("user_id")
                   if ((rows.timestamp >= low) & (rows.timestamp < high)).any() and not (rows.timestamp < low).any())
        assert summary["cold"][name] == cold


def test_every_evaluated_row_sees_exactly_its_strictly_earlier_past_and_masks_it(timeline):
    data = prepare(timeline, history=6, split="global", split_options={"val": 0.7, "test": 0.85})
    inter = timeline.interactions
    positives = inter[inter.rating >= 4]
    for split in ("val", "test"):
        pairs = getattr(data, split)
        mask = data.eval_masks(split)[0]
        window = data.user_rows()(torch.from_numpy(pairs.states))[:, data.spec.field("history").columns]
        for row, (user, item) in enumerate(zip(pairs.users, pairs.items, strict=True)):
            raw_user, raw_item = data.user_ids[user], data.item_ids[item]
            mine = positives[positives.user_id == raw_user]
            moment = mine[mine.item_id == raw_item].timestamp.max()
            earlier = mine[mine.timestamp < moment].drop_duplicates("item_id", keep="last")
            earlier_rows = {int(np.flatnonzero(data.item_ids == i)[0]) for i in earlier.item_id}
            assert set(mask.indices[mask.indptr[user]:mask.indptr[user + 1]].tolist()) == earlier_rows, (split, row)
            assert {int(i) for i in window[row] if i > 0} <= earlier_rows
            assert item not in earlier_rows  # the target itself always competes


def test_every_built_in_model_runs_on_the_global_split(tmp_path):
    models = [m for m in registry.available("model") if m not in ("attention-deepfm", "composed")]
    res = CliRunner().invoke(main, ["run", "--models", ",".join(models), "--baseline", "mostpop", "--split", "global",
                                    "--split-opt", "val=0.6", "--split-opt", "test=0.8", *SYNTH, *FAST,
                                    "--results-dir", str(tmp_path), "--format", "json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert {r["model"] for r in rows} == set(models)
    assert "global timeline" in rows[0]["protocol"]["split"] and "0.0%" in rows[0]["protocol"]["audit"]


def test_the_audit_finds_later_training_interactions_of_other_users_only():
    # user 1 trains at 10 and 50, user 2 at 20; targets: user 1 at 30 (user 2's 20 is earlier: no leak from
    # another user), user 2 at 30 (user 1's 50 is later: a leak of 20 units)
    audit = leakage_audit(np.array([1, 1, 2]), np.array([10, 50, 20]), np.array([1, 2]), np.array([30, 30]))
    assert audit["with_later_training"] == 1 and audit["share"] == 0.5 and audit["median_lag"] == 20
    seconds = leakage_audit(np.array([1, 2]), np.array([0, 2 * 86_400]), np.array([1]), np.array([0]), 1.0)
    assert seconds["median_lag"] == 2.0 and seconds["lag_unit"] == "days"


def test_the_audit_of_leave_one_out_on_movielens_and_zero_for_the_global_split():
    from bench.config import DataConfig
    from bench.runner import load_frames, prepare_data

    folder = require_ml100k()
    loo = prepare_data(load_frames(DataConfig(data_dir=str(folder))), DataConfig(data_dir=str(folder)))
    audit = loo.info["audit"]["test"]
    assert audit["evaluated"] == 942 and audit["share"] > 0.99 and 90 < audit["median_lag"] < 100  # days
    cfg = DataConfig(data_dir=str(folder), split="global")
    timeline = prepare_data(load_frames(cfg), cfg)
    assert timeline.info["audit"]["test"]["with_later_training"] == 0 and len(timeline.test) > 50


def _run(seed=1, model="fm", **config):
    data = {"threshold": 4.0, "min_interactions": 3, "history": 0, "split": "loo", **config.pop("data", {})}
    return SimpleNamespace(model=model, seed=seed, dataset=config.pop("dataset", "ml-100k"),
                           ties=config.pop("ties", "expected"), protocol=config.pop("protocol", "full"),
                           num_negatives=None,
                           config={"data": data, "train": {"sampler": "uniform", "num_negatives": 4, "loss": "bce",
                                                           **config.pop("train", {})},
                                   "eval": {"ks": [5, 10, 20], "protocol": "full"},
                                   "data_checksum": config.pop("checksum", "abc"),
                                   "protocol": config.pop("facts", {"audit": {"test": {
                                       "share": 0.99, "median_lag": 96.0, "lag_unit": "days"}}})})


@pytest.mark.parametrize("factor, change", [
    ("dataset", {"dataset": "ml-1m"}), ("checksum", {"checksum": "def"}), ("positives", {"data": {"threshold": 3.0}}),
    ("split", {"data": {"split": "global"}, "facts": {"split": "global", "cutoffs": {"val": 1, "test": 2}}}),
    ("history", {"data": {"history": 10}}), ("candidates", {"protocol": "sampled"}), ("ties", {"ties": "optimistic"}),
    ("negatives", {"train": {"sampler": "popularity"}}), ("seeds", {"seed": 2}),
    ("audit", {"facts": {"audit": {"test": {"share": 0.5, "median_lag": 3.0, "lag_unit": "days"}}}}),
])
def test_each_factor_changes_the_card_and_a_comparable_one_refuses_one_table(factor, change):
    from bench.results.card import COMPARABLE, card, differences

    base, other = _run(), _run(**change)
    assert card([base])[factor] != card([other])[factor]
    both = card([base, other])
    assert base.model in both[factor] or factor == "seeds" or both[factor] != card([base])[factor]
    assert (factor in differences([base, other])) == (factor in COMPARABLE)


def test_the_card_names_a_sequential_models_own_encoder_and_a_full_softmax_has_no_sampled_negatives():
    from bench.results.card import card

    sasrec = _run(model="sasrec", data={"history": 50, "history_encoder": "mean"}, train={"loss": "softmax"})
    sasrec.config["model"] = {"plugin": "sasrec"}
    gru4rec = _run(model="gru4rec", data={"history": 50, "history_encoder": "mean"})
    gru4rec.config["model"] = {"plugin": "gru4rec"}
    deepfm = _run(model="deepfm+history", data={"history": 10, "history_encoder": "recency"})
    deepfm.config["model"] = {"plugin": "deepfm"}
    assert card([sasrec])["history"].endswith("read by transformer (the model's own)")
    assert card([gru4rec])["history"].endswith("read by gru (the model's own)")
    assert card([deepfm])["history"].endswith("read by recency")  # the data setting chooses a FeatureEmbedding's
    assert card([sasrec])["negatives"] == "no sampled negatives: a softmax over every item; loss softmax"
    assert card([gru4rec])["negatives"].startswith("4 uniform negatives per positive")
    gone = _run(model="x", data={"history": 5, "history_encoder": "gru"})
    gone.config["model"] = {"plugin": "no-longer-installed"}
    assert card([gone])["history"].endswith("read by gru")


def test_bench_report_refuses_runs_of_different_splits_in_one_table_unless_mixed(tmp_path):
    for split in ("loo", "global"):
        res = CliRunner().invoke(main, ["run", "--models", "mostpop", "--baseline", "mostpop", "--split", split,
                                        *SYNTH, *FAST, "--results-dir", str(tmp_path)])
        assert res.exit_code == 0, res.output
    refused = CliRunner().invoke(main, ["report", "--results-dir", str(tmp_path)])
    assert refused.exit_code == 2 and len(refused.output.strip().splitlines()) == 1
    assert "protocol cards differ" in refused.output and "dataset:" in refused.output
    one = CliRunner().invoke(main, ["report", "--results-dir", str(tmp_path), "--dataset",
                                    "synthetic[n_interactions=3000,n_items=90,n_users=60,split=global]"])
    assert one.exit_code == 0 and "global timeline" in one.stdout and "Protocol card:" in one.stdout


def test_the_markdown_page_and_the_csv_carry_the_card(tmp_path):
    res = CliRunner().invoke(main, ["run", "--models", "mostpop", "--baseline", "mostpop", *SYNTH, *FAST,
                                    "--results-dir", str(tmp_path), "--output", str(tmp_path / "page.md"),
                                    "--format", "csv"])
    assert res.exit_code == 0, res.output
    header = pd.read_csv(__import__("io").StringIO(res.stdout)).columns
    assert "protocol: split" in header and "protocol: leakage audit (test)" in header
    page = (tmp_path / "page.md").read_text()
    assert "Protocol card:" in page and "- leakage audit (test):" in page
