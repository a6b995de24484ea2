"""ROCm backend: AMD GPUs through a ROCm (HIP) build of torch.

A ROCm build sets torch.version.hip and exposes its GPUs through the torch.cuda
namespace with device type "cuda", so device, memory and synchronize calls are
cuda.py's own; what differs is detection, dtype, naming and versions.
"""
from __future__ import annotations

import contextlib

import torch

from . import _common as C
from . import peak_flops as _peak
# Same torch.cuda calls on HIP devices: shared, not copied.
from .cuda import (device, max_memory_allocated, memory_allocated, pin_memory,  # noqa: F401
                   reset_peak_memory, synchronize)

NAME = "rocm"
VISIBLE_DEVICES = "HIP_VISIBLE_DEVICES"  # backend.device=K sets it (backends.activate)


def is_available() -> bool:
    return bool(C.safe(lambda: torch.version.hip is not None and torch.cuda.is_available(),
                       False))


def unavailable_reason() -> str:
    """Why is_available() is False, in one line ("" when it is available)."""
    if getattr(torch.version, "hip", None) is None:
        return (f"torch.version.hip is None (torch {torch.__version__} "
                f"is not a ROCm build)")
    if not is_available():
        return (f"torch.cuda.is_available() is False (torch {torch.__version__}, "
                f"HIP {torch.version.hip}: no AMD GPU visible)")
    return ""


def compute_dtype() -> torch.dtype:
    return torch.bfloat16  # every Instinct GPU we target (MI200/MI300) has bf16 matrix cores


def autocast() -> contextlib.AbstractContextManager:
    return C.autocast_for("cuda", compute_dtype())  # HIP devices use device type "cuda"


def grad_scaler() -> None:
    return None  # bf16: no loss scaling


def device_name() -> str:
    """e.g. "AMD Instinct MI300X"; the gfx architecture name if the driver gives none."""
    return C.first_working(torch.cuda.get_device_name,
                           lambda: torch.cuda.get_device_properties(0).gcnArchName,
                           default="unknown GPU")


def peak_flops(dtype: torch.dtype | str) -> float | None:
    """Datasheet dense peak FLOP/s, None when the device is not in the table."""
    tf32 = C.safe(torch.get_float32_matmul_precision, "highest") != "highest"
    return _peak.lookup(device_name(), dtype, allow_tf32=tf32)


def compile_available() -> bool:
    """torch.compile's GPU backend generates Triton kernels (ROCm's triton build)."""
    return is_available() and C.importable("triton")


def triton_available() -> bool:
    return is_available() and C.triton_driver_active()


def attention_impl() -> str:
    return "sdpa"  # FlashAttention 3 is Hopper-only; SDPA has ROCm flash/efficient kernels


def fingerprint() -> dict:
    fp = C.fingerprint(NAME, device_name(), C.safe(torch.cuda.device_count, 0), None,
                       f"HIP {torch.version.hip}", compute_dtype())
    fp["arch"] = C.safe(lambda: torch.cuda.get_device_properties(0).gcnArchName)
    return fp


def setup(threads: int | None = None) -> None:
    """Same matmul policy as cuda.py (TF32/XF32 where the GPU has it). Idempotent."""
    torch.set_float32_matmul_precision("high")
    C.set_threads(threads)
