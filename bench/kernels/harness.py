"""`bench kernel`: FM-interaction throughput of each implementation, against the device's copy bandwidth.

The FM term reads every embedding once and does ~2 flops per byte, so it is memory-bound: the honest
yardstick is how close each implementation gets to the bandwidth of a plain large copy measured in the
same run on the same device.

Byte model (one for every implementation, so GB/s compare like for like; it counts the traffic an ideal
kernel cannot avoid, and an implementation making more passes pays for them in time):

* ``forward``:  v read once (B*F*D elements) + the output written (B);
* ``backward`` (forward + backward): the forward's bytes + v re-read and grad_v written (2*B*F*D)
  + the upstream gradient read (B).

Every implementation is first checked against `naive` (values and gradients, in float64 on the CPU,
over the first `check_rows` rows of the very input it is then timed on); a mismatch raises
`ImplementationMismatch` and no row is produced.

Each row is compared with the limit that applies to it: the memory copy bandwidth, or, where the input and
a same-size output fit in the last-level cache together (B=4096 at F=24, D=16 is 6 MB), the bandwidth of a
copy of the input's size measured in the same run, which runs from cache; against the memory figure such a
row would read over 100%.
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from tabulate import tabulate

from bench.kernels import fm

Kernel = Callable[[torch.Tensor], torch.Tensor]
KernelFactory = Callable[[torch.device, torch.dtype], Kernel]

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float64": torch.float64,
}
DEVICES = ("cpu", "cuda", "mps")
PASSES = ("forward", "backward")

# Relative to a row's term magnitude ||s||^2 + sum_f ||v_f||^2: the size of what the sum-of-squares
# identity subtracts, so rounding scales with it. A missing or extra pair is off by far more.
RTOL: dict[torch.dtype, float] = {
    torch.float64: 1e-10,
    torch.float32: 1e-5,
    torch.float16: 4e-3,
    torch.bfloat16: 2e-2,
}


class ImplementationMismatch(RuntimeError):
    """An implementation disagrees with `naive`: its timing would be meaningless."""


class ImplementationUnavailable(RuntimeError):
    """An implementation cannot run here (no triton, compile failed, ...); reported and skipped."""


def _eager(kernel: Kernel) -> KernelFactory:
    return lambda device, dtype: kernel


def _compiled(device: torch.device, dtype: torch.dtype) -> Kernel:
    # A fresh compile per case: dynamo's cache is per code object, and running out of recompiles
    # would silently time eager `sumsq` instead.
    torch.compiler.reset()
    return fm.compile_sumsq()


def _triton(device: torch.device, dtype: torch.dtype) -> Kernel:
    reason = fm.triton_unavailable_reason(device, dtype)
    if reason is not None:
        raise ImplementationUnavailable(reason)
    return fm.triton_fm


IMPLEMENTATIONS: dict[str, KernelFactory] = {
    "naive": _eager(fm.naive),
    "sumsq": _eager(fm.sumsq),
    "fused": _eager(fm.fused),
    "one_pass": _eager(fm.one_pass),
    "compiled": _compiled,
    "triton": _triton,
}
# timed by default: all but `naive`, which every row is still checked against; its O(F^2) loop of small
# ops took over 12 minutes at batch 65536 on a 2-core CPU, so it is timed only when named (or with 'all')
DEFAULT_IMPLS = tuple(name for name in IMPLEMENTATIONS if name != "naive")
MODELS_USE = "one_pass"  # the implementation the models' FM layer calls (plugins/interactions/fm.py)


@dataclass(frozen=True)
class KernelConfig:
    impls: tuple[str, ...] = DEFAULT_IMPLS
    batches: tuple[int, ...] = (4096, 65536)
    fields: int = 24
    dim: int = 16
    dtypes: tuple[str, ...] = ("float32", "bfloat16")
    devices: tuple[str, ...] = DEVICES
    backward: bool = True
    repeat: int = 20
    warmup: int = 3
    threads: int | None = None
    check_rows: int = 1024
    copy_mb: int = 256
    seed: int = 0


@dataclass(frozen=True)
class Timing:
    """Seconds per call: median and spread (quartiles, extremes) over the repetitions."""

    median_s: float
    q1_s: float
    q3_s: float
    min_s: float
    max_s: float

    @classmethod
    def of(cls, samples: list[float]) -> "Timing":
        q1, median, q3 = np.percentile(samples, [25, 50, 75])
        return cls(float(median), float(q1), float(q3), min(samples), max(samples))


def device_unavailable_reason(name: str) -> str | None:
    """Why device `name` cannot be benchmarked here, or None."""
    if name == "cpu":
        return None
    if name == "cuda":
        return None if torch.cuda.is_available() else "cuda is not available (no CUDA device or CPU-only torch)"
    if name == "mps":
        mps = getattr(torch.backends, "mps", None)
        return None if mps is not None and mps.is_available() else "mps is not available (not an Apple GPU)"
    raise ValueError(f"unknown device {name!r}; expected one of {', '.join(DEVICES)}")


def synchronize(device: torch.device) -> None:
    """Wait for queued device work, so a timer brackets the work and not just its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def time_call(fn: Callable[[], Any], device: torch.device, warmup: int, repeat: int) -> Timing:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        samples.append(time.perf_counter() - start)
    return Timing.of(samples)


def measure_copy_bandwidth(device: torch.device, megabytes: float, warmup: int, repeat: int, tries: int = 3) -> float:
    """GB/s of ``dst.copy_(src)`` over `megabytes` MiB, counting read + write: the roofline. The best of `tries`
    fresh buffer pairs (each the median of `repeat` copies): on this machine one pair of buffers copied at
    45 GB/s and another, in another process, at 71; a limit is what the memory can do, so the best counts."""
    return max(_copy_rate(device, max(int(megabytes * 2**20) // 4, 1), warmup, repeat) for _ in range(tries))


def _copy_rate(device: torch.device, floats: int, warmup: int, repeat: int) -> float:
    src = torch.ones(floats, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    timing = time_call(lambda: dst.copy_(src), device, max(warmup, 1), repeat)  # warm-up faults dst in
    return 2 * src.numel() * src.element_size() / timing.median_s / 1e9


def last_level_cache_bytes(device: torch.device) -> int:
    """The largest cache in front of the device's memory (CPU: the highest-level cache in sysfs; CUDA: L2);
    0 where unknown."""
    if device.type == "cuda":
        return int(getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0))
    sizes = {}
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            level = int((index / "level").read_text())
            text = (index / "size").read_text().strip()
        except (OSError, ValueError):
            continue
        scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
        sizes[level] = int(text.rstrip("KMG")) * scale
    return sizes[max(sizes)] if sizes else 0


def limit_for(input_bytes: int, cache_bytes: int, memory_bandwidth: float,
              cache_bandwidth: float) -> tuple[str, float]:
    """The limit a pass over `input_bytes` is measured against: the memory copy bandwidth, or where the input
    and a same-size output fit in the last-level cache together, a copy of that size, which runs from cache."""
    if cache_bytes and 2 * input_bytes <= cache_bytes:
        return "cache", cache_bandwidth
    return "memory", memory_bandwidth


def bytes_moved(batch: int, fields: int, dim: int, dtype: torch.dtype, pass_: str) -> int:
    """The byte model of the module docstring."""
    item = torch.empty((), dtype=dtype).element_size()
    embeddings, outputs = batch * fields * dim * item, batch * item
    if pass_ == "forward":
        return embeddings + outputs
    return 3 * embeddings + 2 * outputs


def _mismatch_at(err: torch.Tensor, bound: torch.Tensor) -> tuple[int, ...] | None:
    bad = ~(err <= bound)  # NaN counts as bad
    if not bool(bad.any()):
        return None
    return tuple(int(i) for i in bad.nonzero()[0])


def check_against_naive(
    name: str, kernel: Kernel, v: torch.Tensor, grad_out: torch.Tensor, backward: bool = True
) -> None:
    """Raise ImplementationMismatch unless kernel(v) and its gradient match `naive` within tolerance.

    The reference is `naive` in float64 on the CPU over the same values, so the check measures this
    implementation's rounding, not the reference's. Bounds scale with each row's term magnitude.
    """
    if v.dtype not in RTOL:
        raise ValueError(f"no tolerance for dtype {v.dtype}; expected one of {', '.join(DTYPES)}")
    rtol = RTOL[v.dtype]
    label = f"{name} ({str(v.dtype).replace('torch.', '')}, {v.device.type}, shape {tuple(v.shape)})"
    ref_in = v.detach().to("cpu", torch.float64).requires_grad_()
    ref_g = grad_out.detach().to("cpu", torch.float64).reshape(-1, 1)
    ref = fm.naive(ref_in)
    (ref_grad,) = torch.autograd.grad(ref, ref_in, ref_g)
    ref_in = ref_in.detach()
    s = ref_in.sum(dim=1)
    terms = s.square().sum(dim=1, keepdim=True) + ref_in.square().sum(dim=(1, 2)).unsqueeze(1)

    x = v.detach().clone().requires_grad_(backward)
    out = kernel(x)
    if out.shape != ref.shape or out.dtype != v.dtype:
        raise ImplementationMismatch(
            f"{label} returned {tuple(out.shape)} {out.dtype}; expected {tuple(ref.shape)} {v.dtype}"
        )
    err = (out.detach().to("cpu", torch.float64) - ref.detach()).abs()
    bound = rtol * terms + torch.finfo(v.dtype).tiny
    at = _mismatch_at(err, bound)
    if at is not None:
        raise ImplementationMismatch(
            f"{label} disagrees with naive: value error {err[at].item():.3g} at row {at[0]} exceeds "
            f"{bound[at].item():.3g} (rtol {rtol:g} of the row's term magnitude); naive gives "
            f"{ref[at].item():.6g}, it gives {out[at].item():.6g}"
        )
    if not backward:
        return
    (grad,) = torch.autograd.grad(out, x, grad_out.reshape(out.shape).to(out.dtype))
    err = (grad.to("cpu", torch.float64) - ref_grad).abs()
    bound = rtol * ref_g.abs().unsqueeze(2) * (ref_in.abs().sum(dim=1, keepdim=True) + ref_in.abs())
    at = _mismatch_at(err, bound + torch.finfo(v.dtype).tiny)
    if at is not None:
        raise ImplementationMismatch(
            f"{label} disagrees with naive: gradient error {err[at].item():.3g} at (row, field, dim) {at} "
            f"exceeds {bound[at].item():.3g}; naive gives {ref_grad[at].item():.6g}, it gives "
            f"{grad[at].item():.6g}"
        )


def _prime(name: str, kernel: Kernel, v: torch.Tensor, grad_out: torch.Tensor, backward: bool) -> None:
    """First calls at the timed shape, outside the timing: compilation happens (or fails) here."""
    try:
        with torch.no_grad():
            kernel(v)
        if backward:
            x = v.detach().requires_grad_()
            torch.autograd.grad(kernel(x), x, grad_out)
    except Exception as exc:  # a compiler failure: report it and move on, as for a missing package
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ImplementationUnavailable(f"{name} failed to run: {type(exc).__name__}: {first_line}") from exc


def _row(
    impl: str, device: torch.device, dtype: torch.dtype, pass_: str, config: KernelConfig, batch: int,
    timing: Timing, bandwidth: float, limit: tuple[str, float],
) -> dict[str, Any]:
    nbytes = bytes_moved(batch, config.fields, config.dim, dtype, pass_)
    gb_per_s = nbytes / timing.median_s / 1e9
    return {
        "impl": impl,
        "used_by_models": impl == MODELS_USE,
        "device": device.type,
        "dtype": str(dtype).replace("torch.", ""),
        "pass": pass_,
        "batch": batch,
        "fields": config.fields,
        "dim": config.dim,
        "samples_per_s": batch / timing.median_s,
        "gb_per_s": gb_per_s,
        "pct_of_bandwidth": 100.0 * gb_per_s / bandwidth,
        "limit": limit[0],  # what the row is compared with: memory copy, or (input in cache) a same-size copy
        "limit_gb_per_s": limit[1],
        "pct_of_limit": 100.0 * gb_per_s / limit[1],
        "median_ms": 1e3 * timing.median_s,
        "iqr_ms": 1e3 * (timing.q3_s - timing.q1_s),
        "min_ms": 1e3 * timing.min_s,
        "max_ms": 1e3 * timing.max_s,
        "bytes": nbytes,
        "copy_gb_per_s": bandwidth,
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "repeat": config.repeat,
    }


def _add_speedups(rows: list[dict[str, Any]]) -> None:
    """speedup_vs_sumsq: sumsq's median time over this row's, for the same case (None without sumsq)."""
    key = ("device", "dtype", "pass", "batch")
    sumsq = {tuple(r[k] for k in key): r["median_ms"] for r in rows if r["impl"] == "sumsq"}
    for r in rows:
        base = sumsq.get(tuple(r[k] for k in key))
        r["speedup_vs_sumsq"] = base / r["median_ms"] if base is not None else None


def _bench_device(
    device: torch.device, config: KernelConfig, implementations: Mapping[str, KernelFactory],
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    bandwidth = measure_copy_bandwidth(device, config.copy_mb, config.warmup, config.repeat)
    cache = last_level_cache_bytes(device)
    log(f"{device.type}: copy bandwidth {bandwidth:.1f} GB/s ({config.copy_mb} MiB dst.copy_(src), read + write); "
        f"last-level cache {cache / 2**20:.0f} MiB")
    same_size: dict[int, float] = {}  # copy bandwidth of buffers the size of an input that fits in cache
    generator = torch.Generator().manual_seed(config.seed)
    passes = PASSES if config.backward else PASSES[:1]
    rows, said = [], set()

    def skip(message: str) -> None:
        if message not in said:
            said.add(message)
            log(message)

    for dtype_name in config.dtypes:
        dtype = DTYPES[dtype_name]
        for batch in config.batches:
            v = torch.randn(batch, config.fields, config.dim, generator=generator).to(device, dtype)
            grad_out = torch.randn(batch, 1, generator=generator).to(device, dtype)
            size = v.numel() * v.element_size()
            if cache and 2 * size <= cache and size not in same_size:
                same_size[size] = measure_copy_bandwidth(device, size / 2**20, config.warmup, config.repeat)
            limit = limit_for(size, cache, bandwidth, same_size.get(size, bandwidth))
            n = min(batch, config.check_rows)
            for name in config.impls:
                try:
                    kernel = implementations[name](device, dtype)
                    _prime(name, kernel, v[:n], grad_out[:n], config.backward)
                except ImplementationUnavailable as exc:
                    skip(f"skipped {name} on {device.type}: {exc}")
                    continue
                check_against_naive(name, kernel, v[:n], grad_out[:n], backward=config.backward)
                try:
                    _prime(name, kernel, v, grad_out, config.backward)
                except ImplementationUnavailable as exc:
                    skip(f"skipped {name} on {device.type} {dtype_name} batch {batch}: {exc}")
                    continue
                for pass_ in passes:
                    timing = time_call(_pass(kernel, v, grad_out, pass_), device, config.warmup, config.repeat)
                    rows.append(_row(name, device, dtype, pass_, config, batch, timing, bandwidth, limit))
    return rows


def _pass(kernel: Kernel, v: torch.Tensor, grad_out: torch.Tensor, pass_: str) -> Callable[[], Any]:
    if pass_ == "forward":
        def forward() -> Any:
            with torch.no_grad():
                return kernel(v)
        return forward
    x = v.detach().requires_grad_()
    # autograd.grad, not .backward(): no accumulation into x.grad, as when the gradient flows on
    return lambda: torch.autograd.grad(kernel(x), x, grad_out)


def run_kernel_bench(
    config: KernelConfig,
    implementations: Mapping[str, KernelFactory] | None = None,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Rows of the benchmark (one per impl x device x dtype x batch x pass); unavailable things are logged."""
    implementations = IMPLEMENTATIONS if implementations is None else implementations
    unknown = [name for name in config.impls if name not in implementations]
    if unknown:
        raise ValueError(f"unknown implementation(s) {', '.join(unknown)}; known: {', '.join(implementations)}")
    previous_threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    try:
        rows = []
        for name in config.devices:
            reason = device_unavailable_reason(name)
            if reason is not None:
                log(f"{reason}; skipped")
                continue
            rows += _bench_device(torch.device(name), config, implementations, log)
    finally:
        torch.set_num_threads(previous_threads)
    _add_speedups(rows)
    return rows


TABLE_COLUMNS = (
    ("impl", "impl", "{}"),
    ("dtype", "dtype", "{}"),
    ("pass", "pass", "{}"),
    ("batch", "batch", "{}"),
    ("fields", "F", "{}"),
    ("dim", "D", "{}"),
    ("median_ms", "median ms", "{:.3f}"),
    ("iqr_ms", "IQR ms", "{:.3f}"),
    ("bytes", "MB moved", "{:.1f}"),
    ("gb_per_s", "GB/s", "{:.2f}"),
    ("limit", "limit", "{}"),
    ("limit_gb_per_s", "limit GB/s", "{:.1f}"),
    ("pct_of_limit", "% of limit", "{:.1f}"),
    ("speedup_vs_sumsq", "x sumsq", "{:.2f}"),
)


def format_rows(rows: list[dict[str, Any]], fmt: str) -> str:
    """github: a table per device (pass 'backward' = forward + backward); json: the rows; csv: the rows."""
    if fmt == "json":
        return json.dumps(rows, indent=2)
    if fmt == "csv":
        buffer = io.StringIO()
        if rows:
            writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        return buffer.getvalue().rstrip("\n")
    if fmt != "github":
        raise ValueError(f"unknown format {fmt!r}; expected github, json or csv")
    blocks = []
    for device in dict.fromkeys(r["device"] for r in rows):
        mine = [r for r in rows if r["device"] == device]
        threads = f", {mine[0]['threads']} threads" if mine[0]["threads"] else ""
        title = (f"### {device}: memory copy bandwidth {mine[0]['copy_gb_per_s']:.1f} GB/s{threads}; pass "
                 "'backward' is forward + backward; limit: the memory copy, or for an input that fits in the "
                 "last-level cache with its output, a copy of the input's size (from cache)")
        table = [
            ["" if r[key] is None else spec.format(r[key] / 1e6 if key == "bytes" else r[key])
             + (" (models)" if key == "impl" and r.get("used_by_models") else "")
             for key, _, spec in TABLE_COLUMNS] for r in mine
        ]
        blocks.append(title + "\n\n" + tabulate(table, [h for _, h, _ in TABLE_COLUMNS], tablefmt="github"))
    return "\n\n".join(blocks)


def record(rows: list[dict[str, Any]], config: KernelConfig, results_dir: Path) -> int:
    """Record rows in the results store; returns the batch id."""
    from bench.results.store import ResultStore

    return ResultStore(results_dir).record_kernel(rows, {**asdict(config), "torch": torch.__version__})
