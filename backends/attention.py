"""Causal self-attention with an optional sliding window, on any backend.

Inputs are q, k, v of shape (B, H, T, D) (batch, heads, sequence, head dim),
all with the same H and T; the output has the same shape. Query t sees key t
and the keys before it; with a window w it sees only keys t-w+1 .. t (itself
and the previous w-1). The default path is torch's SDPA, which picks flash /
memory-efficient / math kernels per device. On Hopper with FlashAttention 3
installed (the backend's attention_impl() says "fa3") it calls FA3 instead.
Every path is causal: there is no branch that drops the mask.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

_LOW_PRECISION = (torch.bfloat16, torch.float16)  # FA3 has no fp32 kernels
_impl_by_backend: dict[str, str] = {}  # backend NAME -> "fa3" | "sdpa", asked once


@functools.lru_cache(maxsize=32)
def sliding_window_mask(T: int, window: int, device: torch.device) -> torch.Tensor:
    """(T, T) bool mask, True where query i may attend key j: i - window < j <= i.

    Cached per (T, window, device): built once, reused every step and layer.
    Callers must not modify it in place.
    """
    i = torch.arange(T, device=device).unsqueeze(1)  # (T, 1) query positions
    j = torch.arange(T, device=device).unsqueeze(0)  # (1, T) key positions
    return (j <= i) & (j > i - window)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              window: int | None = None, active=None) -> torch.Tensor:
    """Causal self-attention over (B, H, T, D) tensors; returns (B, H, T, D).
    `active`: returns the active backend (`backends.current`), asked only for CUDA
    tensors in bf16/fp16, where FA3 may run; callers use `backends.attention`, which
    passes it."""
    if q.dim() != 4 or k.shape != q.shape or v.shape[:-1] != q.shape[:-1]:
        raise ValueError(f"expected q, k, v as (B, H, T, D) with equal B, H, T; "
                         f"got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if window is not None and window < 1:
        raise ValueError(f"window must be >= 1 or None, got {window}")
    T = q.size(-2)
    if active is not None and _use_fa3(q, active):
        return _fa3(q, k, v, window)
    if window is None or window >= T:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    mask = sliding_window_mask(T, window, q.device)  # (T, T), broadcast over B, H
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def _use_fa3(q: torch.Tensor, active) -> bool:
    """FA3 only for CUDA tensors in bf16/fp16 on a backend that offers it.

    CPU/MPS tensors never ask the backend, so attention() has no side effects
    there (asking may activate the backend from the environment).
    """
    if not q.is_cuda or q.dtype not in _LOW_PRECISION:
        return False
    backend = active()
    if backend.NAME not in _impl_by_backend:
        _impl_by_backend[backend.NAME] = backend.attention_impl()
    return _impl_by_backend[backend.NAME] == "fa3"


def _fa3(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
         window: int | None) -> torch.Tensor:
    """FlashAttention 3: takes (B, T, H, D); window_size=(left, right) in keys."""
    from flash_attn_interface import flash_attn_func
    left = -1 if window is None else window - 1  # -1: unlimited look-back
    out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                          causal=True, window_size=(left, 0))
    if isinstance(out, tuple):  # some FA3 releases return (out, softmax_lse)
        out = out[0]
    return out.transpose(1, 2)  # (B, T, H, D) -> (B, H, T, D)
