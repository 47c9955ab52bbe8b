"""The README's plugin guide is real code: each kind's example builds through the registry and works."""

from __future__ import annotations

import json
import re

import numpy as np
import optuna
import pandas as pd
import torch
from conftest import REPO

import registry
from bench.config import EvalConfig, ModelConfig, TrainConfig
from bench.data.pipeline import prepare
from bench.runner import build_model
from bench.train.trainer import train


def example(name: str) -> dict:
    """The namespace of the README's python block that defines `name`."""
    text = (REPO / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if f"class {name}(" in b)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    return namespace


def test_the_model_example_trains_and_ranks_like_a_built_in(small_data):
    model_cls = example("MyDeepFM")["MyDeepFM"]
    with registry.isolated():
        registry.register("model", "readme-mydeepfm")(model_cls)
        model = registry.create("model", "readme-mydeepfm", spec=small_data.spec, embed_dim=8)
        users, items = small_data.train.users[:64], small_data.train.items[:64]
        logits = model(small_data.user_features[users], small_data.item_features[items])
        assert logits.shape == (64,)
        logits.sum().backward()
        model.eval()
        with torch.no_grad():
            full = model.score_all(small_data.user_features[1:4], small_data.item_features)
            one = model(small_data.user_features[[2]], small_data.item_features[[5]])
        assert full.shape == (3, small_data.n_items) and torch.allclose(full[1, 5], one[0], atol=1e-6)
        assert "dropout" in model_cls.search_space(optuna.trial.FixedTrial({"dropout": 0.3}))


def test_the_interaction_example_composes_and_ranks_all_pairs(small_data):
    layer_cls = example("InnerProducts")["InnerProducts"]
    with registry.isolated():
        registry.register("interaction", "readme-inner")(layer_cls)
        layer = registry.create("interaction", "readme-inner", num_fields=6, dim=4)
        v = torch.randn(3, 6, 4)
        assert layer.out_dim == 15 and torch.allclose(layer(v)[:, 0], (v[:, 0] * v[:, 1]).sum(-1))
        torch.manual_seed(0)
        model = build_model(ModelConfig("composed", embed_dim=8).with_params({"interactions": "fm,readme-inner"}),
                            small_data)
        train(model, small_data, TrainConfig(epochs=1), EvalConfig(), torch.device("cpu"))
        model.eval()
        u, i = small_data.user_features[1:4], small_data.item_features
        with torch.no_grad():
            full = model.score_all(u, i)
            pairs = model(u.repeat_interleave(len(i), 0), i.repeat(len(u), 1))
        assert torch.allclose(full.flatten(), pairs, atol=1e-5)


def test_the_encoder_example_encodes_saves_and_loads(tmp_path):
    encoder_cls = example("HashEncoder")["HashEncoder"]
    with registry.isolated():
        registry.register("encoder", "hash")(encoder_cls)
        encoder = registry.create("encoder", "hash", buckets=50)
        codes = encoder.fit_transform(pd.Series(["10025", "94110", "", "10025"]))
        assert codes.dtype == np.int64 and codes[2] == 0 and codes[0] == codes[3] and codes[[0, 1, 3]].min() >= 1
        assert codes.max() <= 50 and encoder.vocab_size == 51
        encoder.save(tmp_path / "hash.json")
        again = encoder_cls.load(tmp_path / "hash.json")
        assert np.array_equal(again.transform(pd.Series(["10025", "94110"])), codes[:2])


def test_the_sampler_example_draws_fresh_negatives_that_are_never_positives(small_data):
    sampler_cls = example("EasyNegatives")["EasyNegatives"]
    with registry.isolated():
        registry.register("sampler", "easy")(sampler_cls)
        sampler = registry.create("sampler", "easy", num_negatives=3, seed=1).fit(small_data)
        first, second = sampler.sample(1), sampler.sample(2)
        negatives = first.labels == 0
        assert int(negatives.sum()) == 3 * len(small_data.train) and int(first.labels.sum()) == len(small_data.train)
        users = small_data.train.users[first.positives[negatives].numpy()]
        assert not small_data.train_csr.contains(users, first.items[negatives].numpy()).any()
        assert not torch.equal(first.items, second.items) and torch.equal(first.items, sampler.sample(1).items)
        model = build_model(ModelConfig("fm", embed_dim=8), small_data)
        train(model, small_data, TrainConfig(epochs=1, sampler="easy"), EvalConfig(), torch.device("cpu"))


def test_the_dataset_example_loads_through_the_pipeline(tmp_path):
    dataset_cls = example("JsonLines")["JsonLines"]
    rng = np.random.default_rng(0)
    lines = [{"user": f"u{u}", "item": f"i{rng.integers(30)}", "stars": int(rng.integers(1, 6)), "time": t}
             for t, u in enumerate(np.repeat(np.arange(20), 12))]
    (tmp_path / "plays.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    with registry.isolated():
        registry.register("dataset", "jsonl")(dataset_cls)
        frames = registry.create("dataset", "jsonl", path=str(tmp_path / "plays.jsonl")).load()
        data = prepare(frames, threshold=4.0, min_interactions=3)
        assert [f.name for f in data.spec] == ["user_id", "item_id"] and len(data.test) > 0
        try:
            registry.create("dataset", "jsonl").load()
        except ValueError as exc:
            assert "option path" in str(exc)
        else:
            raise AssertionError("a missing path must be an error")
