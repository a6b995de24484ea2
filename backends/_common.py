"""Code shared by the four backend modules (cpu, cuda, rocm, mps).

Nothing here picks a backend; it holds the small pieces every backend needs:
"first candidate that works" probing, /proc/cpuinfo parsing, dtype names,
autocast construction, version strings and the common fingerprint fields.
Probing helpers never raise: a backend that cannot answer says "unknown".
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
from typing import Any, Callable

import torch

CPUINFO_PATH = "/proc/cpuinfo"
# x86 flags that mean bf16 matmuls run at full speed. Without them (AVX2-only
# CPUs) torch emulates bf16 and a matmul is ~100x slower than fp32 (docs/architecture.md, "Platform facts").
FAST_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})

_DTYPE_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}


def safe(fn: Callable[[], Any], default: Any = None) -> Any:
    """fn(), or default when it raises (probes must never take the process down)."""
    try:
        return fn()
    except Exception:
        return default


def first_working(*candidates: Callable[[], Any], default: Any = None) -> Any:
    """The first candidate result that neither raises nor is None/blank."""
    for fn in candidates:
        value = safe(fn)
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        return value.strip() if isinstance(value, str) else value
    return default


@functools.lru_cache(maxsize=1)
def read_cpuinfo(path: str = CPUINFO_PATH) -> str:
    """Text of /proc/cpuinfo ("" where there is none, e.g. macOS/Windows).

    Cached: compute_dtype() may be asked every step and the file does not change.
    """
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _cpuinfo_values(text: str, key: str) -> list[str]:
    """Values of every `key : value` line (one per logical CPU) in cpuinfo text."""
    out = []
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip().lower() == key:
            out.append(value.strip())
    return out


def cpu_flags(text: str) -> frozenset[str]:
    """CPU feature flags in cpuinfo text (x86 "flags", ARM "Features")."""
    flags: set[str] = set()
    for key in ("flags", "features"):
        for value in _cpuinfo_values(text, key):
            flags.update(value.split())
    return frozenset(flags)


def has_fast_bf16(text: str) -> bool:
    """True when the cpuinfo text shows native bf16 matmul support (AVX512-BF16/AMX)."""
    return bool(cpu_flags(text) & FAST_BF16_FLAGS)


def cpu_model_name(text: str) -> str | None:
    """The first "model name" in cpuinfo text, or None."""
    names = _cpuinfo_values(text, "model name")
    return names[0] if names and names[0] else None


def sysctl(name: str) -> str | None:
    """`sysctl -n name` (macOS/BSD), or None where it is missing or fails."""
    def run() -> str:
        res = subprocess.run(["sysctl", "-n", name], capture_output=True,
                             text=True, timeout=2, check=True)
        return res.stdout
    return first_working(run)


def dtype_name(dtype: torch.dtype) -> str:
    """Short name used in fingerprints and reports: bf16 / fp16 / fp32."""
    return _DTYPE_NAMES.get(dtype, str(dtype).removeprefix("torch."))


def autocast_for(device_type: str, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """torch.autocast for low-precision dtypes; a no-op context for fp32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=dtype)


def importable(module: str) -> bool:
    """Whether `import module` succeeds (any error, not just ImportError, means no)."""
    return safe(lambda: importlib.import_module(module) is not None, False)


def triton_driver_active() -> bool:
    """Triton imports AND has an active GPU driver.

    With no GPU, `import triton` works but `triton.runtime.driver.active` raises
    "0 active drivers" (docs/architecture.md, "Platform facts"), so importing alone proves nothing.
    """
    def probe() -> bool:
        from triton.runtime import driver
        return driver.active is not None
    return importable("triton") and bool(safe(probe, False))


def triton_version() -> str | None:
    """Installed triton version (CUDA or ROCm wheel names), without importing it."""
    def from_module() -> str:
        return sys.modules["triton"].__version__
    dists = ("triton", "pytorch-triton-rocm", "pytorch-triton")
    return first_working(from_module, *(functools.partial(importlib.metadata.version, d)
                                        for d in dists))


def cxx_compiler() -> str | None:
    """Path of a C++ compiler on PATH (what torch.compile's CPU backend needs)."""
    return first_working(lambda: shutil.which(os.environ["CXX"]),
                         lambda: shutil.which("c++"), lambda: shutil.which("g++"),
                         lambda: shutil.which("clang++"))


def os_version() -> str:
    """e.g. "Linux 6.1.0-18-amd64" or "macOS 14.5"."""
    mac = safe(lambda: platform.mac_ver()[0], "")
    if mac:
        return f"macOS {mac}"
    return f"{platform.system()} {platform.release()}".strip()


def set_threads(threads: int | None) -> None:
    """torch.set_num_threads(threads) when given; rejects nonsense loudly."""
    if threads is None:
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int, got {threads!r}")
    torch.set_num_threads(threads)


def fingerprint(backend: str, device_name: str, device_count: int, driver: str | None,
                runtime: str | None, dtype: torch.dtype) -> dict:
    """The fields every backend's fingerprint() has (keys calibration caches by)."""
    return {
        "backend": backend,
        "device_name": device_name,
        "device_count": device_count,
        "driver": driver,      # GPU driver version where known, else None
        "runtime": runtime,    # "CUDA 12.4" / "HIP 6.2", or the OS for mps/cpu
        "torch": torch.__version__,
        "triton": triton_version(),
        "compute_dtype": dtype_name(dtype),
    }
