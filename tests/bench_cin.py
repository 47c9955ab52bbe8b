"""Speed of the CIN's two ways of computing the same linear layer: the polynomial (products of fields
pooled over D before the weights) against the paper's outer products at every coordinate, forward and
backward, and full ranking of all pairs (run: make bench)."""

import pytest
import torch

from plugins.interactions.cin import CIN

SHAPES = {"movielens": (6, (64, 64)), "movielens-128": (6, (128, 128)), "10-fields": (10, (128, 128))}


def layer_for(shape: str, polynomial: bool) -> CIN:
    fields, layers = SHAPES[shape]
    torch.manual_seed(0)
    layer = CIN(fields, 16, layers=layers)
    layer.polynomial = polynomial  # both are exact for the identity activation
    return layer


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("polynomial", [True, False], ids=["polynomial", "outer"])
def test_cin_forward_backward(benchmark, shape, polynomial):
    layer = layer_for(shape, polynomial)
    x = torch.randn(256, layer.num_fields, 16, requires_grad=True)

    def step():
        layer.zero_grad(set_to_none=True)
        out = layer(x)
        out.square().mean().backward()
        return out

    out = benchmark(step)
    assert out.shape == (256, layer.out_dim) and x.grad is not None


@pytest.mark.parametrize("polynomial", [True, False], ids=["polynomial", "outer"])
def test_cin_all_pairs(benchmark, polynomial):
    """A chunk of MovieLens-100K's full ranking: 8 users (4 fields) against all 1,682 items (2 fields)."""
    layer = layer_for("movielens", polynomial)
    users, items = torch.randn(8, 4, 16), torch.randn(1682, 2, 16)
    readout = torch.randn(layer.out_dim)
    with torch.no_grad():
        scores = benchmark.pedantic(layer.pair_scores, args=(users, items, readout), rounds=5, iterations=1)
    assert scores.shape == (8, 1682)
