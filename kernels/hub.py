"""`from kernels import get_kernel`: upstream's FlashAttention line, answered offline.

Upstream's train.py starts with

    from kernels import get_kernel                 # the Hugging Face `kernels` package
    fa3 = get_kernel("varunneal/flash-attention-3").flash_attn_interface
    y = fa3.flash_attn_func(q, k, v, causal=True, window_size=(left, 0))

This project's `kernels` package has the same name, so that import finds this module.
For a FlashAttention repository (any id naming flash-attn / flash-attention) it returns
an object whose `flash_attn_func` (also under `.flash_attn_interface`) has FlashAttention's
contract and runs on this project's attention (`backends.attention`): FlashAttention 3
where the backend offers it (Hopper with `flash_attn_interface` installed), torch's SDPA
everywhere else, with the same window semantics. Any other repository is an error: an
experiment runs offline in a sandbox, so nothing can be downloaded; put such a kernel's
code in train.py (or, in a kernels campaign, in `kernels/`).
"""
from __future__ import annotations

import math
import types

_FLASH_NAMES = ("flash-attn", "flash_attn", "flash-attention", "flash_attention", "flashattention")


class KernelUnavailable(RuntimeError):
    pass


def flash_attn_func(q, k, v, softmax_scale=None, causal=False, window_size=(-1, -1), **ignored):
    """FlashAttention's `flash_attn_func` on (B, T, H, D) tensors; returns (B, T, H, D).

    Query i sees keys i - left .. i (`window_size=(left, right)`, left = -1: no limit); a
    causal call never sees later keys, whatever `right` says, as in FlashAttention. k and v
    may have fewer heads than q (grouped-query attention). Extra keyword arguments of other
    FlashAttention releases (dropout_p=0, deterministic, ...) are accepted and ignored.
    """
    import backends

    if not causal:
        raise NotImplementedError("flash_attn_func(causal=False): only causal attention is supported here "
                                  "(a language model's scored positions may not see later tokens)")
    if ignored.get("dropout_p"):
        raise NotImplementedError("flash_attn_func(dropout_p>0) is not supported")
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"flash_attn_func expects (batch, seq, heads, head_dim) tensors; got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    left = int(window_size[0]) if window_size is not None else -1
    window = None if left < 0 else left + 1  # FlashAttention's left excludes the query itself
    if softmax_scale is not None and not math.isclose(softmax_scale, q.size(-1) ** -0.5, rel_tol=1e-6):
        q = q * (softmax_scale * math.sqrt(q.size(-1)))  # SDPA applies 1/sqrt(D); scale q to match
    heads, kv_heads = q.size(2), k.size(2)
    if kv_heads != heads:
        if heads % kv_heads:
            raise ValueError(f"flash_attn_func: {heads} query heads is not a multiple of {kv_heads} key heads")
        k, v = (t.repeat_interleave(heads // kv_heads, dim=2) for t in (k, v))
    y = backends.attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), window)
    return y.transpose(1, 2)


def get_kernel(repo_id: str, revision: str | None = None, version=None, **kwargs) -> types.ModuleType:
    """The Hugging Face `get_kernel` call upstream makes, for FlashAttention repositories."""
    if not any(n in str(repo_id).lower() for n in _FLASH_NAMES):
        raise KernelUnavailable(
            f"get_kernel({repo_id!r}): autoresearch's `kernels` package stands in for Hugging Face's only for "
            f"FlashAttention repositories; experiments run offline in a sandbox, so no kernel can be downloaded. "
            f"Put this kernel's code in train.py (or in kernels/ in a scope=kernels campaign).")
    interface = types.ModuleType("flash_attn_interface", "FlashAttention's interface, on backends.attention")
    interface.flash_attn_func = flash_attn_func
    kernel = types.ModuleType(str(repo_id), "FlashAttention, served by autoresearch's kernels.hub")
    kernel.flash_attn_func = flash_attn_func
    kernel.flash_attn_interface = interface
    return kernel
