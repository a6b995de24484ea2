"""Implementation registry and dispatch: quiet fallback when automatic, loud when named."""
import os
from typing import Callable

from kernels import reference

ENV_MODE = "AUTORESEARCH_KERNELS"
MODES = ("auto", "reference", "triton")

# name -> Triton implementation; filled by kernel modules once they exist.
TRITON: dict[str, Callable] = {}


def mode() -> str:
    value = os.environ.get(ENV_MODE, "auto")
    if value not in MODES:
        raise ValueError(f"{ENV_MODE}={value!r}: expected one of {', '.join(MODES)}")
    return value


def _triton_usable(x) -> bool:
    return x.device.type == "cuda"  # ROCm tensors report "cuda" too


def implementation(name: str, x) -> Callable:
    """The function that will run kernel `name` for tensor `x` under the current mode."""
    ref = getattr(reference, name)
    m = mode()
    if m == "reference":
        return ref
    fast = TRITON.get(name)
    if m == "triton":
        if fast is None:
            raise RuntimeError(f"kernel {name!r}: no Triton implementation is registered")
        if not _triton_usable(x):
            raise RuntimeError(f"kernel {name!r}: Triton needs a CUDA/ROCm tensor, got {x.device}")
        return fast
    return fast if fast is not None and _triton_usable(x) else ref


def rms_norm(x, eps: float = 1e-6):
    return implementation("rms_norm", x)(x, eps)


def apply_rotary(x, cos, sin):
    return implementation("apply_rotary", x)(x, cos, sin)
