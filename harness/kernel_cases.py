"""What `autoresearch kernels check` feeds each kernel, and how close it must come.

    for case in kernel_cases.cases(seed=0, only=None): ...
    inputs = case.inputs(seed)           # the tensors of one call, grad_out included
    out, grads = case.reference(inputs)  # the definition of correct (kernels/reference.py)

Every case is drawn from a fixed seed, at odd shapes (1023 rows, widths that are not
powers of two, a vocabulary of 1000), in each dtype the model trains in, with that
dtype's own tolerance; some cases plant NaN and inf, which must come out where the
reference puts them. Shapes are small: on a CPU the kernels run in Triton's interpreter,
one program instance after another.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from kernels import reference

# (atol, rtol) by dtype, for outputs and gradients compared in fp32. bf16 holds ~3
# significant digits (and Triton's interpreter truncates where torch rounds: one ulp).
TOLERANCE = {torch.float32: (2e-5, 2e-5), torch.bfloat16: (3e-2, 3e-2), torch.float16: (5e-3, 5e-3)}


@dataclass
class Case:
    kernel: str  # rms_norm, apply_rotary, linear_cross_entropy
    label: str  # shape and dtype, for the report
    dtype: torch.dtype
    make: Callable[[torch.Generator], dict]  # generator -> named tensors (grad_out last)
    args: Callable[[dict], tuple]  # named tensors -> the kernel's positional arguments
    grads: tuple[str, ...]  # inputs whose gradients are compared
    tolerance: tuple[float, float] = field(default=(0.0, 0.0))

    def inputs(self, seed: int) -> dict:
        g = torch.Generator().manual_seed(seed)
        return self.make(g)

    def call(self, fn: Callable, inputs: dict):
        return fn(*self.args(inputs))

    def reference(self, inputs: dict) -> tuple[torch.Tensor, dict]:
        """The reference's output and gradients (fp32 upcasts of the inputs' dtype math)."""
        leaves = {k: (v.detach().clone().requires_grad_(k in self.grads) if torch.is_tensor(v) else v)
                  for k, v in inputs.items()}
        out = self.call(getattr(reference, self.kernel), leaves)
        out.backward(leaves["grad_out"])
        return out.detach(), {k: leaves[k].grad for k in self.grads}


def _randn(g, shape, dtype, scale=1.0):
    return (torch.randn(shape, generator=g) * scale).to(dtype)


def _plant(x: torch.Tensor) -> torch.Tensor:
    """A NaN and an inf in two rows: each must stay in its own row, as the reference's."""
    x = x.clone()
    x.view(-1, x.shape[-1])[3, 1] = float("nan")
    x.view(-1, x.shape[-1])[7, 0] = float("inf")
    return x


def _norm_case(rows: int, width: int, dtype, weighted: bool, planted: bool = False) -> Case:
    def make(g):
        x = _randn(g, (rows, width), dtype)
        d = {"x": _plant(x) if planted else x,
             "weight": (1 + 0.1 * torch.randn(width, generator=g)).to(dtype) if weighted else None}
        d["grad_out"] = _randn(g, (rows, width), dtype)
        return d

    grads = ("x", "weight") if weighted else ("x",)
    label = f"{rows}x{width} {_name(dtype)}{' weight' if weighted else ''}{' nan/inf' if planted else ''}"
    return Case("rms_norm", label, dtype, make, lambda d: (d["x"], 1e-6, d["weight"]), grads, TOLERANCE[dtype])


def rotary_tables(t: int, d: int, dtype, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape (1, t, 1, d // 2), as the model builds them (base 10000)."""
    inv = 1.0 / 10000 ** (torch.arange(0, d, 2, dtype=torch.float32, device=device) / d)
    freqs = torch.outer(torch.arange(t, dtype=torch.float32, device=device), inv)
    return freqs.cos()[None, :, None, :].to(dtype), freqs.sin()[None, :, None, :].to(dtype)


def _rotary_case(b: int, t: int, h: int, d: int, dtype) -> Case:
    def make(g):
        cos, sin = rotary_tables(t, d, dtype)
        return {"x": _randn(g, (b, t, h, d), dtype), "cos": cos, "sin": sin,
                "grad_out": _randn(g, (b, t, h, d), dtype)}

    return Case("apply_rotary", f"{b}x{t}x{h}x{d} {_name(dtype)}", dtype, make,
                lambda v: (v["x"], v["cos"], v["sin"]), ("x",), TOLERANCE[dtype])


def _lce_case(rows: int, width: int, vocab: int, dtype, softcap: float | None, ignored: float = 0.1) -> Case:
    def make(g):
        targets = torch.randint(0, vocab, (rows,), generator=g)
        targets[torch.rand(rows, generator=g) < ignored] = -1
        return {"hidden": _randn(g, (rows, width), dtype), "weight": _randn(g, (vocab, width), dtype,
                                                                            1 / math.sqrt(width)),
                "targets": targets, "grad_out": torch.tensor(1.7)}

    cap = f" softcap {softcap:g}" if softcap else ""
    return Case("linear_cross_entropy", f"{rows}x{width} V={vocab} {_name(dtype)}{cap}", dtype, make,
                lambda v: (v["hidden"], v["weight"], v["targets"], softcap, -1), ("hidden", "weight"),
                TOLERANCE[dtype])


def _name(dtype) -> str:
    return str(dtype).removeprefix("torch.")


def cases(only: list[str] | None = None) -> list[Case]:
    """Every case, or those of the kernels in `only`."""
    all_cases = [
        _norm_case(1023, 96, torch.float32, weighted=False),
        _norm_case(1023, 200, torch.bfloat16, weighted=False),
        _norm_case(257, 96, torch.float32, weighted=True),
        _norm_case(64, 96, torch.float32, weighted=False, planted=True),
        _rotary_case(2, 37, 3, 24, torch.float32),
        _rotary_case(2, 37, 3, 24, torch.bfloat16),
        _lce_case(1023, 96, 1000, torch.float32, softcap=15.0),
        _lce_case(255, 64, 1000, torch.bfloat16, softcap=15.0),
        _lce_case(130, 32, 333, torch.float32, softcap=None),
    ]
    return [c for c in all_cases if not only or c.kernel in only]
