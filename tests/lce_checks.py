"""The fused linear cross-entropy against its reference, under Triton's CPU interpreter.

Run as a script (`python tests/lce_checks.py [case ...]`): it sets TRITON_INTERPRET=1 before
the kernel module is imported (the interpreter is chosen when a kernel is decorated, so a
process that already imported the module compiled cannot switch), runs the cases and prints
one JSON object, case -> error message or null. tests/test_kernel_lce.py runs it once in a
subprocess and reports each case as its own test.

Shapes are small and odd on purpose: N = 511 rows (two chunks of 300, the second partial), V = 1000 columns (not a power of two,
not a multiple of the block), C = 96; the interpreter runs programs one after another.
"""
import json
import math
import os
import sys
import warnings
from pathlib import Path

import torch

N, V, C = 511, 1000, 96
SOFTCAP = 15.0
# Several chunks (the last one partial), several column blocks (the last one masked), and a
# row count that is not a multiple of the rows per program.
SMALL = dict(chunk_rows=300, settings=dict(BLOCK_ROWS=16, BLOCK_V=256, num_warps=1))
FP32_TOL = 1e-5
# bf16: the interpreter truncates fp32 -> bf16 where torch rounds to nearest (one bf16 ulp,
# 2**-8, on each stored gradient), and the two sides sum bf16 products in different orders.
BF16_TOL = 2e-2

ref = lce = None  # the two implementations, bound in main() once the interpreter is on


def _data(n=N, v=V, c=C, dtype=torch.float32, wdtype=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, c, generator=g).to(dtype)
    # Scaled so the softcap bends the larger logits (|z| reaches the cap's knee) without
    # saturating them all.
    weight = (torch.randn(v, c, generator=g) * 0.3).to(wdtype or dtype)
    targets = torch.randint(0, v, (n,), generator=g)
    targets[::7] = -1
    return hidden, weight, targets


def _run(fn, hidden, weight, targets, softcap=SOFTCAP, scale=1.0, **kw):
    """Loss and the gradients w.r.t. hidden and weight of scale * fn(...)."""
    h = hidden.clone().requires_grad_()
    w = weight.clone().requires_grad_()
    loss = fn(h, w, targets, softcap, **kw)
    (loss * scale).backward()
    return loss.detach(), h.grad, w.grad


def _rel(a, b):
    """max |a - b| / max |b| over the entries where b is finite."""
    a, b = a.double(), b.double()
    ok = torch.isfinite(b)
    if not ok.any():
        return 0.0
    return ((a - b)[ok].abs().max() / b[ok].abs().max().clamp(min=1e-30)).item()


def _compare(got, want, tol, names=("loss", "grad_hidden", "grad_weight")):
    """Same dtypes, same nan positions, and finite entries within tol (relative to the largest)."""
    for name, a, b in zip(names, got, want):
        if a.dtype != b.dtype or a.shape != b.shape:
            raise AssertionError(f"{name}: {a.dtype} {tuple(a.shape)} vs reference {b.dtype} {tuple(b.shape)}")
        if not torch.equal(torch.isnan(a), torch.isnan(b)):
            raise AssertionError(f"{name}: nan at {int(torch.isnan(a).sum())} entries, "
                                 f"reference at {int(torch.isnan(b).sum())}")
        err = _rel(a, b)
        if not err <= tol:
            raise AssertionError(f"{name}: relative error {err:.3g} > {tol:g}")


def _both(*args, tol=FP32_TOL, kw=None, **run_kw):
    _compare(_run(lce, *args, **run_kw, **(kw if kw is not None else SMALL)), _run(ref, *args, **run_kw), tol)


def case_fp32_softcap():
    _both(*_data())


def case_fp32_default_chunking():
    # The module's own chunk size and launch settings (one chunk here, BLOCK_V = 1024).
    _both(*_data(seed=1), kw={})


def case_fp32_no_softcap():
    for cap in (None, 0.0):
        _both(*_data(seed=2), softcap=cap)


def case_bf16_inputs():
    _both(*_data(dtype=torch.bfloat16), tol=BF16_TOL)


def case_bf16_hidden_fp32_weight():
    # The model's case: activations in bf16, an fp32 master weight (grad comes back fp32).
    _both(*_data(dtype=torch.bfloat16, wdtype=torch.float32), tol=BF16_TOL)


def case_autocast_bf16():
    # fp32 tensors under autocast: both sides run the matmul in bf16, as nn.Linear would.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _both(*_data(seed=3), tol=BF16_TOL)


def case_all_targets_ignored():
    hidden, weight, targets = _data(n=37)
    targets[:] = -1
    got = _run(lce, hidden, weight, targets, **SMALL)
    _compare(got, _run(ref, hidden, weight, targets), FP32_TOL)
    if not math.isnan(got[0].item()) or got[1].abs().max() != 0 or got[2].abs().max() != 0:
        raise AssertionError(f"all ignored: expected a nan loss and zero gradients, got loss {got[0].item()}")


def case_nan_in_a_scored_row():
    hidden, weight, targets = _data()
    hidden[5, 3] = float("nan")
    targets[5] = 2
    _both(hidden, weight, targets)  # nan loss, nan row 5 of grad_hidden, nan grad_weight


def case_nan_in_an_ignored_row():
    hidden, weight, targets = _data()
    hidden[14, 0] = float("nan")  # row 14 is ignored (every 7th): finite loss, nan gradients
    _both(hidden, weight, targets)


def case_grad_output_scaling():
    _both(*_data(seed=4), scale=3.5)


def case_leading_dims():
    hidden, weight, targets = _data(n=4 * 33, seed=5)
    _both(hidden.reshape(4, 33, C), weight, targets.reshape(4, 33))


def case_no_grad():
    hidden, weight, targets = _data(seed=6)
    with torch.no_grad():
        got = lce(hidden.requires_grad_(), weight, targets, SOFTCAP, **SMALL)
        want = ref(hidden, weight, targets, SOFTCAP)
    if got.requires_grad:
        raise AssertionError("a loss computed under no_grad requires grad")
    _compare((got,), (want,), FP32_TOL, names=("loss",))


def case_weight_grad_only():
    hidden, weight, targets = _data(seed=7)
    got, want = [], []
    for fn, out in ((lce, got), (ref, want)):
        w = weight.clone().requires_grad_()
        loss = fn(hidden, w, targets, SOFTCAP, **(SMALL if fn is lce else {}))
        loss.backward()
        out += [loss.detach(), w.grad]
    _compare(got, want, FP32_TOL, names=("loss", "grad_weight"))


def case_tiny_chunks_and_vocab():
    # One row per chunk but the last, a vocab narrower than a single block.
    hidden, weight, targets = _data(n=5, v=3, c=4, seed=8)
    _both(hidden, weight, targets, kw=dict(chunk_rows=2))


def case_chunk_and_launch_sizing():
    from kernels import linear_ce as mod
    # The benchmark shape: 262144 tokens, V = 8192. fp32 chunks of 8192 rows = 256 MiB.
    assert mod.chunk_rows_for(262144, 8192, 4) == 8192
    assert mod.chunk_rows_for(262144, 8192, 2) == 16384
    assert mod.chunk_rows_for(10, 8192, 4) == 10 and mod.chunk_rows_for(0, 8192, 4) == 1
    assert mod.chunk_rows_for(5, 10**9, 4) == 1  # one row even when a row alone exceeds the budget
    hip = torch.version.hip
    try:
        for torch.version.hip in (None, "6.2"):
            for v in (3, 1000, 8192, 50257):
                s = mod.launch_settings(v, torch.device("cuda"))
                assert s["num_warps"] <= 8 and s["BLOCK_V"] <= 4096, s
                assert s["BLOCK_V"] & (s["BLOCK_V"] - 1) == 0, s
    finally:
        torch.version.hip = hip


CASES = {name[len("case_"):]: fn for name, fn in sorted(globals().items()) if name.startswith("case_")}


def main(names):
    global ref, lce
    os.environ["TRITON_INTERPRET"] = "1"
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    warnings.simplefilter("ignore")  # numpy's overflow / invalid-value notes from interpreted kernels
    from kernels import linear_ce as mod
    from kernels import reference
    ref, lce = reference.linear_cross_entropy, mod.linear_cross_entropy
    torch.set_num_threads(2)
    results = {}
    for name in names or CASES:
        try:
            CASES[name]()
            results[name] = None
        except Exception as e:  # noqa: BLE001 - every failure becomes that case's message
            results[name] = f"{type(e).__name__}: {e}"
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1:])
