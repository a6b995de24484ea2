"""CUDA backend: NVIDIA GPUs through a CUDA build of torch.

A ROCm build of torch also answers torch.cuda.is_available() (HIP devices
live in the torch.cuda namespace), so this backend is available only when
torch.version.hip is None; rocm.py takes the other case. Only device 0 (the
current device) is described: one experiment runs on one GPU.
"""
from __future__ import annotations

import contextlib

import torch

from . import _common as C
from . import peak_flops as _peak

NAME = "cuda"
VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"  # backend.device=K sets it (backends.activate)


def is_available() -> bool:
    return bool(C.safe(lambda: torch.version.hip is None and torch.cuda.is_available(), False))


def unavailable_reason() -> str:
    """Why is_available() is False, in one line ("" when it is available)."""
    if getattr(torch.version, "hip", None) is not None:
        return f"torch {torch.__version__} is a ROCm build (HIP {torch.version.hip}); use 'rocm'"
    if torch.version.cuda is None:
        return (f"torch.cuda.is_available() is False "
                f"(torch {torch.__version__} is a CPU build)")
    if not is_available():
        return (f"torch.cuda.is_available() is False (torch {torch.__version__}, "
                f"CUDA {torch.version.cuda}: no NVIDIA GPU or driver visible)")
    return ""


def device() -> torch.device:
    return torch.device("cuda")


def capability() -> tuple[int, int]:
    """(major, minor) compute capability of the current device, e.g. (9, 0) for Hopper."""
    return tuple(torch.cuda.get_device_capability())


def compute_dtype() -> torch.dtype:
    """bf16 from Ampere (sm_80) on; older GPUs have no fast bf16, so fp16."""
    return torch.bfloat16 if capability() >= (8, 0) else torch.float16


def autocast() -> contextlib.AbstractContextManager:
    return C.autocast_for("cuda", compute_dtype())


def grad_scaler() -> torch.amp.GradScaler | None:
    """fp16's narrow exponent range needs loss scaling; bf16 does not."""
    return torch.amp.GradScaler("cuda") if compute_dtype() == torch.float16 else None


def synchronize() -> None:
    torch.cuda.synchronize()


def memory_allocated() -> int:
    """Bytes held by live tensors now (caching-allocator figure, not nvidia-smi's)."""
    return torch.cuda.memory_allocated()


def max_memory_allocated() -> int:
    """Peak bytes held by tensors since the last reset_peak_memory()."""
    return torch.cuda.max_memory_allocated()


def reset_peak_memory() -> None:
    torch.cuda.reset_peak_memory_stats()


def device_name() -> str:
    """e.g. "NVIDIA H100 80GB HBM3" (the key for the peak FLOP/s table)."""
    return C.first_working(torch.cuda.get_device_name, default="unknown GPU")


def peak_flops(dtype: torch.dtype | str) -> float | None:
    """Datasheet dense peak FLOP/s, None when the device is not in the table.

    fp32 matmuls run as TF32 under setup()'s "high" matmul precision, so fp32
    asks for the TF32 figure then.
    """
    return _peak.lookup(device_name(), dtype, allow_tf32=_tf32_enabled())


def _tf32_enabled() -> bool:
    return C.safe(torch.get_float32_matmul_precision, "highest") != "highest"


def compile_available() -> bool:
    """torch.compile's GPU backend (inductor) generates Triton kernels."""
    return is_available() and C.importable("triton")


def triton_available() -> bool:
    return is_available() and C.triton_driver_active()


def attention_impl() -> str:
    """"fa3" (FlashAttention 3) on Hopper (sm_90) when it is installed, else "sdpa"."""
    ok = C.safe(lambda: is_available() and capability() == (9, 0)
                and C.importable("flash_attn_interface"), False)
    return "fa3" if ok else "sdpa"


def pin_memory() -> bool:
    return True  # pinned host buffers make host-to-device copies async


def _driver_version() -> str | None:
    """NVIDIA driver version from NVML (None where NVML is missing: docs/architecture.md, "Platform facts")."""
    def probe() -> str:
        import pynvml
        pynvml.nvmlInit()
        try:
            version = pynvml.nvmlSystemGetDriverVersion()
        finally:
            pynvml.nvmlShutdown()
        return version.decode() if isinstance(version, bytes) else version
    return C.first_working(probe)


def fingerprint() -> dict:
    fp = C.fingerprint(NAME, device_name(), C.safe(torch.cuda.device_count, 0),
                       _driver_version(), f"CUDA {torch.version.cuda}", compute_dtype())
    fp["capability"] = "%d.%d" % capability()
    return fp


def setup(threads: int | None = None) -> None:
    """TF32 matmuls (precision "high"); host threads only when asked. Idempotent."""
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.allow_tf32 = True
    C.set_threads(threads)
