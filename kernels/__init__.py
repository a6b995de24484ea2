"""Kernels on the val_bpb critical path, behind one dispatch (docs/architecture.md, "Where to add").

Each kernel has a pure-torch reference, which is also the runtime fallback. Triton
implementations plug into `registry.py`; until one is registered for a kernel, every
mode resolves to the reference.

Mode (env `AUTORESEARCH_KERNELS`, read at call time so the harness can force it in a
child process): `auto` (Triton on CUDA/ROCm when registered and usable, else the
reference, quietly), `reference` (always the reference; the evaluator uses this),
`triton` (Triton or a loud error).

`get_kernel` answers upstream's `from kernels import get_kernel` (the Hugging Face
package's name) for FlashAttention; see kernels/hub.py.
"""
from kernels.hub import get_kernel
from kernels.registry import ENV_MODE, MODES, apply_rotary, implementation, mode, rms_norm

__all__ = ["ENV_MODE", "MODES", "apply_rotary", "get_kernel", "implementation", "mode", "rms_norm"]
