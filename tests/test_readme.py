"""The README's plugin example is real code: it builds, trains a step and ranks like a built-in."""

from __future__ import annotations

import re

import torch
from conftest import REPO

import registry


def readme_example() -> str:
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    return next(b for b in blocks if "class MyDeepFM" in b)


def test_readme_plugin_example_works_through_the_registry(small_data):
    namespace: dict = {}
    exec(compile(readme_example(), "README.md", "exec"), namespace)
    model_cls = namespace["MyDeepFM"]
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
        assert "dropout" in model_cls.search_space(__import__("optuna").trial.FixedTrial({"dropout": 0.3}))
