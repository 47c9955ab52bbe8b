"""The declared scoring contract of models and interaction layers: what the registry checks when it creates one,
what the evaluator asks of it, and the older documented forms that keep working."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import registry
from bench.config import EvalConfig, ModelConfig, TrainConfig
from bench.eval.evaluator import evaluate
from bench.nn.model import RankingModel, create_model, score_every_pair
from bench.runner import build_model


class _Ids(nn.Module):
    """A trained model of the older documented form: a plain nn.Module with `trainable`, `forward` and
    `score_all`, no base class, no item_scorer, no memory figures. Its score_all is the negated forward, so
    whether ranking used it shows in the ranks."""

    trainable = True

    def __init__(self, spec, embed_dim: int = 4):
        super().__init__()
        self.spec = spec
        self.users, self.items = nn.Embedding(10_000, embed_dim), nn.Embedding(10_000, embed_dim)

    def forward(self, user_x, item_x):
        return (self.users(user_x[:, 0]) * self.items(item_x[:, 0])).sum(1)

    def score_all(self, user_x, item_x):
        return -(self.users(user_x[:, 0]) @ self.items(item_x[:, 0]).T)


def test_an_older_form_plain_module_is_ranked_by_its_own_score_all(small_data):
    with registry.isolated():
        registry.register("model", "test-older-form")(_Ids)
        model = create_model("test-older-form", small_data.spec, embed_dim=4)
        user_x, item_x = small_data.user_features[1:5], small_data.item_features
        torch.testing.assert_close(model.item_scorer(item_x)(user_x), -score_every_pair(model, user_x, item_x))
        assert model.floats_per_pair() == model.floats_per_row() >= 1
        result = evaluate(model, small_data, "test")
    assert result.users.size == len(small_data.test)


def test_a_subclass_overriding_score_all_through_super_ranks_by_it_without_recursion(small_data):
    torch.manual_seed(0)
    base = build_model(ModelConfig("fm", embed_dim=8), small_data).eval()

    class Shifted(type(base)):
        def score_all(self, user_x, item_x):
            return super().score_all(user_x, item_x) + 1.0

    model = Shifted(small_data.spec, embed_dim=8).eval()
    model.load_state_dict(base.state_dict())
    user_x, item_x = small_data.user_features[1:4], small_data.item_features
    with torch.no_grad():
        torch.testing.assert_close(model.item_scorer(item_x)(user_x), base.score_all(user_x, item_x) + 1.0)
        torch.testing.assert_close(base.score_all(user_x, item_x), score_every_pair(base, user_x, item_x))


def test_a_model_declaring_a_useless_memory_figure_is_refused_when_created(small_data):
    from plugins.models.fm import FM

    class Zero(FM):
        def floats_per_pair(self) -> int:
            return 0

    with registry.isolated():
        registry.register("model", "test-zero")(Zero)
        with pytest.raises(registry.PluginContractError, match=r"floats_per_pair\(\) to give an int >= 1 \(got 0\)"):
            create_model("test-zero", small_data.spec)


class _PlainLayer(nn.Module):
    """A layer as an earlier README described it: built as Layer(num_fields, dim), `out_dim` and `forward`, no
    base class and no num_fields / dim attributes."""

    def __init__(self, num_fields, dim):
        super().__init__()
        self.out_dim = 2
        self.mix = nn.Linear(num_fields * dim, 2)

    def forward(self, fields):
        return self.mix(fields.flatten(1))


def test_a_plain_layer_without_num_fields_composes_trains_and_ranks_every_pair_exactly(small_data):
    from bench.train.trainer import train

    with registry.isolated():
        registry.register("interaction", "test-plain")(_PlainLayer)
        config = ModelConfig("composed", embed_dim=8).with_params({"interactions": "fm,test-plain"})
        torch.manual_seed(0)
        model = build_model(config, small_data)
        train_cfg = config.train_config(TrainConfig(epochs=2, batch_size=512), seed=0)
        result = train(model, small_data, train_cfg, EvalConfig(), torch.device("cpu"))
        assert result.epochs_run == 2 and np.isfinite(result.history[-1]["loss"])
        model.eval()
        user_x, item_x = small_data.user_features[1:6], small_data.item_features
        with torch.no_grad():
            torch.testing.assert_close(model.score_all(user_x, item_x), score_every_pair(model, user_x, item_x))


@pytest.mark.parametrize("declared, problem", [
    ("scores", "a pair_scores method, as its pair_path 'scores' declares"),
    ("sideways", "pair_path to be None or one of 'scores', 'forward'"),
])
def test_a_layer_declaring_a_pairs_path_it_lacks_is_refused(declared, problem):
    class Declares(_PlainLayer):
        pair_path = declared

    with registry.isolated():
        registry.register("interaction", "test-declares")(Declares)
        with pytest.raises(registry.PluginContractError, match=problem):
            registry.create("interaction", "test-declares", num_fields=3, dim=4)


def test_the_evaluator_asks_only_the_declared_contract():
    """No MRO inspection, no getattr fallbacks: the evaluator's source names the contract's methods only."""
    import inspect

    import bench.eval.evaluator as evaluator

    source = inspect.getsource(evaluator)
    assert "__mro__" not in source and "getattr(" not in source and "hasattr(" not in source
    assert "item_scorer" in source and "floats_per_pair" in source


def test_rankingmodel_subclass_with_only_forward_ranks_by_every_pair(small_data):
    class Dot(RankingModel):
        def __init__(self, spec):
            super().__init__(spec)
            self.weight = nn.Parameter(torch.ones(1))

        def forward(self, user_x, item_x):
            return self.weight * (user_x[:, 0] * item_x[:, 0]).float()

    model = Dot(small_data.spec)
    user_x, item_x = small_data.user_features[1:4], small_data.item_features
    expected = small_data.user_features[1:4, :1].float() * small_data.item_features[:, 0].float()
    torch.testing.assert_close(model.score_all(user_x, item_x), expected)
