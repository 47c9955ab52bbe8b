"""Speed of the FM interaction kernels, so changes are visible between commits.

Run: python -m pytest tests/bench_kernel.py --benchmark-only   (not collected by the default test run)
"""

from __future__ import annotations

import pytest
import torch
from bench.kernel import check_against_naive

from bench.kernels import fm as fm_kernels

BATCH, FIELDS, DIM = 16384, 24, 16

KERNELS = {
    "sumsq": lambda: fm_kernels.sumsq,
    "fused": lambda: fm_kernels.fused,
    "compiled": fm_kernels.compile_sumsq,
}


@pytest.fixture(scope="module")
def embeddings():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(BATCH, FIELDS, DIM, generator=gen), torch.randn(BATCH, 1, generator=gen)


@pytest.mark.parametrize("pass_", ["forward", "backward"])
@pytest.mark.parametrize("name", list(KERNELS))
def test_fm_kernel_speed(benchmark, embeddings, name, pass_):
    v, grad_out = embeddings
    kernel = KERNELS[name]()
    check_against_naive(name, kernel, v[:256], grad_out[:256])  # a wrong kernel is not worth timing
    benchmark.extra_info.update(batch=BATCH, fields=FIELDS, dim=DIM, threads=torch.get_num_threads())
    if pass_ == "forward":
        def forward():
            with torch.no_grad():
                return kernel(v)

        kernel(v)  # compile (if any) outside the timing
        forward()
        benchmark(forward)
    else:
        x = v.detach().requires_grad_()
        torch.autograd.grad(kernel(x), x, grad_out)
        benchmark(lambda: torch.autograd.grad(kernel(x), x, grad_out))
