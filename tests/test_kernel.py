"""FM kernels against the naive reference, and `bench kernel` end to end at tiny sizes."""

from __future__ import annotations

import csv
import io
import json
import math
import sqlite3

import pytest
import torch
from click.testing import CliRunner

from bench.cli.kernel import kernel as kernel_command
from bench.kernels import fm as fm_kernels
from bench.kernels import harness as kernel
from bench.kernels.harness import (
    ImplementationMismatch,
    KernelConfig,
    check_against_naive,
    run_kernel_bench,
)

SHAPES = [(6, 1, 4), (7, 2, 3), (5, 4, 1), (33, 24, 16), (64, 7, 9)]
DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]
EAGER = {"naive": fm_kernels.naive, "sumsq": fm_kernels.sumsq, "fused": fm_kernels.fused}
JSON_KEYS = {"impl", "device", "dtype", "pass", "batch", "fields", "dim", "samples_per_s", "gb_per_s",
             "pct_of_bandwidth", "limit", "limit_gb_per_s", "pct_of_limit", "bytes"}
TINY = ["--batch", "16,40", "--fields", "5", "--dim", "3", "--repeat", "3", "--warmup", "1",
        "--copy-mb", "1", "--check-rows", "32"]


def _inputs(shape, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen).to(dtype), torch.randn(shape[0], 1, generator=gen).to(dtype)


def _gram_reference(v):
    """Independent of `naive`: half the off-diagonal sum of each row's Gram matrix, in float64."""
    v = v.double()
    gram = v @ v.transpose(1, 2)
    return 0.5 * (gram.sum(dim=(1, 2)) - gram.diagonal(dim1=1, dim2=2).sum(dim=1)).unsqueeze(1)


@pytest.mark.parametrize("shape", SHAPES)
def test_naive_equals_the_gram_matrix_definition(shape):
    v, _ = _inputs(shape, torch.float64)
    torch.testing.assert_close(fm_kernels.naive(v), _gram_reference(v), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", list(EAGER))
def test_ones_give_pairs_times_dim_and_gradient_f_minus_one(name):
    # all-ones embeddings: every pair contributes D, and d/dv_f = g * (sum_j v_j - v_f) = g * (F - 1)
    batch, fields, dim = 3, 5, 4
    v = torch.ones(batch, fields, dim, requires_grad=True)
    out = EAGER[name](v)
    assert out.shape == (batch, 1)
    torch.testing.assert_close(out, torch.full((batch, 1), math.comb(fields, 2) * dim * 1.0))
    g = torch.tensor([[1.0], [2.0], [-3.0]])
    (grad,) = torch.autograd.grad(out, v, g)
    torch.testing.assert_close(grad, (fields - 1) * g.view(batch, 1, 1).expand(batch, fields, dim))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", list(EAGER))
def test_every_eager_implementation_matches_naive_values_and_gradients(name, shape, dtype):
    v, g = _inputs(shape, dtype)
    check_against_naive(name, EAGER[name], v, g)  # raises ImplementationMismatch on a difference
    out = EAGER[name](v)
    assert out.dtype == dtype and out.shape == (shape[0], 1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_fused_matches_the_gram_definition_directly(dtype):
    # A second opinion that does not go through check_against_naive's tolerance model.
    v, g = _inputs((128, 24, 16), dtype, seed=3)
    x = v.detach().requires_grad_()
    out = fm_kernels.fused(x)
    (grad,) = torch.autograd.grad(out, x, g)
    ref = _gram_reference(v)
    expected_grad = g.double().unsqueeze(2) * (v.double().sum(dim=1, keepdim=True) - v.double())
    tol = 1e-4 if dtype == torch.float32 else 0.05
    scale = ref.abs().max().item()
    assert (out.double() - ref).abs().max().item() <= tol * scale
    assert (grad.double() - expected_grad).abs().max().item() <= tol * expected_grad.abs().max().item()


def test_fused_takes_non_contiguous_and_empty_inputs():
    v = torch.randn(10, 16, 6).transpose(1, 2)  # (10, 6, 16), not contiguous
    torch.testing.assert_close(fm_kernels.fused(v), _gram_reference(v).float(), rtol=1e-5, atol=1e-4)
    empty = torch.randn(0, 4, 3, requires_grad=True)
    out = fm_kernels.fused(empty)
    assert out.shape == (0, 1)
    out.sum().backward()
    assert empty.grad.shape == (0, 4, 3)


def test_fused_rejects_bad_input_with_a_clear_error():
    with pytest.raises(ValueError, match=r"\(batch, fields, dim\).*\(4, 5\)"):
        fm_kernels.fused(torch.randn(4, 5))
    with pytest.raises(TypeError, match="floating-point.*int64"):
        fm_kernels.fused(torch.ones(2, 3, 4, dtype=torch.long))


def test_fused_is_one_autograd_function():
    v = torch.randn(4, 3, 2, requires_grad=True)
    assert "FusedFM" in fm_kernels.fused(v).grad_fn.name()


def test_triton_kernel_reports_why_it_cannot_run_here():
    reason = fm_kernels.triton_unavailable_reason(torch.device("cpu"), torch.float32)
    assert reason is not None and ("triton" in reason.lower())
    with pytest.raises(RuntimeError, match="triton FM kernel unavailable"):
        fm_kernels.triton_fm(torch.randn(2, 3, 4))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_compiled_matches_naive(dtype):
    compiled = fm_kernels.compile_sumsq()
    v, g = _inputs((24, 6, 4), dtype)
    check_against_naive("compiled", compiled, v, g)


class _RightValueWrongGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v):
        ctx.save_for_backward(v)
        return fm_kernels.sumsq(v)

    @staticmethod
    def backward(ctx, g):
        (v,) = ctx.saved_tensors
        return g.unsqueeze(2) * v.sum(dim=1, keepdim=True).expand_as(v)  # forgot the "- v_f"


WRONG = {
    "with the diagonal": lambda v: 0.5 * v.sum(dim=1).square().sum(dim=1, keepdim=True),
    "one pair short": lambda v: fm_kernels.naive(v) - (v[:, 0] * v[:, 1]).sum(dim=1, keepdim=True),
    "NaN": lambda v: fm_kernels.sumsq(v) * float("nan"),
    "wrong shape": lambda v: fm_kernels.sumsq(v).squeeze(1),
    "wrong gradient": _RightValueWrongGradient.apply,
}


@pytest.mark.parametrize("flaw", list(WRONG))
def test_check_catches_a_wrong_implementation(flaw):
    v, g = _inputs((33, 24, 16), torch.float32)
    with pytest.raises(ImplementationMismatch, match="wrong.*(disagrees with naive|returned)"):
        check_against_naive("wrong", WRONG[flaw], v, g)


def test_a_wrong_implementation_is_an_error_not_a_row():
    config = KernelConfig(impls=("sumsq", "wrong"), batches=(64,), fields=5, dim=3, dtypes=("float32",),
                          devices=("cpu",), repeat=2, warmup=0, copy_mb=1)
    impls = {"sumsq": lambda d, t: fm_kernels.sumsq, "wrong": lambda d, t: WRONG["with the diagonal"]}
    with pytest.raises(ImplementationMismatch, match="wrong"):
        run_kernel_bench(config, implementations=impls, log=lambda message: None)


def test_cli_fails_on_a_mismatch_and_prints_no_table(monkeypatch):
    monkeypatch.setitem(kernel.IMPLEMENTATIONS, "fused", lambda device, dtype: WRONG["wrong gradient"])
    result = CliRunner().invoke(kernel_command, [*TINY, "--impl", "sumsq,fused", "--devices", "cpu",
                                                 "--dtype", "float32", "--format", "json"])
    assert result.exit_code == 1
    assert "fused" in result.output and "gradient error" in result.output
    assert "samples_per_s" not in result.stdout


def test_cli_json_end_to_end(tmp_path):
    result = CliRunner().invoke(kernel_command, [*TINY, "--impl", "naive,sumsq,fused,triton",
                                                 "--dtype", "float32,bfloat16", "--devices", "cpu,cuda",
                                                 "--format", "json", "--results-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 3 * 2 * 2 * 2  # impls x dtypes x batches x passes (triton is skipped on CPU)
    for row in rows:
        assert JSON_KEYS <= set(row)
        assert row["device"] == "cpu" and row["pass"] in ("forward", "backward")
        assert (row["fields"], row["dim"]) == (5, 3)
        assert row["samples_per_s"] == pytest.approx(row["batch"] / (row["median_ms"] / 1e3))
        assert row["gb_per_s"] == pytest.approx(row["bytes"] / (row["median_ms"] / 1e3) / 1e9)
        assert row["pct_of_bandwidth"] == pytest.approx(100 * row["gb_per_s"] / row["copy_gb_per_s"])
        assert row["pct_of_limit"] == pytest.approx(100 * row["gb_per_s"] / row["limit_gb_per_s"])
        assert row["limit"] == "cache"  # 40 x 5 x 3 floats sit in any cache: compared with a copy of that size
        assert row["min_ms"] <= row["median_ms"] <= row["max_ms"]
    assert {(r["impl"], r["dtype"], r["batch"], r["pass"]) for r in rows} == {
        (i, d, b, p) for i in ("naive", "sumsq", "fused") for d in ("float32", "bfloat16")
        for b in (16, 40) for p in ("forward", "backward")
    }
    assert all(r["speedup_vs_sumsq"] == 1.0 for r in rows if r["impl"] == "sumsq")
    assert "cuda is not available" in result.stderr
    assert "skipped triton on cpu" in result.stderr


def test_cli_records_the_rows_in_the_results_store(tmp_path):
    result = CliRunner().invoke(kernel_command, [*TINY, "--impl", "fused", "--dtype", "float32",
                                                 "--devices", "cpu", "--no-backward", "--format", "json",
                                                 "--results-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    with sqlite3.connect(tmp_path / "bench.db") as conn:
        stored = [json.loads(row) for (row,) in conn.execute("SELECT row FROM kernel_rows ORDER BY id")]
    assert stored == json.loads(result.stdout)


def test_cli_github_and_csv_formats(tmp_path):
    args = [*TINY, "--impl", "sumsq,fused", "--dtype", "float32", "--devices", "cpu", "--no-backward",
            "--threads", "1", "--results-dir", str(tmp_path)]
    table = CliRunner().invoke(kernel_command, [*args, "--format", "github"])
    assert table.exit_code == 0, table.output
    assert table.stdout.startswith("### cpu: memory copy bandwidth")
    assert "| impl" in table.stdout and "% of limit" in table.stdout and "| fused" in table.stdout
    assert "MB moved" in table.stdout and "| cache " in table.stdout
    assert "backward |" not in table.stdout  # --no-backward: forward rows only
    threads = torch.get_num_threads()
    csv_out = CliRunner().invoke(kernel_command, [*args, "--format", "csv"])
    assert csv_out.exit_code == 0, csv_out.output
    rows = list(csv.DictReader(io.StringIO(csv_out.stdout)))
    assert len(rows) == 2 * 2 and JSON_KEYS <= set(rows[0])
    assert {r["threads"] for r in rows} == {"1"}
    assert torch.get_num_threads() == threads  # --threads is undone afterwards


@pytest.mark.parametrize("args, message", [
    (["--impl", "fast"], "--impl"),
    (["--batch", "0"], "positive integers"),
    (["--batch", "12,x"], "positive integers"),
    (["--dtype", "int8"], "float32"),
    (["--devices", "tpu"], "cpu, cuda, mps"),
])
def test_cli_rejects_bad_options_by_name(args, message):
    result = CliRunner().invoke(kernel_command, args)
    assert result.exit_code == 2
    assert message in result.output


def test_byte_model():
    b, f, d = 10, 4, 3
    assert kernel.bytes_moved(b, f, d, torch.float32, "forward") == 4 * (b * f * d + b)
    assert kernel.bytes_moved(b, f, d, torch.float32, "backward") == 4 * (3 * b * f * d + 2 * b)
    assert kernel.bytes_moved(b, f, d, torch.bfloat16, "forward") == 2 * (b * f * d + b)


def test_time_call_warms_up_then_times_each_repetition():
    calls = []
    timing = kernel.time_call(lambda: calls.append(1), torch.device("cpu"), warmup=2, repeat=5)
    assert len(calls) == 7
    assert timing.min_s <= timing.q1_s <= timing.median_s <= timing.q3_s <= timing.max_s


def test_naive_is_timed_only_when_named_but_always_checks_the_others():
    from bench.kernels.harness import DEFAULT_IMPLS, IMPLEMENTATIONS

    option = next(p for p in kernel_command.params if p.name == "impls")
    assert "naive" not in DEFAULT_IMPLS and set(DEFAULT_IMPLS) == set(IMPLEMENTATIONS) - {"naive"}
    assert option.default.split(",") == list(DEFAULT_IMPLS) and KernelConfig().impls == DEFAULT_IMPLS
    assert option.callback(None, option, "all") == tuple(IMPLEMENTATIONS)  # 'all' still means all
    result = CliRunner().invoke(kernel_command, [*TINY, "--impl", "naive,sumsq", "--dtype", "float32",
                                                 "--no-backward", "--devices", "cpu", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert [row["impl"] for row in json.loads(result.stdout)] == ["naive", "sumsq"] * 2  # two batch sizes


def test_an_input_that_fits_in_the_last_level_cache_is_compared_with_a_cache_resident_copy():
    from bench.kernels.harness import last_level_cache_bytes, limit_for

    assert limit_for(6 * 2**20, 32 * 2**20, 14.0, 60.0) == ("cache", 60.0)  # B=4096, F=24, D=16 in 32 MiB
    assert limit_for(100 * 2**20, 32 * 2**20, 14.0, 60.0) == ("memory", 14.0)  # B=65536: from memory
    assert limit_for(6 * 2**20, 0, 14.0, 60.0) == ("memory", 14.0)  # cache size unknown: the memory copy
    assert last_level_cache_bytes(torch.device("cpu")) >= 0


def test_bench_kernel_keeps_freed_memory_unless_asked_to_measure_it_fresh(tmp_path):
    args = [*TINY, "--impl", "fused", "--dtype", "float32", "--devices", "cpu", "--no-backward", "--format", "json",
            "--results-dir", str(tmp_path)]
    kept = CliRunner().invoke(kernel_command, args)
    fresh = CliRunner().invoke(kernel_command, [*args, "--fresh-memory"])
    assert kept.exit_code == fresh.exit_code == 0, kept.output
    assert {r["memory"] for r in json.loads(kept.stdout)} == {"kept"} and "freed memory kept" in kept.stderr
    assert {r["memory"] for r in json.loads(fresh.stdout)} == {"fresh"}


# --- the models' kernel: one pass over each row, compiled once with dynamic shapes ----------------------------

@pytest.mark.parametrize("shape", [(64, 24, 16), (7, 5, 3), (1, 4, 2), (0, 3, 2)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_pass_matches_naive_in_values_and_gradients(shape, dtype):
    v = torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(1), requires_grad=True)
    out = fm_kernels.one_pass(v)
    ref_v = v.detach().double().requires_grad_()
    ref = fm_kernels.naive(ref_v)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    g = torch.randn(shape[0], 1, dtype=dtype, generator=torch.Generator().manual_seed(2))
    out.backward(g)
    ref.backward(g.double())
    torch.testing.assert_close(v.grad.double(), ref_v.grad, rtol=1e-5, atol=1e-5)


def test_one_pass_compiles_once_for_every_batch_size():
    import torch._dynamo.utils as dynamo_utils

    fm_kernels.one_pass(torch.randn(16, 6, 4))  # compiled (or found compiled) for this dtype
    before = dynamo_utils.counters["stats"]["unique_graphs"]
    for batch in (3, 17, 256, 1031, 2):  # a ragged last batch of any size: no recompile
        fm_kernels.one_pass(torch.randn(batch, 6, 4))
    assert dynamo_utils.counters["stats"]["unique_graphs"] == before
    assert fm_kernels._COMPILED.unavailable is None


def test_one_pass_keeps_compiling_past_dynamos_limit_on_variants(monkeypatch):
    """Dynamo compiles one function in at most `recompile_limit` variants (dtype, inference tensors, thread count
    each make one); with one shared copy, a process meeting more kinds lost the compiled kernel to a failure and
    the eager path served the rest of it. Each kind has its own copy; training and evaluation share one."""
    import torch._dynamo
    import torch._dynamo.utils as dynamo_utils

    compiler = fm_kernels._OnePassCompiler()
    monkeypatch.setattr(fm_kernels, "_COMPILED", compiler)
    with torch._dynamo.config.patch(recompile_limit=2):
        v = torch.randn(32, 5, 4, generator=torch.Generator().manual_seed(5))
        graphs = dynamo_utils.counters["stats"]["unique_graphs"]
        out = fm_kernels.one_pass(v.clone().requires_grad_())  # training: the input needs a gradient
        with torch.no_grad():
            torch.testing.assert_close(fm_kernels.one_pass(v), out.detach())  # evaluation: the same variant
        assert dynamo_utils.counters["stats"]["unique_graphs"] == graphs + 1
        threads = torch.get_num_threads()
        try:
            kinds = [(torch.float64, threads), (torch.float32, threads + 1), (torch.float64, threads + 1)]
            for dtype, n_threads in kinds:
                torch.set_num_threads(n_threads)
                torch.testing.assert_close(fm_kernels.one_pass(v.to(dtype)), fm_kernels.naive(v.to(dtype)),
                                           rtol=1e-5, atol=1e-5)
            with torch.inference_mode():
                made_there = v.clone()  # an inference tensor
                torch.testing.assert_close(fm_kernels.one_pass(made_there), out.detach())
        finally:
            torch.set_num_threads(threads)
    assert compiler.unavailable is None and len(compiler.kernels) == 5


def test_one_pass_falls_back_to_the_eager_kernel_with_one_warning(monkeypatch):
    compiler = fm_kernels._OnePassCompiler()
    monkeypatch.setattr(fm_kernels, "_COMPILED", compiler)

    def no_compiler(*args, **kwargs):
        raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found")

    monkeypatch.setattr(torch, "compile", no_compiler)
    v = torch.randn(32, 5, 4, generator=torch.Generator().manual_seed(3))
    with pytest.warns(UserWarning, match="could not be compiled .*the eager kernel serves"):
        out = fm_kernels.one_pass(v)
    torch.testing.assert_close(out, fm_kernels.fused(v))
    fm_kernels.one_pass(v)  # no second warning: the reason is kept
    assert "No working C++ compiler" in compiler.unavailable
    monkeypatch.setenv("BENCH_FM_COMPILE", "0")
    off = fm_kernels._OnePassCompiler()
    monkeypatch.setattr(fm_kernels, "_COMPILED", off)
    torch.testing.assert_close(fm_kernels.one_pass(v), fm_kernels.fused(v))
    assert off.unavailable == "BENCH_FM_COMPILE=0"


def test_one_pass_under_a_dispatch_mode_serves_eagerly_and_keeps_the_compiled_kernel(monkeypatch):
    """Dynamo skips frames under a TorchDispatchMode (FlopCounterMode in bench.scale): the eager path must
    serve there without disabling the compiled kernel for the rest of the process."""
    import warnings

    from torch.utils.flop_counter import FlopCounterMode

    compiler = fm_kernels._OnePassCompiler()
    monkeypatch.setattr(fm_kernels, "_COMPILED", compiler)
    v = torch.randn(32, 5, 4, generator=torch.Generator().manual_seed(4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "could not be compiled" warning
        with FlopCounterMode(display=False):
            inside = fm_kernels.one_pass(v)
        outside = fm_kernels.one_pass(v)
    torch.testing.assert_close(inside, fm_kernels.naive(v), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outside, inside, rtol=1e-5, atol=1e-5)
    assert compiler.unavailable is None and compiler.kernels


def test_the_rows_say_which_implementation_the_models_run(tmp_path):
    """The json marks the models' kernel (used_by_models), the table marks it '(models)', and it is the one
    the FM layer calls."""
    from plugins.interactions import fm as fm_layer

    args = [*TINY, "--impl", "fused,one_pass", "--dtype", "float32", "--devices", "cpu", "--no-backward",
            "--threads", "1", "--results-dir", str(tmp_path)]
    rows = json.loads(CliRunner().invoke(kernel_command, [*args, "--format", "json"]).stdout)
    assert {r["impl"]: r["used_by_models"] for r in rows} == {"fused": False, "one_pass": True}
    table = CliRunner().invoke(kernel_command, [*args, "--format", "github"]).stdout
    assert table.count("(models)") == len([r for r in rows if r["impl"] == "one_pass"])
    assert "one_pass (models)" in table and "fused (models)" not in table
    assert getattr(fm_layer, kernel.MODELS_USE) is getattr(fm_kernels, kernel.MODELS_USE)
