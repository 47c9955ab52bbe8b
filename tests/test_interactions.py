"""Interaction layers: FM against brute force, CIN and self-attention against their equations."""

from __future__ import annotations

import itertools

import optuna
import pytest
import torch

import registry
from bench.kernels import fm as fm_kernels
from plugins.interactions.attention import SelfAttention
from plugins.interactions.cin import CIN
from plugins.interactions.fm import FMInteraction


def brute_force_fm(v: torch.Tensor) -> torch.Tensor:
    """sum over field pairs i < j of <v_i, v_j>, one pair at a time."""
    total = torch.zeros(v.shape[0], 1, dtype=v.dtype)
    for i, j in itertools.combinations(range(v.shape[1]), 2):
        total[:, 0] += (v[:, i] * v[:, j]).sum(dim=1)
    return total


@pytest.mark.parametrize("b,f,d", [(1, 2, 1), (5, 3, 4), (7, 6, 16), (3, 11, 8)])
def test_fm_layer_equals_pairwise_brute_force(b, f, d):
    v = torch.randn(b, f, d, dtype=torch.float64, generator=torch.Generator().manual_seed(b * f * d))
    layer = registry.create("interaction", "fm", num_fields=f, dim=d)
    assert layer.out_dim == 1
    assert torch.allclose(layer(v), brute_force_fm(v), rtol=1e-10, atol=1e-10)


def test_fm_layer_on_the_seed_example_is_67():
    v = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]])
    assert FMInteraction(3, 2)(v).item() == 67.0


def test_fm_layer_computes_through_the_models_kernel():
    v = torch.randn(4, 3, 2, requires_grad=True, generator=torch.Generator().manual_seed(0))
    out = FMInteraction(3, 2)(v)
    assert "OnePassFM" in out.grad_fn.name()
    torch.testing.assert_close(out, fm_kernels.sumsq(v), rtol=1e-5, atol=1e-5)


def cin_reference(layer: CIN, x0: torch.Tensor) -> torch.Tensor:
    """Eq. 6 of the paper with the layer's weights: X^k_h = sum_{i,j} W_hij (X^{k-1}_i * X^0_j)."""
    hidden, outputs = x0, []
    for conv, split in zip(layer.convs, layer.splits, strict=True):
        w = conv.weight.view(conv.out_channels, hidden.shape[1], x0.shape[1])
        maps = torch.einsum("kij,bid,bjd->bkd", w, hidden, x0)
        half = maps.shape[1] // 2
        hidden, out = (maps[:, :half], maps[:, half:]) if split else (maps, maps)
        outputs.append(out.sum(dim=2))
    return torch.cat(outputs, dim=1)


@pytest.mark.parametrize("layers,split_half,out_dim", [
    ((128, 128), True, 64 + 128),
    ((128, 128), False, 256),
    ((10,), True, 10),
    ("6,4,3", True, 3 + 2 + 3),
])
def test_cin_shapes_match_the_paper_and_gradients_reach_inputs(layers, split_half, out_dim):
    torch.manual_seed(0)
    layer = registry.create("interaction", "cin", num_fields=5, dim=4, layers=layers, split_half=split_half)
    x = torch.randn(3, 5, 4, dtype=torch.float64, requires_grad=True)
    layer = layer.double()
    out = layer(x)
    assert layer.out_dim == out_dim and out.shape == (3, out_dim)
    assert torch.allclose(out, cin_reference(layer, x))
    out.pow(2).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(conv.weight.grad.abs().sum() > 0 for conv in layer.convs)


@pytest.mark.parametrize("user_fields", [1, 3, 4])
@pytest.mark.parametrize("layers,split_half,activation", [
    ("6,4,3", True, "identity"), ((5, 7), False, "identity"), ((8, 6), True, "relu"),
])
def test_cin_forward_pairs_equals_forward_on_every_pair(user_fields, layers, split_half, activation):
    torch.manual_seed(0)
    layer = CIN(5, 4, layers=layers, split_half=split_half, activation=activation).double()
    users = torch.randn(3, user_fields, 4, dtype=torch.float64)
    items = torch.randn(7, 5 - user_fields, 4, dtype=torch.float64)
    pairs = torch.cat([users.repeat_interleave(7, dim=0), items.repeat(3, 1, 1)], dim=1)  # row u * 7 + i
    grid = layer.forward_pairs(users, items)
    assert grid.shape == (3, 7, layer.out_dim)
    assert torch.allclose(grid.reshape(21, -1), layer(pairs))
    if activation == "identity":  # the reference is the paper's linear CIN
        assert torch.allclose(layer(pairs), cin_reference(layer, pairs))


@pytest.mark.parametrize("fields,layers,split_half", [
    (6, (64, 64), True), (5, "6,4,3", True), (5, (5, 7), False), (4, (8,), True), (3, (4, 4, 4, 4), True),
])
def test_linear_cin_as_a_polynomial_equals_the_outer_products(fields, layers, split_half):
    """Both ways of computing a linear CIN give the same output and the same gradients, for inputs and
    weights (the polynomial's coefficients are composed from the convolution weights every call)."""
    torch.manual_seed(0)
    layer = CIN(fields, 4, layers=layers, split_half=split_half).double()
    x = torch.randn(7, fields, 4, dtype=torch.float64, requires_grad=True)
    results = []
    for polynomial in (True, False):
        layer.polynomial = polynomial
        out = layer(x)
        results.append((out, torch.autograd.grad(out.pow(2).sum(), [x, *layer.parameters()])))
    (poly, poly_grads), (outer, outer_grads) = results
    assert torch.allclose(poly, outer) and torch.allclose(poly, cin_reference(layer, x))
    for a, b in zip(poly_grads, outer_grads, strict=True):
        assert torch.allclose(a, b)


def test_cin_takes_the_polynomial_only_where_it_is_exact_and_clearly_cheaper():
    assert CIN(6, 16, layers=(64, 64)).polynomial  # MovieLens: 6 fields
    assert CIN(10, 16, layers=(128, 128)).polynomial
    assert not CIN(6, 16, layers=(64, 64), activation="relu").polynomial  # not a polynomial
    assert not CIN(39, 16, layers=(128, 128)).polynomial  # Criteo's 39 fields: 39^3 products per row
    assert not CIN(8, 16, layers=(256,) * 4).polynomial  # 8^5 products in the last layer
    small = CIN(6, 16, layers=(64, 64))
    assert small.floats_per_row() < CIN(6, 16, layers=(64, 64), activation="relu").floats_per_row()
    with pytest.raises(ValueError, match="identity"):
        CIN(6, 16, activation="relu").polynomial = True


@pytest.mark.parametrize("user_fields", [1, 3, 4])
@pytest.mark.parametrize("layers,split_half,polynomial,activation", [
    ((64, 64), True, True, "identity"), ("6,4,3", True, True, "identity"), ((5, 7), False, False, "identity"),
    ((8, 6), True, False, "relu"),
])
def test_cin_pair_scores_equal_forward_on_every_pair_read_out(user_fields, layers, split_half, polynomial,
                                                               activation):
    torch.manual_seed(0)
    layer = CIN(5, 4, layers=layers, split_half=split_half, activation=activation).double()
    layer.polynomial = polynomial
    users = torch.randn(3, user_fields, 4, dtype=torch.float64)
    items = torch.randn(7, 5 - user_fields, 4, dtype=torch.float64)
    pairs = torch.cat([users.repeat_interleave(7, dim=0), items.repeat(3, 1, 1)], dim=1)  # row u * 7 + i
    readout = torch.randn(layer.out_dim, dtype=torch.float64)
    scores = layer.pair_scores(users, items, readout)
    assert scores.shape == (3, 7)
    assert torch.allclose(scores.reshape(21), layer(pairs) @ readout)
    if activation == "identity":
        assert torch.allclose(scores.reshape(21), cin_reference(layer, pairs) @ readout)


@pytest.mark.parametrize("user_fields", [0, 5])
def test_polynomial_cin_pair_scores_with_all_fields_on_one_side(user_fields):
    torch.manual_seed(0)
    layer = CIN(5, 4, layers=(6, 4, 3)).double()
    layer.polynomial = True
    users = torch.randn(3, user_fields, 4, dtype=torch.float64)
    items = torch.randn(7, 5 - user_fields, 4, dtype=torch.float64)
    pairs = torch.cat([users.repeat_interleave(7, dim=0), items.repeat(3, 1, 1)], dim=1)
    readout = torch.randn(layer.out_dim, dtype=torch.float64)
    expected = cin_reference(layer, pairs) @ readout
    assert torch.allclose(layer.pair_scores(users, items, readout).reshape(21), expected)


def test_cin_pair_scores_without_readout_need_out_dim_one():
    layer = CIN(3, 4, layers=(1,)).double()
    users, items = torch.randn(2, 1, 4, dtype=torch.float64), torch.randn(3, 2, 4, dtype=torch.float64)
    pairs = torch.cat([users.repeat_interleave(3, dim=0), items.repeat(2, 1, 1)], dim=1)
    assert torch.allclose(layer.pair_scores(users, items).reshape(6), layer(pairs).reshape(6))
    with pytest.raises(ValueError, match="readout"):
        CIN(3, 4, layers=(4,)).pair_scores(users.float(), items.float())


def test_cin_rejects_bad_layer_options():
    with pytest.raises(ValueError, match="even size"):
        CIN(4, 8, layers=(7, 8), split_half=True)
    CIN(4, 8, layers=(7, 8), split_half=False)  # any sizes without the split
    with pytest.raises(ValueError, match="cin: layers"):
        CIN(4, 8, layers="128,x")
    with pytest.raises(ValueError, match="cin: layers"):
        CIN(4, 8, layers=())
    with pytest.raises(ValueError, match="activation"):
        CIN(4, 8, activation="gelu")


def test_attention_shape_out_dim_and_gradients():
    torch.manual_seed(0)
    layer = registry.create("interaction", "attention", num_fields=6, dim=8, layers=2, heads=2, att_dim=12)
    x = torch.randn(4, 6, 8, requires_grad=True)
    out = layer(x)
    assert layer.out_dim == 6 * 12 and out.shape == (4, 72)
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_attention_one_layer_matches_the_equations():
    torch.manual_seed(1)
    layer = SelfAttention(num_fields=4, dim=6, layers=1, heads=2, att_dim=8).double()
    x = torch.randn(3, 4, 6, dtype=torch.float64)
    block = layer.blocks[0]
    wq, wk, wv = block.qkv.weight.chunk(3, dim=0)
    heads = []
    for h in range(2):  # head h owns columns 4h..4h+3 of each projection
        rows = slice(4 * h, 4 * h + 4)
        q, k, v = x @ wq[rows].T, x @ wk[rows].T, x @ wv[rows].T
        heads.append(torch.softmax(q @ k.transpose(1, 2) / 2.0, dim=-1) @ v)
    expected = torch.relu(torch.cat(heads, dim=2) + x @ block.residual.weight.T)
    assert torch.allclose(layer(x), expected.flatten(1))


def test_attention_is_equivariant_to_field_order():
    """No positional information: permuting the fields permutes each field's output block alike."""
    torch.manual_seed(2)
    layer = SelfAttention(num_fields=5, dim=4, layers=2, heads=2, att_dim=6)
    x = torch.randn(2, 5, 4)
    perm = torch.tensor([3, 0, 4, 1, 2])
    out = layer(x).view(2, 5, 6)
    assert torch.allclose(layer(x[:, perm]).view(2, 5, 6), out[:, perm], atol=1e-6)


def test_attention_rejects_heads_that_do_not_divide_att_dim():
    with pytest.raises(ValueError, match="multiple of heads"):
        SelfAttention(4, 8, heads=3, att_dim=16)


@pytest.mark.parametrize("name", ["fm", "cin", "attention"])
def test_search_space_names_are_prefixed_and_build_the_layer(name):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(4):
        params = registry.search_space("interaction", name, study.ask())
        assert all(key.startswith(name + ".") for key in params)
        layer = registry.create("interaction", name, num_fields=3, dim=4,
                                **{key.split(".", 1)[1]: value for key, value in params.items()})
        assert layer(torch.randn(2, 3, 4)).shape == (2, layer.out_dim)
