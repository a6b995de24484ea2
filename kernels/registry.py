"""The dispatch: which implementation runs a kernel, the Triton one or the pure-torch reference.

    kernels.rms_norm(x)                      # through implementation("rms_norm", x)
    AUTORESEARCH_KERNELS=reference python train.py

Modes (env `AUTORESEARCH_KERNELS`, read at every call, so the harness sets it per child
process; `kernels.mode=` in the config sets it for the training child):
- `auto` (default): Triton on a CUDA/ROCm tensor when Triton imports and the kernel
  compiles; anything else (MPS, CPU, no Triton, a kernel that fails to build) runs the
  reference, after one warning per kernel when Triton was expected to work;
- `reference`: always the reference (the evaluation's model runners use this);
- `triton`: Triton or a loud error. On a CPU tensor it needs Triton's interpreter
  (`TRITON_INTERPRET=1` in the environment before the kernel modules are imported):
  that is how `autoresearch kernels check` tests the kernels without a GPU.

The Triton modules are imported only when first asked for, so `import kernels` works
on a machine without Triton (a Mac, a CPU-only box).
"""
import importlib
import os
import warnings
from typing import Callable

from kernels import reference

ENV_MODE = "AUTORESEARCH_KERNELS"
MODES = ("auto", "reference", "triton")

# kernel name -> the module whose function of that name is its Triton implementation (a
# module never has a kernel's own name: importing it would replace the package's function)
TRITON_MODULES = {
    "rms_norm": "kernels.rmsnorm",
    "apply_rotary": "kernels.rotary",
    "linear_cross_entropy": "kernels.linear_ce",
}
NAMES = tuple(TRITON_MODULES)

_loaded: dict[str, Callable] = {}
_broken: dict[str, str] = {}  # kernel name -> why its Triton implementation cannot run (auto falls back)
_proven: set[str] = set()  # kernels whose Triton forward has run once in this process


def mode() -> str:
    value = os.environ.get(ENV_MODE, "auto")
    if value not in MODES:
        raise ValueError(f"{ENV_MODE}={value!r}: expected one of {', '.join(MODES)}")
    return value


def interpreted() -> bool:
    """Triton's CPU interpreter is on (it must be before the kernel modules are imported)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def triton_implementation(name: str) -> Callable:
    """The Triton implementation of kernel `name`, imported on first use; raises
    ImportError (no Triton, or the module does not load) with the reason."""
    if name not in _loaded:
        module = importlib.import_module(TRITON_MODULES[name])
        _loaded[name] = getattr(module, name)
    return _loaded[name]


def _runs_here(x) -> bool:
    return x.device.type == "cuda" or (x.device.type == "cpu" and interpreted())  # ROCm reports "cuda" too


def implementation(name: str, x) -> Callable:
    """The function that will run kernel `name` for tensor `x` under the current mode."""
    ref = getattr(reference, name)
    m = mode()
    if m == "reference":
        return ref
    if m == "triton":
        if not _runs_here(x):
            raise RuntimeError(f"kernel {name!r}: Triton needs a CUDA/ROCm tensor (or TRITON_INTERPRET=1 for a "
                               f"CPU one), got {x.device}")
        try:
            return triton_implementation(name)
        except ImportError as e:
            raise RuntimeError(f"kernel {name!r}: the Triton implementation does not load: {e}") from e
    if x.device.type != "cuda" or name in _broken:
        return ref
    try:
        fast = triton_implementation(name)
    except ImportError as e:
        return _fall_back(name, f"it does not load ({e})")
    return _guarded(name, fast, ref)


def _fall_back(name: str, why: str) -> Callable:
    _broken[name] = why
    warnings.warn(f"kernel {name!r}: Triton implementation unusable, running the reference instead: {why}",
                  RuntimeWarning, stacklevel=3)
    return getattr(reference, name)


def _guarded(name: str, fast: Callable, ref: Callable) -> Callable:
    """`fast`, except that a first call which fails to compile or launch falls back to
    the reference for good (auto mode only: a named `triton` mode raises instead). A
    failure in a backward pass surfaces as an error: the forward has already run."""
    if name in _proven:
        return fast

    def first_call(*args, **kwargs):
        try:
            out = fast(*args, **kwargs)
        except Exception as e:  # a compile or launch failure on this device: the reference, said once
            _fall_back(name, f"{type(e).__name__}: {e}")
            return ref(*args, **kwargs)
        _proven.add(name)
        return out

    return first_call


def rms_norm(x, eps: float = 1e-6, weight=None):
    return implementation("rms_norm", x)(x, eps, weight)


def apply_rotary(x, cos, sin):
    return implementation("apply_rotary", x)(x, cos, sin)


def linear_cross_entropy(hidden, weight, targets, softcap=None, ignore_index: int = -1):
    """Mean cross-entropy of softcap * tanh((hidden @ weight.T) / softcap) against
    `targets` (rows with ignore_index excluded), without the full logits in memory
    where the Triton implementation runs."""
    return implementation("linear_cross_entropy", hidden)(hidden, weight, targets, softcap, ignore_index)
