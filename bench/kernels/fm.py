"""Implementations of the FM second-order term  sum_{i<j} <v_i, v_j>  over field embeddings (B, F, D).

Every implementation maps (B, F, D) -> (B, 1) and supports autograd. `bench kernel` checks each one
against `naive` and times it; the `fm` interaction layer calls `one_pass`.

Which one the layer uses, and why (the figures: results/kernel-cpu.md and `bench kernel`):

* CPU: `one_pass`. Eager PyTorch reads the (B, F, D) input twice in forward (once for sum v, once for
  sum v^2), which caps it near half the memory bandwidth; `one_pass` compiles both sums into one loop,
  once per process and kind of input (dtype, thread count) with dynamic shapes (a ragged last batch or an
  evaluation batch does not recompile), and falls back to the eager `fused` path, with one warning, where no
  compiler is present. Its backward writes the gradient in one pass, as `fused` does. `compiled` (torch.compile
  of the textbook formula, specialised per shape) is the reference for what one inductor loop reaches.
* CUDA: `fused`, for now. The Triton kernels (forward reads v once; backward reads v once and
  writes the gradient once) have only been checked against `naive` under Triton's CPU interpreter, never
  on a GPU, so they run only when asked for (`bench kernel --impl triton`) until a CUDA measurement
  shows them correct and faster there.
"""

from __future__ import annotations

import os
import types
import warnings
from typing import Callable

import torch
from torch.autograd.function import once_differentiable
from torch.utils._python_dispatch import is_in_torch_dispatch_mode

try:  # optional: only CUDA tensors use it, and only where the package is installed
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the environment
    triton = None


def _check_input(v: torch.Tensor) -> None:
    if v.dim() != 3:
        raise ValueError(
            f"the FM interaction expects field embeddings of shape (batch, fields, dim), got {tuple(v.shape)}"
        )
    if not v.is_floating_point():
        raise TypeError(f"the FM interaction expects floating-point field embeddings, got {v.dtype}")


def _accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for bfloat16/float16 (their sums lose digits fast), else the dtype itself."""
    return torch.promote_types(dtype, torch.float32)


def naive(v: torch.Tensor) -> torch.Tensor:
    """The reference: an explicit loop over the F(F-1)/2 field pairs, O(F^2 D). Slow by design."""
    _check_input(v)
    # An empty sum: zeros that are still part of the graph, so F=1 has its (zero) gradient.
    acc = v[:, :0].sum(dim=(1, 2), dtype=_accumulation_dtype(v.dtype))
    fields = v.shape[1]
    for i in range(fields):
        for j in range(i + 1, fields):
            acc = acc + (v[:, i] * v[:, j]).sum(dim=1, dtype=acc.dtype)
    return acc.to(v.dtype).unsqueeze(1)


def sumsq(v: torch.Tensor) -> torch.Tensor:
    """0.5 * ((sum v)^2 - sum v^2), summed over D: the O(F*D) identity. (B, F, D) -> (B, 1)."""
    s = v.sum(dim=1)
    return 0.5 * (s.pow(2) - v.pow(2).sum(dim=1)).sum(dim=1, keepdim=True)


class FusedFM(torch.autograd.Function):
    """The identity without (B, F, D) temporaries; the gradient w.r.t. v_f is g * (s - v_f).

    Forward makes two streaming reductions over v and allocates nothing of its size:
    s = sum_f v_f and ||v||^2 = sum_f ||v_f||^2 (one `vector_norm`, which squares in registers, faster than
    vecdot/bmm/einsum over the same data). Backward writes the
    gradient in one pass, `addcmul(g*s, v, g, value=-1)`: its output is the only (B, F, D) tensor made.
    """

    @staticmethod
    def forward(ctx, v: torch.Tensor) -> torch.Tensor:
        out, s = _eager_terms(v)
        ctx.save_for_backward(v, s)
        return out.to(v.dtype).unsqueeze(1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor) -> torch.Tensor:
        """g * (s - v_f) written in one pass: the only (B, F, D) tensor backward makes."""
        v, s = ctx.saved_tensors
        g = grad_out.reshape(-1, 1)  # (B, 1)
        return torch.addcmul((g * s).unsqueeze(1), v, g.unsqueeze(2), value=-1)


def _eager_terms(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The FM term (B,) and s = sum_f v_f (B, D), the one intermediate backward needs, in two streaming reductions."""
    s = v.sum(dim=1)
    acc = _accumulation_dtype(v.dtype)
    squares = torch.linalg.vector_norm(v.flatten(1), dim=1).to(acc).square()
    return 0.5 * (torch.linalg.vector_norm(s.to(acc), dim=1).square() - squares), s


def fused(v: torch.Tensor) -> torch.Tensor:
    """FM term by `FusedFM`: the fastest eager implementation on CPU."""
    _check_input(v)
    return FusedFM.apply(v)


def _terms(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The FM term (B,) and s = sum_f v_f (B, D): what `one_pass` compiles into one loop over each row.

    Both sums reduce over the fields only, to the same (B, D) shape, so inductor fuses them into one pass
    over v; reducing the squares over (fields, dim) at once instead makes a second loop that reads v again.
    """
    acc = v.to(_accumulation_dtype(v.dtype))
    s = acc.sum(dim=1)
    return 0.5 * (s * s - (acc * acc).sum(dim=1)).sum(dim=1), s


def _own_copy(function: Callable) -> Callable:
    """`function` with a code object of its own: dynamo keeps compiled variants, and counts them against its
    recompile limit, per code object."""
    return types.FunctionType(function.__code__.replace(), function.__globals__, function.__name__,
                              function.__defaults__, function.__closure__)


class _OnePassCompiler:
    """`_terms` compiled with dynamic shapes (any batch, fields and dim reuse one kernel), or the reason it
    cannot be: no compiler, a torch without inductor, or BENCH_FM_COMPILE=0.

    Each kind of input that dynamo's guards tell apart (dtype, inference tensor or not, thread count) gets its
    own compiled copy of `_terms`: dynamo stops compiling a function after 8 variants (and with fullgraph
    fails), so one shared copy ran out in a process meeting many kinds (a test session; `bench kernel` over
    dtypes and thread counts) and the eager kernel served the rest of it. The input goes in detached, so
    training and evaluation share a variant.
    """

    def __init__(self) -> None:
        self.kernels: dict[tuple[torch.dtype, bool, int], Callable[[torch.Tensor], tuple[torch.Tensor, ...]]] = {}
        self.unavailable: str | None = None

    def __call__(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The compiled terms, or None where the eager path must serve (see `one_pass`)."""
        if self.unavailable is not None or v.device.type != "cpu" or is_in_torch_dispatch_mode():
            return None  # under a dispatch mode (FlopCounterMode, fake tensors) dynamo skips the frame: eager
        if not self.kernels and os.environ.get("BENCH_FM_COMPILE", "1") == "0":
            self.unavailable = "BENCH_FM_COMPILE=0"
            return None
        kind = (v.dtype, v.is_inference(), torch.get_num_threads())
        try:
            kernel = self.kernels.get(kind)
            if kernel is None:
                kernel = self.kernels[kind] = torch.compile(_own_copy(_terms), dynamic=True, fullgraph=True)
            return kernel(v.detach())
        except Exception as exc:  # noqa: BLE001 - no C++ compiler, an inductor limitation: the eager path serves
            detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            self.unavailable = f"{type(exc).__name__}: {detail}"
            warnings.warn(f"the FM kernel could not be compiled ({self.unavailable}); the eager kernel serves "
                          "(the same values, slower)", stacklevel=3)
            return None


_COMPILED = _OnePassCompiler()


class OnePassFM(FusedFM):
    """The FM term reading v once: forward computes s = sum_f v_f and the sum of squares in one loop over each row
    (compiled; the row's fields stay in cache between the two); backward is FusedFM's, g * (s - v_f) in one pass."""

    @staticmethod
    def forward(ctx, v: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            done = _COMPILED(v) if v.shape[0] > 1 else None  # a batch of one: eager (no recompile for size 1)
        if done is None:
            out, s = _eager_terms(v)
        else:
            out, s = done
            s = s.to(v.dtype)
        ctx.save_for_backward(v, s)
        return out.to(v.dtype).unsqueeze(1)


def one_pass(v: torch.Tensor) -> torch.Tensor:
    """FM term by `OnePassFM`: the models' kernel (plugins/interactions/fm.py). On CPU a kernel compiled once
    (dynamic shapes: a ragged last batch does not recompile) reads each row once; where no compiler is
    present, or on other devices, the eager `fused` path serves, with the same values."""
    _check_input(v)
    return OnePassFM.apply(v)


def compile_sumsq() -> Callable[[torch.Tensor], torch.Tensor]:
    """`sumsq` through torch.compile, specialised per shape (inductor fuses it into one loop).

    The first call of each new shape compiles (seconds); callers time only later calls.
    """
    return torch.compile(sumsq, dynamic=False)


TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def triton_unavailable_reason(device: torch.device, dtype: torch.dtype) -> str | None:
    """Why the Triton kernel cannot run on `device` for `dtype`, or None when it can."""
    if triton is None:
        return "the triton package is not installed"
    if device.type != "cuda":
        return f"Triton kernels run on CUDA devices only, not {device.type}"
    if dtype not in TRITON_DTYPES:
        return f"the Triton kernel accumulates in float32, so it takes float32/bfloat16/float16, not {dtype}"
    return None


if triton is not None:

    @triton.jit
    def _fm_forward_kernel(
        v_ptr, s_ptr, out_ptr, n_rows, n_fields, dim,
        stride_b, stride_f, stride_d,
        BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr,
    ):
        """One block of rows: read each field vector once, keep s and sum of squares in registers."""
        rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
        cols = tl.arange(0, BLOCK_D)
        row_ok = rows < n_rows
        mask = row_ok[:, None] & (cols[None, :] < dim)
        base = v_ptr + rows[:, None].to(tl.int64) * stride_b + cols[None, :] * stride_d
        s = tl.zeros((BLOCK_B, BLOCK_D), dtype=tl.float32)
        squares = tl.zeros((BLOCK_B, BLOCK_D), dtype=tl.float32)
        for f in range(0, n_fields):
            x = tl.load(base + f * stride_f, mask=mask, other=0.0).to(tl.float32)
            s += x
            squares += x * x
        out = 0.5 * tl.sum(s * s - squares, axis=1)
        tl.store(out_ptr + rows, out.to(out_ptr.dtype.element_ty), mask=row_ok)
        tl.store(s_ptr + rows[:, None].to(tl.int64) * dim + cols[None, :], s, mask=mask)

    @triton.jit
    def _fm_backward_kernel(
        v_ptr, s_ptr, g_ptr, grad_ptr, n_rows, n_fields, dim,
        stride_b, stride_f, stride_d,
        BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr,
    ):
        """grad[b, f] = g[b] * (s[b] - v[b, f]): one read of v, one write of the gradient."""
        rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
        cols = tl.arange(0, BLOCK_D)
        row_ok = rows < n_rows
        mask = row_ok[:, None] & (cols[None, :] < dim)
        rows64 = rows[:, None].to(tl.int64)
        g = tl.load(g_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)[:, None]
        gs = g * tl.load(s_ptr + rows64 * dim + cols[None, :], mask=mask, other=0.0)
        v_base = v_ptr + rows64 * stride_b + cols[None, :] * stride_d
        grad_base = grad_ptr + rows64 * (n_fields * dim) + cols[None, :]
        for f in range(0, n_fields):
            x = tl.load(v_base + f * stride_f, mask=mask, other=0.0).to(tl.float32)
            tl.store(grad_base + f * dim, (gs - g * x).to(grad_ptr.dtype.element_ty), mask=mask)


def _triton_blocks(dim: int) -> tuple[int, int]:
    block_d = triton.next_power_of_2(max(dim, 1))
    return max(16, min(256, 4096 // block_d)), block_d


class TritonFM(torch.autograd.Function):
    """The FM term as two Triton kernels (CUDA): s is kept in float32 between them."""

    @staticmethod
    def forward(ctx, v: torch.Tensor) -> torch.Tensor:
        n_rows, n_fields, dim = v.shape
        out = torch.empty(n_rows, dtype=v.dtype, device=v.device)
        s = torch.empty(n_rows, dim, dtype=torch.float32, device=v.device)
        block_b, block_d = _triton_blocks(dim)
        if n_rows:
            _fm_forward_kernel[(triton.cdiv(n_rows, block_b),)](
                v, s, out, n_rows, n_fields, dim, *v.stride(), BLOCK_B=block_b, BLOCK_D=block_d
            )
        ctx.save_for_backward(v, s)
        return out.unsqueeze(1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor) -> torch.Tensor:
        v, s = ctx.saved_tensors
        n_rows, n_fields, dim = v.shape
        g = grad_out.reshape(-1).contiguous()
        grad = torch.empty(v.shape, dtype=v.dtype, device=v.device)
        block_b, block_d = _triton_blocks(dim)
        if n_rows:
            _fm_backward_kernel[(triton.cdiv(n_rows, block_b),)](
                v, s, g, grad, n_rows, n_fields, dim, *v.stride(), BLOCK_B=block_b, BLOCK_D=block_d
            )
        return grad


def triton_fm(v: torch.Tensor) -> torch.Tensor:
    """FM term by the Triton kernels; CUDA tensors only (see `triton_unavailable_reason`)."""
    _check_input(v)
    reason = triton_unavailable_reason(v.device, v.dtype)
    if reason is not None:
        raise RuntimeError(f"triton FM kernel unavailable: {reason}")
    return TritonFM.apply(v)
