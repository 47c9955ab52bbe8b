"""Device and thread selection: one place that knows what 'auto' means."""

from __future__ import annotations

import os
import random
import warnings

import numpy as np
import torch


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda if available, else mps, else cpu; 'cuda', 'cuda:N', 'mps', 'cpu' checked for real."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"--device {name!r}: not a device; expected auto, cpu, cuda, cuda:N or mps") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {name!r}: {device.type} is not a device to train on here; expected auto, cpu, "
                         "cuda, cuda:N or mps")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: CUDA is not available on this machine (torch {torch.__version__})")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"--device {name}: MPS is not available on this machine")
    return device


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch (all devices), and switch torch's deterministic algorithms on or off.

    On CPU every op we use is deterministic already. On CUDA the backward of index_select and index_add
    (used by the embeddings and the CIN) accumulate with atomics in a varying order, so two runs differ in
    rounding and early stopping can then pick another epoch; deterministic mode sorts instead, and cuBLAS
    needs a fixed workspace (CUBLAS_WORKSPACE_CONFIG, set here unless already set, before CUDA starts).
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic)


def set_threads(threads: int | None) -> int:
    """Set torch's intra-op thread count (None: leave torch's default); returns the count in force."""
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def flush_denormal() -> None:
    """Flush subnormal floats to zero in this thread and the CPU threads torch starts from it.

    Adam's weight decay drives the weights of dead ReLU units into the subnormal range, where a CPU matmul
    runs two orders of magnitude slower (docs/performance.md); values below 1.2e-38 become 0. Called where
    training, evaluation and the CLI start (not at import: importing a library should not change a process's
    float mode). NumPy (before 2.4) then finds its smallest subnormal to be zero and warns: expected here.
    """
    torch.set_flush_denormal(True)
    warnings.filterwarnings("ignore", message="The value of the smallest subnormal", category=UserWarning)


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


def keep_freed_memory(threshold: int = 1 << 30) -> bool:
    """Let glibc's malloc serve allocations below `threshold` from its heap and keep freed memory for reuse,
    instead of mapping fresh pages for every large tensor and unmapping them on free: page-faulting a fresh
    large tensor costs more than computing it (docs/performance.md). True where it took effect
    (glibc); a no-op elsewhere. (A caching allocator such as jemalloc, preloaded, does the same.)"""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = getattr(libc, "mallopt", None)
    except OSError:
        mallopt = None
    if mallopt is None:
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, threshold)) and bool(mallopt(M_TRIM_THRESHOLD, 2 * threshold))
