"""CPU backend: always available; the CI and smoke-run default.

Compute dtype is fp32 unless the CPU has native bf16 (AVX512-BF16 or AMX): on
AVX2-only CPUs torch emulates bf16 and a matmul is ~100x slower (docs/architecture.md, "Platform facts").
AUTORESEARCH_CPU_DTYPE=fp32|bf16 overrides the choice.

Memory is the process's resident set (RSS), not tensor bytes: a CPU has no
allocator statistics to ask.
"""
from __future__ import annotations

import contextlib
import os
import platform
import sys

import psutil
import torch

from . import _common as C

NAME = "cpu"
VISIBLE_DEVICES = None  # no GPUs to pick from: backend.device is refused
ENV_DTYPE = "AUTORESEARCH_CPU_DTYPE"
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}

_polled_peak = 0  # bytes; highest RSS seen by memory_allocated() since the last reset


def is_available() -> bool:
    return True


def unavailable_reason() -> str:
    return ""


def device() -> torch.device:
    return torch.device("cpu")


def compute_dtype() -> torch.dtype:
    """fp32, or bf16 where the CPU flags say bf16 is native; the env var wins."""
    override = os.environ.get(ENV_DTYPE, "").strip().lower()
    if override:
        if override not in _DTYPES:
            raise ValueError(f"{ENV_DTYPE}={override!r}: expected one of {sorted(_DTYPES)}")
        return _DTYPES[override]
    return torch.bfloat16 if C.has_fast_bf16(C.read_cpuinfo()) else torch.float32


def autocast() -> contextlib.AbstractContextManager:
    return C.autocast_for("cpu", compute_dtype())


def grad_scaler() -> None:
    return None  # bf16 has fp32's exponent range: no loss scaling needed


def synchronize() -> None:
    return None  # CPU ops are synchronous


def memory_allocated() -> int:
    """Current resident set size of this process, bytes."""
    global _polled_peak
    rss = psutil.Process().memory_info().rss
    _polled_peak = max(_polled_peak, rss)
    return rss


def _os_high_water() -> int:
    """The OS's lifetime peak RSS of this process, bytes (0 where unknown)."""
    try:
        import resource  # not on Windows
    except ImportError:
        return int(getattr(psutil.Process().memory_info(), "peak_wset", 0))
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024  # macOS: bytes, Linux: KiB


def max_memory_allocated() -> int:
    """Peak RSS, bytes: max(OS high-water mark, highest polled RSS, current RSS).

    The OS high-water mark (getrusage ru_maxrss) covers the whole process life
    and cannot be reset, so after reset_peak_memory() this figure is an upper
    bound on the peak since the reset, never an under-estimate. In a fresh
    training process (how the harness runs experiments) it is exact.
    """
    return max(_os_high_water(), _polled_peak, memory_allocated())


def reset_peak_memory() -> None:
    """Restart the polled peak at the current RSS (the OS mark stays; see above)."""
    global _polled_peak
    _polled_peak = 0
    memory_allocated()


def device_name() -> str:
    """CPU model, e.g. "AMD EPYC 7B13"."""
    return C.first_working(lambda: C.cpu_model_name(C.read_cpuinfo()),
                           lambda: C.sysctl("machdep.cpu.brand_string"),
                           platform.processor, default="unknown CPU")


def peak_flops(dtype: torch.dtype | str) -> None:
    return None  # no datasheet figure for CPUs; calibration measures matmul FLOP/s


def compile_available() -> bool:
    """torch.compile's CPU backend (inductor) builds C++: it needs a compiler."""
    return C.cxx_compiler() is not None


def triton_available() -> bool:
    return False  # Triton has no CPU driver; kernels run only under TRITON_INTERPRET=1


def attention_impl() -> str:
    return "sdpa"


def pin_memory() -> bool:
    return False  # nothing to copy to: tensors already live in host memory


def fingerprint() -> dict:
    fp = C.fingerprint(NAME, device_name(), 1, None, C.os_version(), compute_dtype())
    fp["threads"] = torch.get_num_threads()
    fp["logical_cores"] = os.cpu_count()
    fp["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY", "")  # spinning changes throughput by ~20%
    return fp


def setup(threads: int | None = None) -> None:
    """Use `threads` intra-op threads (default: every core this process may run on: a
    container or `taskset` may allow fewer than the machine has, and more threads than
    cores run many times slower). Idempotent."""
    C.set_threads(threads if threads is not None else available_cores())


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS, Windows: no affinity mask
        return os.cpu_count() or 1
