"""FeatureEmbedding: the three views, per-field dims, projections, and index 0 contributing nothing."""

from __future__ import annotations

import pytest
import torch

from bench.data.features import FeatureSpec, FieldSpec
from bench.kernels.fm import sumsq
from bench.nn.embedding import Embedded, FeatureEmbedding, lookup


def make_spec(dims=None):
    dims = dims or {}
    return FeatureSpec.build([
        dict(name="user_id", side="user", vocab_size=11, is_id=True, dim=dims.get("user_id")),
        dict(name="age", side="user", vocab_size=8, dim=dims.get("age")),
        dict(name="gender", side="user", vocab_size=3, dim=dims.get("gender")),
        dict(name="item_id", side="item", vocab_size=21, is_id=True, dim=dims.get("item_id")),
        dict(name="genres", side="item", vocab_size=6, multi_valued=True, max_len=3, dim=dims.get("genres")),
    ])


def random_rows(spec, side, n, generator):
    cols = []
    for f in spec.side(side):
        cols.append(torch.randint(0, f.vocab_size, (n, f.max_len), generator=generator))
    return torch.cat(cols, dim=1)


@pytest.mark.parametrize("dims", [None, {"user_id": 24, "age": 4, "genres": 8}])
def test_three_views_have_contract_shapes(dims):
    spec = make_spec(dims)
    emb = FeatureEmbedding(spec, embed_dim=16)
    g = torch.Generator().manual_seed(0)
    u, i = random_rows(spec, "user", 7, g), random_rows(spec, "item", 7, g)
    out = emb(u, i)
    total = sum((f.dim or 16) for f in spec)
    assert out.first_order.shape == (7, 1)
    assert out.field_embeddings.shape == (7, 5, 16)
    assert out.flat_embeddings.shape == (7, total)
    assert emb.total_dim == total and emb.num_fields == 5


def test_field_order_is_spec_order_even_with_mixed_dims():
    spec = make_spec({"age": 4})  # age sits in a different table than user_id and gender
    emb = FeatureEmbedding(spec, embed_dim=16)
    u = torch.tensor([[3, 0, 0]])
    i = torch.zeros(1, 4, dtype=torch.long)
    fields = emb(u, i).field_embeddings[0]
    # only user_id (field 0) is non-zero, and it is exactly its table row
    assert fields[0].abs().sum() > 0 and fields[1:].abs().sum() == 0
    group = next(g for g in emb.user.groups if g.projection is None)
    assert torch.equal(fields[0], group.vectors.weight[3])


def test_index_zero_contributes_exactly_zero_everywhere():
    spec = make_spec({"age": 4, "genres": 8})  # projections in play too
    emb = FeatureEmbedding(spec, embed_dim=16)
    g = torch.Generator().manual_seed(3)
    opt = torch.optim.Adam(emb.parameters(), lr=0.1, weight_decay=1e-2)
    for _ in range(5):  # train with index 0 present in the batches, weight decay on
        out = emb(random_rows(spec, "user", 32, g), random_rows(spec, "item", 32, g))
        loss = (out.first_order.sum() + out.field_embeddings.pow(2).sum() - out.flat_embeddings.sum())
        opt.zero_grad()
        loss.backward()
        opt.step()
    u = torch.zeros(2, spec.num_columns("user"), dtype=torch.long)
    i = torch.zeros(2, spec.num_columns("item"), dtype=torch.long)
    out = emb(u, i)
    assert out.first_order.abs().sum() == 0
    assert out.field_embeddings.abs().sum() == 0
    assert out.flat_embeddings.abs().sum() == 0
    # and a zero field next to known ones adds nothing: same views as without that field's value
    known = emb(torch.tensor([[3, 2, 0]]), torch.tensor([[5, 1, 0, 0]]))
    assert known.field_embeddings[0, 2].abs().sum() == 0  # gender = 0
    assert known.flat_embeddings[0].count_nonzero() > 0


def test_padding_in_a_multi_valued_field_is_excluded_from_the_mean():
    spec = make_spec()
    emb = FeatureEmbedding(spec, embed_dim=16)
    table = emb.item.bags[0].vectors.weight
    one = emb.embed("item", torch.tensor([[1, 2, 0, 0]])).field_embeddings[0, 1]  # genres [2]
    two = emb.embed("item", torch.tensor([[1, 2, 3, 0]])).field_embeddings[0, 1]  # genres [2, 3]
    assert torch.allclose(one, table[2])  # not table[2] / 3
    assert torch.allclose(two, table[[2, 3]].mean(0))


def test_gradients_reach_no_padding_row():
    spec = make_spec()
    emb = FeatureEmbedding(spec, embed_dim=16)
    g = torch.Generator().manual_seed(1)
    out = emb(random_rows(spec, "user", 16, g), random_rows(spec, "item", 16, g))
    (out.field_embeddings.sum() + out.first_order.sum() + out.flat_embeddings.sum()).backward()
    for group in [*emb.user.groups, *emb.item.groups]:
        assert group.vectors.weight.grad[0].abs().sum() == 0 and group.weights.weight.grad[0].abs().sum() == 0
        assert group.vectors.weight.grad[1:].abs().sum() > 0


@pytest.mark.parametrize("sparse", [False, True])
def test_a_table_lookup_has_nn_embeddings_values_and_gradients(sparse):
    """`lookup` (an index_add backward on CPU, for speed) is F.embedding with padding_idx=0: same rows, same
    gradient, row 0 none, repeated indices summed; with sparse gradients it is F.embedding itself."""
    g = torch.Generator().manual_seed(3)
    table = torch.randn(9, 4, generator=g, requires_grad=True)
    idx = torch.randint(0, 9, (6, 5), generator=g)
    idx[0, :3] = 0
    idx[1] = 2  # the same row five times
    upstream = torch.randn(6, 5, 4, generator=g)
    reference = torch.nn.functional.embedding(idx, table, padding_idx=0, sparse=sparse)
    (want,) = torch.autograd.grad((reference * upstream).sum(), table)
    got = lookup(table, idx, sparse)
    (grad,) = torch.autograd.grad((got * upstream).sum(), table)
    assert torch.equal(got, reference) and grad.is_sparse == sparse
    assert torch.allclose(grad.to_dense(), want.to_dense(), atol=1e-6) and grad.to_dense()[0].abs().sum() == 0


def test_cross_equals_pairwise_concat():
    spec = make_spec({"age": 4})
    emb = FeatureEmbedding(spec, embed_dim=8)
    g = torch.Generator().manual_seed(2)
    u, i = random_rows(spec, "user", 3, g), random_rows(spec, "item", 4, g)
    crossed = Embedded.pairs(emb.embed("user", u), emb.embed("item", i)).materialize()
    for a in range(3):
        for b in range(4):
            pair = emb(u[a:a + 1], i[b:b + 1])
            row = a * 4 + b
            assert torch.allclose(crossed.first_order[row], pair.first_order[0])
            assert torch.allclose(crossed.field_embeddings[row], pair.field_embeddings[0])
            assert torch.allclose(crossed.flat_embeddings[row], pair.flat_embeddings[0])


def test_fm_identity_on_the_seed_example():
    v = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]])
    assert sumsq(v).item() == 67.0


def test_spec_validation_and_round_trip():
    spec = make_spec({"age": 4})
    assert FeatureSpec.from_list(spec.to_list()) == spec
    assert spec.num_columns("item") == 4 and spec.field("genres").columns == slice(1, 4)
    assert spec.id_field("item").name == "item_id"
    with pytest.raises(ValueError, match="side"):
        FieldSpec(name="x", side="both", vocab_size=3)
    with pytest.raises(ValueError, match="duplicate"):
        FeatureSpec([FieldSpec("a", "user", 3), FieldSpec("a", "item", 3)])


def test_importing_bench_leaves_the_float_mode_alone_and_training_sets_it():
    """Subnormals flush to zero where the CLI, training and evaluation start, not on import."""
    import subprocess
    import sys

    code = ("import torch, bench, bench.train.trainer, bench.eval.evaluator, bench.cli\n"
            "kept = (torch.tensor([1e-40]) * 1.0).item() != 0\n"
            "bench.cli.main(['list', 'encoder'], standalone_mode=False)\n"
            "print(kept, (torch.tensor([1e-40]) * 1.0).item() == 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[-1].split() == ["True", "True"]  # kept on import, flushed by the command
