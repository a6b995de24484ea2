"""Backends: one module per device family, the same small face on each.

    import backends
    b = backends.activate("auto")          # or "cuda" | "rocm" | "mps" | "cpu"
    x = torch.zeros(8, device=b.device())
    with b.autocast(): ...

Each of cpu.py, cuda.py, rocm.py and mps.py exposes NAME, is_available,
unavailable_reason, device, compute_dtype, autocast, grad_scaler, synchronize,
memory_allocated, max_memory_allocated, reset_peak_memory, device_name,
peak_flops, compile_available, triton_available, attention_impl, pin_memory,
fingerprint and setup, and VISIBLE_DEVICES (the variable that picks the GPUs
a process sees; None on cpu and mps). activate() writes the resolved choice
into the environment (AUTORESEARCH_BACKEND, AUTORESEARCH_THREADS, and for a
pinned GPU CUDA_VISIBLE_DEVICES or HIP_VISIBLE_DEVICES) so that child
processes (the training run, the evaluator) pick the same backend and GPU via
current().
"""
from __future__ import annotations

import importlib
import os
from types import ModuleType

from . import attention as _attention  # the module; `attention` below is the function

NAMES = ("cuda", "rocm", "mps", "cpu")  # "auto" takes the first available, in this order
ENV_BACKEND = "AUTORESEARCH_BACKEND"
ENV_THREADS = "AUTORESEARCH_THREADS"

_active: ModuleType | None = None  # set by activate(); what current() returns
# variable -> its value before this process first pinned a GPU (None: it was unset); a
# later pin indexes into that list of GPUs, not into the one GPU the first pin left visible
_unpinned: dict[str, str | None] = {}

# OpenMP threads that spin while they wait for work (libgomp's default for a while after
# each parallel region) collapse throughput when two processes share the cores: two tiny
# CPU experiments side by side on 2 cores made 2-3 steps each in 20 s, and 35 each with
# passive waiting (one alone: ~60 / ~50; docs/benchmarks.md). Every process of this
# project waits passively unless the user's
# environment says otherwise; set here, before torch loads in the harness's processes,
# and passed to every child (harness/proc.py), which may import torch first.
PROCESS_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}
for _key, _value in PROCESS_ENV.items():
    os.environ.setdefault(_key, _value)


def process_env() -> dict[str, str]:
    """The environment every child of the harness gets from the backends (the user's own
    setting of each variable wins)."""
    return {k: os.environ.get(k, v) for k, v in PROCESS_ENV.items()}


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"{__name__}.{name}")


def get(name: str = "auto") -> ModuleType:
    """The backend module for a name; "auto" = first available in NAMES order.

    Unknown name -> ValueError; a named backend that is not available ->
    RuntimeError saying why (never a quiet fallback when asked by name).
    """
    key = (name or "auto").strip().lower()
    if key == "auto":
        return next(m for m in map(_module, NAMES) if m.is_available())  # cpu always is
    if key not in NAMES:
        raise ValueError(f"unknown backend {name!r}; valid choices: auto, {', '.join(NAMES)}")
    backend = _module(key)
    if not backend.is_available():
        reason = backend.unavailable_reason() or "it is not available"
        raise RuntimeError(f"backend {key!r} requested but {reason}")
    return backend


def activate(name: str = "auto", threads: int | None = None, device: int | None = None) -> ModuleType:
    """Resolve, set up and remember a backend; export the choice to child processes.
    `device`: pin this process and its children to that GPU (its index among the GPUs
    the process may see); ValueError on a backend without GPUs to pick from."""
    global _active
    if device is not None and (name or "auto").strip().lower() in ("cpu", "mps"):
        raise ValueError(_no_gpus(name, device))
    var = _pin(device)
    try:
        backend = get(name)
    except RuntimeError as e:
        if device is None or var is None:
            raise
        raise RuntimeError(f"{e} (backend.device={device}: {var}={os.environ.get(var, '')})") from None
    if device is not None and (backend.VISIBLE_DEVICES is None or backend.VISIBLE_DEVICES != var):
        # `auto` fell back to a device without GPUs
        raise ValueError(_no_gpus(backend.NAME, device))
    backend.setup(threads)
    os.environ[ENV_BACKEND] = backend.NAME  # the resolved name, never "auto"
    if threads is None:
        os.environ.pop(ENV_THREADS, None)  # children use their backend's default too
    else:
        os.environ[ENV_THREADS] = str(threads)
    _active = backend
    return backend


def _no_gpus(name: str, device: int) -> str:
    return (f"backend.device={device}: the {name} backend has no GPUs to pick from; drop backend.device "
            f"(backend.threads=N gives CPU campaigns side by side their own share of the cores)")


def _visible_var() -> str | None:
    """The variable that picks this torch build's GPUs (read without initializing a GPU)."""
    import torch

    if getattr(torch.version, "hip", None):
        return "HIP_VISIBLE_DEVICES"
    return "CUDA_VISIBLE_DEVICES" if torch.version.cuda else None


def _pin(device: int | None) -> str | None:
    """Make GPU `device` the only one this process and its children see (before torch
    initializes the GPU: the runtime reads the variable once); None: undo a pin this
    process made. Returns the variable it set."""
    var = _visible_var()
    if var is None:
        return None
    if device is None:
        if var in _unpinned:  # an earlier job of this process pinned a GPU: see them all again
            before = _unpinned.pop(var)
            if before is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = before
        return var
    before = _unpinned.get(var, os.environ.get(var))
    listed = [d.strip() for d in before.split(",") if d.strip()] if before is not None else None
    if listed is not None and not 0 <= device < len(listed):
        raise ValueError(f"backend.device={device}: only {len(listed)} GPU(s) are visible to this process "
                         f"({var}={before}): pick an index from 0 to {len(listed) - 1}")
    value = listed[device] if listed is not None else str(device)
    import torch

    if torch.cuda.is_initialized() and os.environ.get(var) != value:
        raise RuntimeError(f"backend.device={device}: this process already uses another GPU ({var}="
                           f"{os.environ.get(var)}); run each pinned campaign in a process of its own "
                           f"(hydra/launcher=joblib or submitit_local)")
    _unpinned.setdefault(var, os.environ.get(var))
    os.environ[var] = value
    if var == "CUDA_VISIBLE_DEVICES":  # GPU K is nvidia-smi's K (CUDA's own order puts the fastest first)
        os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    return var


def _threads_from_env() -> int | None:
    text = os.environ.get(ENV_THREADS, "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{ENV_THREADS}={text!r} is not an integer") from None


def current() -> ModuleType:
    """The active backend; activates it from the environment on first use."""
    if _active is None:
        return activate(os.environ.get(ENV_BACKEND, "auto"), _threads_from_env())
    return _active


def _reset() -> None:
    """Forget the active backend (tests; a process that must re-read its env)."""
    global _active
    _active = None


def attention(q, k, v, window: int | None = None):
    """Causal self-attention over (B, H, T, D) tensors on the active backend, with an
    optional sliding window (backends/attention.py); returns (B, H, T, D)."""
    return _attention.attention(q, k, v, window, active=current)

__all__ = ["NAMES", "ENV_BACKEND", "ENV_THREADS", "get", "activate", "current", "attention"]
