"""MPS backend: Apple-silicon GPUs through Metal Performance Shaders.

bf16 on MPS needs macOS 14 or later; older systems compute in fp32 (fp16
autocast would also work, but fp32 is the safe choice for comparable numbers).
No Triton and no torch.compile GPU backend here. MPS exposes no peak-memory
counter, so the peak is the highest figure seen by polling (every memory query
and every synchronize() polls): a lower bound on the true peak.
"""
from __future__ import annotations

import contextlib
import platform

import torch

from . import _common as C
from . import peak_flops as _peak

NAME = "mps"
VISIBLE_DEVICES = None  # no GPUs to pick from: backend.device is refused

_polled_peak = 0  # bytes; highest current_allocated_memory() seen since the last reset


def is_available() -> bool:
    return bool(C.safe(torch.backends.mps.is_available, False))


def unavailable_reason() -> str:
    """Why is_available() is False, in one line ("" when it is available)."""
    if is_available():
        return ""
    return (f"torch.backends.mps.is_available() is False (torch {torch.__version__} on "
            f"{C.os_version()}: needs macOS 12.3+ on Apple silicon)")


def device() -> torch.device:
    return torch.device("mps")


def macos_version() -> tuple[int, ...]:
    """(major, minor, ...) of macOS, () elsewhere."""
    text = C.safe(lambda: platform.mac_ver()[0], "") or ""
    return tuple(int(p) for p in text.split(".") if p.isdigit())


def compute_dtype() -> torch.dtype:
    return torch.bfloat16 if macos_version() >= (14,) else torch.float32


def autocast() -> contextlib.AbstractContextManager:
    return C.autocast_for("mps", compute_dtype())


def grad_scaler() -> None:
    return None  # bf16 or fp32: no loss scaling


def synchronize() -> None:
    torch.mps.synchronize()
    memory_allocated()  # a step boundary is a good moment to poll the peak


def memory_allocated() -> int:
    """Bytes held by live tensors now (driver_allocated_memory adds the cache)."""
    global _polled_peak
    now = torch.mps.current_allocated_memory()
    _polled_peak = max(_polled_peak, now)
    return now


def max_memory_allocated() -> int:
    """Highest tensor bytes polled since the last reset (a lower bound; see above)."""
    return max(_polled_peak, memory_allocated())


def reset_peak_memory() -> None:
    global _polled_peak
    _polled_peak = 0


def device_name() -> str:
    """e.g. "Apple M3 Max" (the CPU brand string names the whole chip)."""
    brand = C.first_working(lambda: C.sysctl("machdep.cpu.brand_string"),
                            default="unknown chip")
    return brand if brand.startswith("Apple") else f"Apple {brand}"


def peak_flops(dtype: torch.dtype | str) -> float | None:
    return _peak.lookup(device_name(), dtype)  # Apple publishes none: None, MFU n/a


def compile_available() -> bool:
    return False  # inductor has no mature MPS backend; eager is the fair baseline


def triton_available() -> bool:
    return False  # Triton has no Metal backend


def attention_impl() -> str:
    return "sdpa"


def pin_memory() -> bool:
    return False  # unified memory: host and GPU share it


def fingerprint() -> dict:
    return C.fingerprint(NAME, device_name(), 1 if is_available() else 0, None,
                         C.os_version(), compute_dtype())


def setup(threads: int | None = None) -> None:
    """Host threads only when asked; MPS has no precision knobs to set. Idempotent."""
    C.set_threads(threads)
