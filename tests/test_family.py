"""The DeepFM family's members of issue 26 (DCN-V2, PNN, NFM, AFM, FiBiNET, Wide & Deep) and their layers (cross,
product, bi-interaction, afm, bilinear).

Each layer against its paper's formula computed the slow way, pair by pair, and its pairs path against `forward`
on the formed pairs; each layer composed with `fm`. Each model ranks all items exactly as scoring every pair one
by one (`score_all`, and through the evaluator), trains every parameter, builds its paper's defaults on real
features, keeps them inside its search space, and takes history like any FeatureEmbedding model."""

from __future__ import annotations

import itertools

import numpy as np
import optuna
import pytest
import torch
import torch.nn.functional as F

import registry
from bench.config import DataConfig, EvalConfig, ModelConfig, TrainConfig
from bench.data.features import FeatureSpec
from bench.data.pipeline import prepare
from bench.eval.evaluator import evaluate
from bench.nn.model import RankingModel, create_model, score_every_pair
from bench.runner import build_model
from bench.train.trainer import train
from bench.tune.space import untuned_params

CPU = torch.device("cpu")
MODELS = ["dcnv2", "pnn", "nfm", "afm", "fibinet", "widedeep"]
LAYERS = ["cross", "product", "bi-interaction", "afm", "bilinear"]
VARIANTS = {  # label: (model, tiny options); the paper's options each get a variant
    "dcnv2": ("dcnv2", {"mlp": (8,), "cross.layers": 2}),
    "dcnv2-stacked-mixture": ("dcnv2", {"structure": "stacked", "mlp": (8,), "cross.rank": 4, "cross.experts": 2}),
    "pnn": ("pnn", {"mlp": (8, 4)}),
    "pnn-outer": ("pnn", {"product": "outer", "mlp": (8,)}),
    "pnn-both": ("pnn", {"product": "both", "mlp": (8,)}),
    "nfm": ("nfm", {"mlp": (8,)}),
    "nfm-0": ("nfm", {"mlp": ()}),
    "afm": ("afm", {"afm.att_dim": 4}),
    "fibinet": ("fibinet", {"mlp": (8,), "bilinear.reduction": 1}),  # (a SENET of one ReLU unit may start dead)
    "fibinet-field-all": ("fibinet", {"mlp": (8,), "bilinear.type": "field-all", "bilinear.reduction": 1}),
    "fibinet-field-each": ("fibinet", {"mlp": (8,), "bilinear.type": "field-each", "bilinear.reduction": 1}),
    "widedeep": ("widedeep", {"mlp": (8,)}),
    "widedeep-no-crosses": ("widedeep", {"mlp": (8,), "crosses": False}),
}
LAYER_OPTIONS = {"cross": {"cross.layers": 2}, "afm": {"afm.att_dim": 4}, "bilinear": {"bilinear.reduction": 1}}
PAIR_SCORING = {"pnn", "nfm", "widedeep"}  # their heads score all pairs from the two sides
UNREAD = {"dcnv2": ".weights.", "pnn": ".weights.",  # no first-order term in their equations
          "widedeep": ".projection"}  # reads the flat view only: no field projected to embed_dim
N_USERS, N_ITEMS = 9, 7


def make_spec() -> FeatureSpec:
    """User id, a 4-dim age and gender; item id (its own dim) and multi-valued genres: 5 fields."""
    return FeatureSpec.build([
        dict(name="user_id", side="user", vocab_size=N_USERS, is_id=True),
        dict(name="age", side="user", vocab_size=6, dim=4),
        dict(name="gender", side="user", vocab_size=3),
        dict(name="item_id", side="item", vocab_size=N_ITEMS, is_id=True, dim=6),
        dict(name="genres", side="item", vocab_size=5, multi_valued=True, max_len=3),
    ])


def feature_rows(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Every user row (1..) and every item row (0 = all padding), some values unknown (0)."""
    g = torch.Generator().manual_seed(seed)
    users = torch.stack([torch.arange(1, N_USERS), torch.randint(0, 6, (N_USERS - 1,), generator=g),
                         torch.randint(0, 3, (N_USERS - 1,), generator=g)], dim=1)
    items = torch.cat([torch.arange(N_ITEMS)[:, None], torch.randint(0, 5, (N_ITEMS, 3), generator=g)], dim=1)
    items[0] = 0
    return users, items


def every_pair(users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return users.repeat_interleave(len(items), 0), items.repeat(len(users), 1)


def trained(label: str, steps: int = 4) -> RankingModel:
    """The variant built on `make_spec`, after a few Adam steps on a user x item rule: off its initial
    weights (zero-initialised crosses and first-order weights included)."""
    name, options = VARIANTS[label]
    torch.manual_seed(0)
    model = create_model(name, make_spec(), 4, **options)
    u, i = every_pair(*feature_rows())
    labels = ((u[:, 1] >= 3) == (i[:, 1] % 2 == 0)).float()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(steps):
        loss = F.binary_cross_entropy_with_logits(model(u, i), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def untrained(model: RankingModel, name: str) -> list[str]:
    """The parameters of the model's equation that got no gradient."""
    return [n for n, p in model.named_parameters() if (p.grad is None or not p.grad.abs().sum() > 0)
            and not (name in UNREAD and UNREAD[name] in n)]


def formed(users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """(U, Fu, D) x (I, Fi, D) -> (U * I, F, D): every pair's fields, the user's first, row u * I + i."""
    n_u, n_i = len(users), len(items)
    return torch.cat([users.repeat_interleave(n_i, 0), items.repeat(n_u, 1, 1)], dim=1)


# --- the layers, against their papers' formulas ----------------------------------------------------------------

def test_the_cross_network_is_eq_1_layer_by_layer():
    torch.manual_seed(0)
    layer = registry.create("interaction", "cross", num_fields=3, dim=2, layers=2).double()
    v = torch.randn(4, 3, 2, dtype=torch.float64)
    x0 = x = v.flatten(1)
    for linear in layer.weights:
        x = x0 * (x @ linear.weight.T + linear.bias) + x
    assert layer.out_dim == 6 and torch.allclose(layer(v), x)


def test_the_low_rank_mixture_is_eq_4_expert_by_expert():
    torch.manual_seed(0)
    layer = registry.create("interaction", "cross", num_fields=3, dim=2, layers=2, rank=2, experts=3).double()
    with torch.no_grad():
        for mixture in layer.weights:
            mixture.bias.normal_()
    v = torch.randn(4, 3, 2, dtype=torch.float64)
    x0 = x = v.flatten(1)
    for m in layer.weights:
        gates = torch.softmax(x @ m.gate.weight.T, dim=1)
        experts = [x0 * (torch.tanh(torch.tanh(x @ m.v[k]) @ m.c[k]) @ m.u[k] + m.bias) for k in range(3)]
        x = sum(gates[:, k:k + 1] * experts[k] for k in range(3)) + x
    assert torch.allclose(layer(v), x)


def slow_inner_products(v: torch.Tensor) -> torch.Tensor:
    return torch.stack([(v[:, i] * v[:, j]).sum(1) for i, j in itertools.combinations(range(v.shape[1]), 2)], 1)


@pytest.mark.parametrize("kind", ["inner", "outer", "both"])
def test_the_product_layer_gives_the_inner_products_and_the_sum_pooled_outer_product(kind):
    layer = registry.create("interaction", "product", num_fields=4, dim=3, type=kind)
    v = torch.randn(5, 4, 3, dtype=torch.float64)
    f = v.sum(1)
    outer = torch.stack([torch.outer(row, row).flatten() for row in f])
    expected = {"inner": slow_inner_products(v), "outer": outer,
                "both": torch.cat([slow_inner_products(v), outer], 1)}[kind]
    assert layer.out_dim == expected.shape[1] and torch.allclose(layer.double()(v), expected)


def test_bi_interaction_pooling_is_the_sum_of_the_pairs_products():
    layer = registry.create("interaction", "bi-interaction", num_fields=4, dim=3)
    v = torch.randn(5, 4, 3, dtype=torch.float64)
    expected = sum(v[:, i] * v[:, j] for i, j in itertools.combinations(range(4), 2))
    assert layer.out_dim == 3 and torch.allclose(layer(v), expected)


def test_attentional_pooling_is_eq_3_and_4_pair_by_pair():
    torch.manual_seed(0)
    layer = registry.create("interaction", "afm", num_fields=4, dim=3, att_dim=5).double().eval()
    v = torch.randn(5, 4, 3, dtype=torch.float64)
    w, h = layer.attention[0], layer.attention[2]
    products = [v[:, i] * v[:, j] for i, j in itertools.combinations(range(4), 2)]
    scores = torch.stack([torch.relu(p @ w.weight.T + w.bias) @ h.weight[0] for p in products], 1)
    a = torch.softmax(scores, dim=1)
    expected = sum(a[:, k:k + 1] * p for k, p in enumerate(products))
    assert layer.out_dim == 3 and torch.allclose(layer(v), expected)
    layer.train()
    assert not torch.allclose(layer(v), expected)  # dropout on the pooled vector in training


@pytest.mark.parametrize("kind", ["field-all", "field-each", "field-interaction"])
def test_senet_and_bilinear_interaction_are_eq_3_to_9(kind):
    torch.manual_seed(0)
    layer = registry.create("interaction", "bilinear", num_fields=4, dim=3, type=kind, reduction=2).double()
    v = torch.randn(5, 4, 3, dtype=torch.float64)
    squeeze = v.mean(2)
    excite = torch.relu(torch.relu(squeeze @ layer.excitation[0].weight.T) @ layer.excitation[2].weight.T)
    pairs = list(itertools.combinations(range(4), 2))

    def bilinear(weights, fields):
        def w(k, i):
            return weights[0] if kind == "field-all" else weights[i] if kind == "field-each" else weights[k]
        return torch.cat([(fields[:, i] @ w(k, i)) * fields[:, j] for k, (i, j) in enumerate(pairs)], 1)

    expected = torch.cat([bilinear(layer.bilinear[0].weight, v),
                          bilinear(layer.bilinear[1].weight, v * excite.unsqueeze(2))], 1)
    assert layer.excitation[0].out_features == 2 and layer.out_dim == 2 * 6 * 3
    assert torch.allclose(layer(v), expected)
    alone = registry.create("interaction", "bilinear", num_fields=4, dim=3, type=kind, senet=False).double()
    assert alone.out_dim == 6 * 3 and torch.allclose(alone(v), bilinear(alone.bilinear[0].weight, v))


@pytest.mark.parametrize("name, options", [("product", {"type": "inner"}), ("product", {"type": "outer"}),
                                           ("product", {"type": "both"}), ("bi-interaction", {})])
@pytest.mark.parametrize("user_fields", [0, 1, 3, 5])
def test_a_pairs_path_equals_forward_on_the_formed_pairs(name, options, user_fields):
    layer = registry.create("interaction", name, num_fields=5, dim=3, **options).double()
    users = torch.randn(4, user_fields, 3, dtype=torch.float64)
    items = torch.randn(6, 5 - user_fields, 3, dtype=torch.float64)
    assert layer.pair_path == "forward"
    grid = layer.forward_pairs(users, items)
    assert grid.shape == (4, 6, layer.out_dim)
    assert torch.allclose(grid.reshape(24, -1), layer(formed(users, items)))


@pytest.mark.parametrize("name", LAYERS)
def test_each_layer_composes_with_fm_ranks_every_pair_exactly_and_trains(name):
    """The `composed` model of fm and the layer: its pairs path (or the formed pairs) equals forward, and a
    gradient step reaches every weight of the layer."""
    torch.manual_seed(0)
    model = create_model("composed", make_spec(), 4, interactions=f"fm,{name}", mlp=(8,), **LAYER_OPTIONS.get(name, {}))
    users, items = feature_rows()
    model(*every_pair(users, items)).sum().backward()
    layer = model.terms[name].layer
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.parameters())
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model.score_all(users, items), score_every_pair(model, users, items))


@pytest.mark.parametrize("name", LAYERS)
def test_each_layers_search_space_is_prefixed_and_builds_it(name):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(3):
        params = registry.search_space("interaction", name, study.ask())
        assert all(key.startswith(name + ".") for key in params) and (params or name == "bi-interaction")
        layer = registry.create("interaction", name, num_fields=4, dim=4,
                                **{key.split(".", 1)[1]: value for key, value in params.items()})
        assert layer(torch.randn(2, 4, 4)).shape == (2, layer.out_dim)


@pytest.mark.parametrize("name, options, problem", [
    ("cross", {"layers": 0}, "cross: layers"), ("cross", {"rank": -1}, "cross: rank"),
    ("product", {"type": "kernel"}, "product: type must be one of inner, outer, both"),
    ("bilinear", {"type": "all"}, "bilinear: type must be one of field-all"),
    ("bilinear", {"senet": "yes"}, "bilinear: senet must be true or false"),
    ("afm", {"dropout": 1.0}, "afm: dropout"),
])
def test_bad_layer_options_name_the_layer_and_option(name, options, problem):
    with pytest.raises(ValueError, match=problem):
        registry.create("interaction", name, num_fields=4, dim=4, **options)


# --- the models ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("label", VARIANTS)
def test_full_ranking_equals_forward_on_every_pair(label):
    model = trained(label)
    users, items = feature_rows()
    with torch.no_grad():
        full = model.score_all(users, items)
        assert full.shape == (N_USERS - 1, N_ITEMS) and full.std() > 0
        torch.testing.assert_close(full, score_every_pair(model, users, items), rtol=1e-5, atol=1e-6)
    assert type(model).pair_scoring == (VARIANTS[label][0] in PAIR_SCORING)


@pytest.mark.parametrize("label", VARIANTS)
def test_a_gradient_step_reaches_every_parameter(label):
    name, options = VARIANTS[label]
    torch.manual_seed(0)
    model = create_model(name, make_spec(), 4, **options)
    model(*every_pair(*feature_rows())).sum().backward()
    assert not untrained(model, name)


@pytest.mark.parametrize("label", [label for label, (name, _) in VARIANTS.items() if name in PAIR_SCORING])
def test_pair_scoring_models_train_on_every_item_at_once_like_on_rows(label):
    """The softmax over all items scores a batch against every item from the two sides, dropout drawn per pair:
    in eval mode it equals forward on the formed pairs, and its gradient reaches every parameter."""
    model = trained(label)
    users, items = feature_rows()
    assert model.all_items
    with torch.no_grad():
        torch.testing.assert_close(model.all_item_logits(users, items), score_every_pair(model, users, items))
    model.train()
    model.zero_grad()
    model.all_item_logits(users, items).logsumexp(1).sum().backward()
    assert not untrained(model, VARIANTS[label][0])


class PairByPair(RankingModel):
    """A model's forward, ranked the slow way: every (user, item) pair formed and scored by `forward`."""

    def __init__(self, model: RankingModel):
        super().__init__(model.spec)
        self.model = model

    def forward(self, user_x: torch.Tensor, item_x: torch.Tensor) -> torch.Tensor:
        return self.model(user_x, item_x)


@pytest.mark.parametrize("name", MODELS)
def test_the_evaluator_ranks_as_scoring_every_pair_one_by_one(small_data, name):
    torch.manual_seed(0)
    model = build_model(ModelConfig(name, embed_dim=4).with_params({"mlp": "8"} if name != "afm" else {}),
                        small_data).double()
    train(model, small_data, TrainConfig(epochs=1, batch_size=1024), EvalConfig(), CPU)
    fast, slow = evaluate(model, small_data, "test"), evaluate(PairByPair(model), small_data, "test")
    for metric, values in slow.per_user.items():
        np.testing.assert_allclose(fast.per_user[metric], values, rtol=0, atol=1e-12, err_msg=metric)


@pytest.mark.parametrize("name", MODELS)
def test_the_defaults_build_on_real_features_and_lie_inside_the_search_space(small_data, name):
    """`bench tune` starts from the untuned defaults: the space must be able to propose them."""
    model = build_model(ModelConfig(name), small_data).eval()
    u, i = small_data.user_features[1:4], small_data.item_features[1:6]
    with torch.no_grad():
        assert torch.isfinite(model.score_all(u, i)).all()
    params = untuned_params(ModelConfig(name), TrainConfig(), DataConfig())
    assert params is not None, f"{name}'s defaults lie outside its search space"
    fixed = registry.search_space("model", name, optuna.trial.FixedTrial(params))
    registry.create("model", name, spec=small_data.spec, **fixed)


def test_the_paper_defaults(small_data):
    spec, fields = small_data.spec, len(small_data.spec)

    def make(name):
        return registry.create("model", name, spec=spec)

    dcn = make("dcnv2")
    assert dcn.structure == "parallel" and len(dcn.cross.weights) == 3 and dcn.cross.rank == 0
    assert dcn.cross.out_dim == fields * 16 and dcn.readout.in_features == fields * 16
    pnn = make("pnn")
    assert pnn.products.type == "inner" and pnn.products.out_dim == fields * (fields - 1) // 2
    nfm = make("nfm")
    assert [m.out_features for m in nfm.mlp.modules() if isinstance(m, torch.nn.Linear)] == [64, 1]
    afm = make("afm")
    assert afm.afm.layer.out_dim == 16 and afm.afm.readout.in_features == 16 and not hasattr(afm, "mlp")
    fibinet = make("fibinet")
    assert fibinet.bilinear.type == "field-interaction" and fibinet.bilinear.excitation[0].out_features == fields // 3
    widedeep = make("widedeep")
    crossed = [(u.name, i.name) for u, i in widedeep.crosses.crossed]
    assert crossed == [("age", "genres"), ("gender", "genres"), ("occupation", "genres")]


@pytest.mark.parametrize("name", MODELS)
def test_sampled_search_spaces_build_the_model(small_data, name):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    u, i = every_pair(small_data.user_features[1:3], small_data.item_features[1:4])
    for _ in range(2):
        params = registry.search_space("model", name, study.ask())
        assert params
        model = registry.create("model", name, spec=small_data.spec, embed_dim=4, **params)
        assert torch.isfinite(model(u, i)).all()


def test_wide_and_deep_crosses_weigh_each_user_value_with_the_items_known_values():
    model = trained("widedeep")
    users, items = feature_rows()
    age_genres, gender_genres = model.crosses.tables
    with torch.no_grad():
        assert age_genres.abs().sum() > 0  # trained, from zero
        expected = torch.zeros(len(users), len(items))
        for u, i in itertools.product(range(len(users)), range(len(items))):
            known = [g for g in items[i, 1:].tolist() if g > 0]
            for table, value in ((age_genres, users[u, 1]), (gender_genres, users[u, 2])):
                if value > 0 and known:
                    expected[u, i] += sum(table[value, g] for g in known) / len(known)
        torch.testing.assert_close(model.crosses.scorer(items)(users), expected)
        u, i = every_pair(users, items)
        torch.testing.assert_close(model(u, i) - model.head(model.embedding(u, i)).reshape(-1), expected.flatten())


@pytest.mark.parametrize("name, options, problem", [
    ("dcnv2", {"structure": "serial"}, "structure: expected one of parallel, stacked"),
    ("pnn", {"product": "kernel"}, "product: type must be one of"),
    ("widedeep", {"crosses": "yes"}, "crosses: expected true or false"),
    ("fibinet", {"cross.layers": 2}, "'cross', which is not among this model's interactions"),
])
def test_bad_model_options_are_named(name, options, problem):
    with pytest.raises(ValueError, match=problem):
        registry.create("model", name, spec=make_spec(), **options)


@pytest.mark.parametrize("name, encoder", [("nfm", "mean"), ("dcnv2", "mean"), ("widedeep", "target")])
def test_models_take_history_and_still_rank_every_pair_exactly(small_frames, name, encoder):
    """The history field is one more user field; a target-aware encoder makes full ranking form the pairs (Wide &
    Deep's crosses are then counted once, through forward)."""
    data = prepare(small_frames, history=4, history_encoder=encoder)
    torch.manual_seed(0)
    model = build_model(ModelConfig(name, embed_dim=4).with_params({"mlp": "8"}), data)
    assert "history" in [f.name for f in model.spec]
    train(model, data, TrainConfig(epochs=1, batch_size=1024), EvalConfig(), CPU)
    model.eval()
    user_x = data.user_rows()(torch.from_numpy(data.test.states[:5]))
    with torch.no_grad():
        torch.testing.assert_close(model.score_all(user_x, data.item_features),
                                   score_every_pair(model, user_x, data.item_features), atol=1e-5, rtol=1e-5)
