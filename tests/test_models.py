"""Model plugins: built through the registry, full ranking equal to pairwise scoring, learning, contracts."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
import torch
import torch.nn.functional as F

import registry
from bench.data.features import FeatureSpec
from bench.data.types import Csr, InteractionData, Pairs
from bench.kernels import fm as fm_kernels
from bench.nn.embedding import Embedded
from bench.nn.layers import Dropout
from bench.nn.model import create_model
from plugins.models.mostpop import MostPop

N_USERS, N_ITEMS = 13, 11  # rows, row 0 being padding
TRAINABLE = ["fm", "deepfm", "xdeepfm", "autoint", "attention-deepfm", "neumf", "composed", "mf",
             "dcnv2", "pnn", "nfm", "afm", "fibinet", "widedeep"]
FITTED = ["mostpop", "ease", "itemknn"]
SMALL = {  # tiny layers keep the suite fast; defaults are exercised in test_defaults_build
    "fm": {}, "neumf": {"mlp_dim": 8, "mlp": (16, 8)}, "mostpop": {}, "mf": {},
    "ease": {"reg": 10.0}, "itemknn": {"k": 5, "shrink": 1.0},
    "deepfm": {"mlp": (16, 8)}, "composed": {"mlp": (16,), "interactions": "fm,cin", "cin.layers": "8,4"},
    "xdeepfm": {"mlp": (16, 8), "cin.layers": (8, 8)},
    "autoint": {"mlp": (16,), "attention.att_dim": 4}, "attention-deepfm": {"mlp": (16,)},
    "dcnv2": {"mlp": (16,), "cross.layers": 2}, "pnn": {"mlp": (16, 8)}, "nfm": {"mlp": (16,)},
    "afm": {"afm.att_dim": 4}, "fibinet": {"mlp": (16,)}, "widedeep": {"mlp": (16,)},
}


def make_spec() -> FeatureSpec:
    return FeatureSpec.build([
        dict(name="user_id", side="user", vocab_size=N_USERS, is_id=True),
        dict(name="age", side="user", vocab_size=8, dim=4),
        dict(name="gender", side="user", vocab_size=3),
        dict(name="item_id", side="item", vocab_size=N_ITEMS, is_id=True, dim=12),
        dict(name="genres", side="item", vocab_size=6, multi_valued=True, max_len=3),
    ])


def feature_matrices(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Row r holds id r; row 0 is all padding, as InteractionData promises."""
    g = torch.Generator().manual_seed(seed)
    users = torch.stack([torch.arange(N_USERS), torch.randint(1, 8, (N_USERS,), generator=g),
                         torch.randint(1, 3, (N_USERS,), generator=g)], dim=1)
    genres = torch.randint(0, 6, (N_ITEMS, 3), generator=g)
    items = torch.cat([torch.arange(N_ITEMS)[:, None], genres], dim=1)
    users[0], items[0] = 0, 0
    return users, items


def make_data(train_items: list[int] | None = None) -> InteractionData:
    spec = make_spec()
    user_x, item_x = feature_matrices()
    items = np.array(train_items if train_items is not None else [1, 2, 3], dtype=np.int64)
    users = np.arange(len(items), dtype=np.int64) % (N_USERS - 1) + 1
    none = Pairs(np.zeros(0, np.int64), np.zeros(0, np.int64))
    csr = Csr.from_pairs(users, items, N_USERS, N_ITEMS)
    return InteractionData(spec, user_x, item_x, Pairs(users, items), none, none, csr, csr,
                           np.arange(N_USERS), np.arange(N_ITEMS))


def build(name: str, **kw):
    torch.manual_seed(0)
    data = make_data()
    model = create_model(name, data.spec, 8, **{**SMALL[name], **kw})
    model.fit(data)
    return model


def all_pairs(user_x: torch.Tensor, item_x: torch.Tensor):
    """Row u * I + i, the order of score_all flattened."""
    return user_x.repeat_interleave(len(item_x), dim=0), item_x.repeat(len(user_x), 1)


def hidden_rule(user_x: torch.Tensor, item_x: torch.Tensor) -> torch.Tensor:
    """Older users like items of genre 1 or 2, younger users the others: a user x item interaction."""
    likes = ((item_x[:, 1:] == 1) | (item_x[:, 1:] == 2)).any(dim=1)
    return ((user_x[:, 1] >= 4) == likes).float()


def fit(model, user_x, item_x, labels, steps: int, lr: float = 0.05) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        loss = F.binary_cross_entropy_with_logits(model(user_x, item_x), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


SEQUENTIAL = ["sasrec", "gru4rec"]  # they read the history field, which this spec lacks: tests/test_sequences.py


def test_every_declared_model_is_covered():
    assert set(registry.available("model")) == set(SMALL) | set(SEQUENTIAL)


def full_and_pairwise(model) -> tuple[torch.Tensor, torch.Tensor]:
    """(score_all of users 1.. against every item, forward on each of those pairs), after 5 steps of
    training: off the tiny initial weights, so a comparison means something."""
    user_x, item_x = make_data().user_features, make_data().item_features
    u, i = all_pairs(user_x, item_x)
    fit(model, u, i, hidden_rule(u, i), steps=5)
    model.eval()
    with torch.no_grad():
        return model.score_all(user_x[1:], item_x), model(*all_pairs(user_x[1:], item_x))


@pytest.mark.parametrize("name", TRAINABLE)
def test_score_all_equals_forward_on_every_pair(name):
    full, pairs = full_and_pairwise(build(name))
    assert full.shape == (N_USERS - 1, N_ITEMS) and full.is_contiguous()
    assert full.std() > 0
    assert torch.allclose(full.flatten(), pairs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", FITTED)
def test_fitted_models_score_states_against_items_by_rows(name):
    model = build(name)
    states, items = torch.arange(1, N_USERS), torch.arange(N_ITEMS)
    full = model.score(states, items)
    assert full.shape == (N_USERS - 1, N_ITEMS) and full.is_contiguous() and torch.isfinite(full).all()
    assert torch.equal(model.score(states[2:5], items[[7, 3]]), full[2:5][:, [7, 3]])  # any rows, any columns


@pytest.mark.parametrize("name", TRAINABLE)
def test_models_learn_a_hidden_rule(name):
    model = build(name)
    user_x, item_x = make_data().user_features, make_data().item_features
    u, i = all_pairs(user_x[1:], item_x[1:])
    labels = hidden_rule(u, i)
    p = labels.mean().item()
    constant = -(p * math.log(p) + (1 - p) * math.log(1 - p))  # the best a bias alone can do
    with torch.no_grad():
        before = F.binary_cross_entropy_with_logits(model(u, i), labels).item()
    fit(model, u, i, labels, steps=15)
    with torch.no_grad():
        after = F.binary_cross_entropy_with_logits(model(u, i), labels).item()
    assert after < before and after < 0.5 * constant, (before, constant, after)


def test_composed_fm_cin_out_dims_add_up_and_both_layers_learn():
    model = build("composed", interactions="fm,cin", **{"cin.layers": "8,6"})
    assert list(model.terms) == ["fm", "cin"]
    dims = {name: term.layer.out_dim for name, term in model.terms.items()}
    assert dims == {"fm": 1, "cin": 4 + 6}
    assert model.terms["cin"].readout.in_features == 10
    assert model.terms["fm"].readout is None
    u, i = all_pairs(*feature_matrices())
    model(u, i).sum().backward()
    assert all(conv.weight.grad.abs().sum() > 0 for conv in model.terms["cin"].layer.convs)
    # the list form and the string form say the same thing
    torch.manual_seed(0)
    same = registry.create("model", "composed", spec=make_spec(), embed_dim=8, interactions=["fm", "cin"],
                           mlp=(16,), **{"cin.layers": (8, 6)})
    assert {k: v.shape for k, v in same.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()}


def test_composed_logit_is_bias_plus_first_order_plus_layers_plus_mlp():
    torch.manual_seed(0)
    model = registry.create("model", "composed", spec=make_spec(), embed_dim=8, interactions="fm,cin", mlp=(16,))
    with torch.no_grad():
        model.bias.fill_(0.25)
    model.eval()
    g = torch.Generator().manual_seed(1)
    e = Embedded(torch.randn(6, 1, generator=g), torch.randn(6, 5, 8, generator=g),
                 torch.randn(6, model.embedding.total_dim, generator=g))
    fields = e.field_embeddings
    expected = (0.25 + e.first_order[:, 0] + fm_kernels.fused(fields)[:, 0]
                + model.terms["cin"].readout(model.terms["cin"].layer(fields))[:, 0]
                + model.mlp(e.flat_embeddings)[:, 0])
    assert torch.allclose(model.head(e).reshape(-1), expected)
    assert registry.create("model", "composed", spec=make_spec(), mlp=()).mlp is None


def test_unknown_interaction_lists_the_known_ones():
    with pytest.raises(registry.UnknownPluginError, match="Did you mean 'cin'") as err:
        registry.create("model", "composed", spec=make_spec(), interactions="fm,cim")
    assert all(name in str(err.value) for name in ("attention", "cin", "fm"))


def test_bad_options_name_what_was_expected():
    with pytest.raises(ValueError, match=r"'cin', which is not among this model's interactions \(fm\)"):
        registry.create("model", "composed", spec=make_spec(), **{"cin.layers": "8"})
    with pytest.raises(TypeError, match="unexpected keyword argument 'cin.layers'"):
        registry.create("model", "deepfm", spec=make_spec(), **{"cin.layers": "8"})
    with pytest.raises(TypeError, match="unexpected keyword argument 'widths'"):
        registry.create("model", "deepfm", spec=make_spec(), widths=3)
    with pytest.raises(TypeError, match="interaction 'cin' rejected options"):
        registry.create("model", "xdeepfm", spec=make_spec(), **{"cin.depth": 3})
    with pytest.raises(ValueError, match="mlp: expected positive widths"):
        registry.create("model", "deepfm", spec=make_spec(), mlp="128,0")
    with pytest.raises(ValueError, match="dropout"):
        registry.create("model", "deepfm", spec=make_spec(), dropout=1.5)
    with pytest.raises(ValueError, match="each layer may appear once"):
        registry.create("model", "composed", spec=make_spec(), interactions="fm,fm")


def test_defaults_follow_the_reference_notebook_and_the_papers():
    spec = make_spec()
    deepfm = registry.create("model", "deepfm", spec=spec)
    widths = [m.out_features for m in deepfm.mlp.net if isinstance(m, torch.nn.Linear)]
    drops = [m.p for m in deepfm.mlp.net if isinstance(m, Dropout)]
    assert deepfm.embedding.embed_dim == 16 and widths == [128, 64, 32, 1] and drops == [0.2] * 3
    fm = registry.create("model", "fm", spec=spec)
    assert isinstance(fm.fm.layer, registry.get("interaction", "fm")) and not hasattr(fm, "mlp")
    xdeepfm = registry.create("model", "xdeepfm", spec=spec)
    assert not hasattr(xdeepfm, "fm")  # no FM term
    assert xdeepfm.cin.layer.out_dim == 32 + 64  # (64, 64), split
    assert registry.get("model", "autoint") is registry.get("model", "attention-deepfm")
    assert registry.create("model", "autoint", spec=spec).attention.layer.out_dim == 5 * 16


@pytest.mark.parametrize("name", sorted(SMALL))
def test_sampled_search_spaces_build_models(name):
    """What the tuner does: the space's params go straight back into create()."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    u, i = all_pairs(*feature_matrices())
    for _ in range(3):
        params = registry.search_space("model", name, study.ask())
        model = registry.create("model", name, spec=make_spec(), **params)
        model.fit(make_data())
        scores = model(u, i) if model.trainable else model.score(torch.arange(1, N_USERS), torch.arange(N_ITEMS))
        assert torch.isfinite(scores).all()


def test_neumf_reads_only_the_id_fields():
    model = build("neumf")
    u, i = all_pairs(*feature_matrices())
    fit(model, u, i, hidden_rule(u, i), steps=5)
    others_u, others_i = u.clone(), i.clone()
    others_u[:, 1:] = torch.randint(0, 3, others_u[:, 1:].shape)
    others_i[:, 1:] = torch.randint(0, 6, others_i[:, 1:].shape)
    with torch.no_grad():
        assert torch.equal(model(u, i), model(others_u, others_i))
        moved = i.clone()
        moved[:, 0] = (moved[:, 0] % (N_ITEMS - 1)) + 1  # a different item id
        assert not torch.allclose(model(u, i), model(u, moved))
    assert [f.name for f in model.gmf.spec] == ["user_id", "item_id"]
    assert [f.name for f in model.towers.spec] == ["user_id", "item_id"]


def test_neumf_joins_a_gmf_product_and_an_mlp_tower():
    model = build("neumf")
    u, i = all_pairs(*feature_matrices())
    fit(model, u, i, hidden_rule(u, i), steps=5)
    with torch.no_grad():
        gmf = model.gmf(u, i).field_embeddings  # (B, 2, embed_dim): user, item
        tower = model.mlp(model.towers(u, i).flat_embeddings)
        expected = model.predict(torch.cat([gmf[:, 0] * gmf[:, 1], tower], dim=1))[:, 0]
        assert torch.allclose(model(u, i), expected)
    assert gmf.shape[2] == 8 and model.towers.total_dim == 2 * 8  # embed_dim and mlp_dim, not the data's


def test_mostpop_ranks_items_by_training_counts():
    data = make_data(train_items=[3] * 5 + [1] * 3 + [7] * 2 + [2])
    model = MostPop(data.spec)
    model.fit(data)
    scores = model.score(torch.arange(1, 4), torch.arange(N_ITEMS))
    expected = torch.log1p(torch.bincount(torch.tensor(data.train.items), minlength=N_ITEMS).float())
    assert torch.equal(scores, expected.expand(3, -1))
    assert scores[0].argsort(descending=True)[:4].tolist() == [3, 1, 7, 2]
    assert torch.equal(model.score(torch.tensor([1, 2]), torch.tensor([7, 3])), expected[[7, 3]].expand(2, -1))


def test_mostpop_trains_nothing_but_moves_and_saves_like_a_module():
    data = make_data(train_items=[4, 4, 5])
    model = MostPop(data.spec)
    with pytest.raises(RuntimeError, match="fit"):
        model.score(torch.arange(1, 3), torch.arange(N_ITEMS))
    model.fit(data)
    assert model.trainable is False and not any(p.requires_grad for p in model.parameters())
    fresh = MostPop(data.spec)
    fresh.load_state_dict(model.state_dict())  # an unprepared model takes the saved counts
    assert torch.equal(fresh.popularity, model.popularity) and fresh.popularity[4] > fresh.popularity[5] > 0
    assert model.to(torch.float64).popularity.dtype == torch.float64  # the buffer follows .to()


def test_index_zero_features_add_nothing_to_the_fm_term():
    model = build("fm")
    u, i = all_pairs(*feature_matrices())
    fit(model, u, i, hidden_rule(u, i), steps=10)
    user = torch.tensor([[5, 0, 0], [0, 0, 0], [5, 0, 0], [0, 0, 0]])  # only user_id and/or item_id known
    item = torch.tensor([[7, 0, 0, 0], [7, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    with torch.no_grad():
        both, item_only, user_only, nothing = model(user, item)
        v = model.embedding(user[:1], item[:1]).field_embeddings[0]
    assert nothing == model.bias  # all unknown: no first order, no pairs
    assert torch.allclose(both - item_only - user_only + nothing, v[0] @ v[3])  # the one pair, nothing else
    assert v[[1, 2, 4]].abs().sum() == 0


def test_full_ranking_chunks_respect_a_wide_layers_footprint():
    from bench.eval.evaluator import CHUNK_FLOATS, _chunk_users

    data = make_data()
    narrow = build("deepfm")
    # relu: the outer-product path (an identity CIN over few fields is a cheaper polynomial)
    wide = registry.create("model", "xdeepfm", spec=data.spec, embed_dim=8,
                           **{"cin.layers": "128,128", "cin.activation": "relu"})
    assert not wide.cin.layer.polynomial
    assert wide.floats_per_pair() >= 64 * len(data.spec) * 8  # split_half: 64 maps x F fields x D
    n_items = 100
    assert _chunk_users(wide, n_items) * n_items * wide.floats_per_pair() <= CHUNK_FLOATS
    assert _chunk_users(wide, n_items) < _chunk_users(narrow, n_items)


def test_a_polynomial_cin_ranks_all_pairs_in_larger_chunks_than_it_scores_rows():
    """Its pair_scores needs about nothing per pair, its forward the products of every row."""
    from bench.eval.evaluator import _chunk_users

    data = make_data()
    model = registry.create("model", "xdeepfm", spec=data.spec, embed_dim=8)
    assert model.cin.layer.polynomial
    assert model.floats_per_pair() < model.floats_per_row() == model.cin.layer.floats_per_row()
    assert _chunk_users(model, 100, full=True) > _chunk_users(model, 100, full=False)


def test_composed_models_rank_all_pairs_through_a_layers_forward_pairs():
    """A third-party layer may offer only forward_pairs (U, I, out_dim); the model's projection reads it out."""
    from plugins.interactions.cin import CIN

    def factory(num_fields: int, dim: int, **options):
        layer = CIN(num_fields, dim, activation="relu", **options)
        return _WithoutPairScores(layer)

    with registry.isolated():
        registry.register("interaction", "test-pairs-only")(factory)
        model = registry.create("model", "composed", spec=make_data().spec, embed_dim=8, interactions="test-pairs-only")
        full, pairs = full_and_pairwise(model)
        assert model.terms["test-pairs-only"].layer.pair_calls > 0
        assert torch.allclose(full.flatten(), pairs, rtol=1e-5, atol=1e-6)


class _WithoutPairScores(torch.nn.Module):
    """Wraps a layer, exposing forward and forward_pairs only (as a third-party layer might)."""

    def __init__(self, layer):
        super().__init__()
        self.layer, self.out_dim, self.pair_calls = layer, layer.out_dim, 0
        self.num_fields, self.dim = layer.num_fields, layer.dim

    def forward(self, field_embeddings):
        return self.layer(field_embeddings)

    def forward_pairs(self, user_fields, item_fields):
        self.pair_calls += 1
        return self.layer.forward_pairs(user_fields, item_fields)


def test_dropout_drops_the_stated_share_scales_the_rest_and_is_off_in_eval():
    torch.manual_seed(0)
    layer = Dropout(0.25)
    x = torch.ones(400, 500, requires_grad=True)
    out = layer(x)
    kept = out != 0
    assert abs(kept.float().mean().item() - 0.75) < 0.01 and torch.allclose(out[kept], torch.tensor(1 / 0.75))
    out.sum().backward()
    assert torch.equal(x.grad != 0, kept)  # the gradient flows through the kept units only
    layer.eval()
    assert torch.equal(layer(x), x)
    with pytest.raises(ValueError, match="dropout"):
        Dropout(1.0)


@pytest.mark.parametrize("name", ["deepfm", "neumf", "xdeepfm", "fm"])
def test_full_ranking_embeds_the_items_once_for_every_user_chunk(small_data, name):
    """One user per chunk: the item side is embedded once per evaluation (`item_scorer`), and the ranks are
    those of scoring all users at once."""
    from bench.config import ModelConfig
    from bench.eval.evaluator import evaluate
    from bench.runner import build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(name, embed_dim=8), small_data)
    item_sides = [m for path, m in model.named_modules() if path.endswith("item") and hasattr(m, "groups")]
    calls = []
    for side in item_sides:
        side.register_forward_hook(lambda *_: calls.append(1))
    one_by_one = evaluate(model, small_data, split="test", batch_users=1)
    assert len(calls) == len(item_sides) >= 1
    calls.clear()
    at_once = evaluate(model, small_data, split="test", batch_users=len(small_data.test.users))
    for metric, values in at_once.per_user.items():
        np.testing.assert_allclose(one_by_one.per_user[metric], values, rtol=0, atol=1e-12, err_msg=metric)


@pytest.mark.parametrize("name", ["deepfm", "neumf"])
def test_an_item_scorer_serves_many_user_sets_and_notices_new_weights(small_data, name):
    """One scorer, two user sets: each equals `forward` on the formed pairs; after an in-place weight update
    the kept item projection is not reused."""
    from bench.config import ModelConfig
    from bench.nn.model import score_every_pair
    from bench.runner import build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(name, embed_dim=8), small_data).eval()
    user_x, item_x = small_data.user_features, small_data.item_features
    with torch.no_grad():
        scorer = model.item_scorer(item_x)
        for users in (user_x[1:4], user_x[4:9]):
            torch.testing.assert_close(scorer(users), score_every_pair(model, users, item_x))
        first = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
        first.weight.mul_(2.0)  # the MLP's first layer: its item part must be recomputed
        torch.testing.assert_close(scorer(user_x[1:4]), score_every_pair(model, user_x[1:4], item_x))


def test_a_plugin_overriding_only_score_all_is_ranked_by_it(small_data):
    """item_scorer is EmbeddingModel's; a subclass that redefines score_all means its own scores."""
    from bench.config import ModelConfig
    from bench.eval.evaluator import evaluate
    from bench.runner import build_model

    torch.manual_seed(0)
    base = build_model(ModelConfig("deepfm", embed_dim=8), small_data)

    class Reversed(type(base)):
        def score_all(self, user_x, item_x):
            return -super().score_all(user_x, item_x)

    model = Reversed(small_data.spec, embed_dim=8)
    model.load_state_dict(base.state_dict())
    plain, reversed_ = (evaluate(m, small_data, split="test") for m in (base, model))
    assert not np.array_equal(plain.per_user["MRR"], reversed_.per_user["MRR"])
