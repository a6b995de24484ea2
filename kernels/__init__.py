"""Kernels on the val_bpb critical path, behind one dispatch (docs/architecture.md, "Kernels").

Each kernel is one set: the pure-torch reference in `reference.py` (the definition of
correct, and the fallback), the Triton implementation in a module of its own
(`rmsnorm.py`, `rotary.py`, `linear_ce.py`: kernels, launcher and
`torch.autograd.Function`), and its entry in `registry.py`'s dispatch. train.py calls
them through this package:

    kernels.rms_norm(x, eps=1e-6, weight=None)
    kernels.apply_rotary(x, cos, sin)
    kernels.linear_cross_entropy(hidden, lm_head_weight, targets, softcap, ignore_index=-1)

Mode (env `AUTORESEARCH_KERNELS`, config `kernels.mode=`): `auto` (Triton on CUDA/ROCm,
the reference elsewhere or when Triton fails, with one warning), `reference` (the
evaluation always uses it), `triton` (Triton or a loud error). See registry.py.

`get_kernel` answers upstream's `from kernels import get_kernel` (the Hugging Face
package's name) for FlashAttention; see kernels/hub.py.
"""
from kernels.hub import get_kernel
from kernels.registry import (ENV_MODE, MODES, NAMES, apply_rotary, implementation, linear_cross_entropy, mode,
                              rms_norm)

__all__ = ["ENV_MODE", "MODES", "NAMES", "apply_rotary", "get_kernel", "implementation", "linear_cross_entropy",
           "mode", "rms_norm"]
