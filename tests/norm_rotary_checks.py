"""Checks of the Triton RMSNorm and rotary kernels against kernels.reference, run under
Triton's CPU interpreter by tests/test_kernel_norm_rotary.py.

The interpreter must be on before the kernels are decorated, that is before kernels.rmsnorm
and kernels.rotary are imported; a pytest process may already have imported them without
it. So these checks run in a child process (`python -m tests.norm_rotary_checks` from the
repository root, TRITON_INTERPRET=1), which prints one line, RESULT followed by a JSON
object {check name: "ok" or what went wrong}; the test module asserts each entry.

Importing this module imports torch only: the test module reads CHECKS to name its tests.
"""
import json
import os
import traceback

import torch

# The kernel modules and the reference, imported by main() once the interpreter is on.
rn = ro = rq = ref = None
CHECKS = {}
TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 4e-3}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def check(fn):
    CHECKS[fn.__name__] = fn
    return fn


def close(what, got, want, tol):
    """got == want within tol of want's largest magnitude; NaN and inf in the same places."""
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    got, want = got.float(), want.float()
    assert torch.equal(got.isnan(), want.isnan()), f"{what}: NaN in other places than the reference's"
    assert torch.equal(got.isinf(), want.isinf()) and torch.equal(got[got.isinf()], want[want.isinf()]), \
        f"{what}: inf in other places than the reference's"
    finite = want.isfinite()
    if not finite.any():
        return
    g, w = got[finite], want[finite]
    scale = w.abs().max().clamp_min(1e-12)
    err = ((g - w).abs().max() / scale).item()
    assert err <= tol, f"{what}: max error {err:.2e} of max |reference| {scale.item():.2e} > {tol:.0e}"


def grads(fn, inputs, dy):
    """fn(*inputs) and the gradients of <fn(*inputs), dy> w.r.t. each input needing one."""
    inputs = [t.detach().clone().requires_grad_(t.requires_grad) if t is not None else None for t in inputs]
    y = fn(*inputs)
    y.backward(dy)
    return [y.detach()] + [t.grad for t in inputs if t is not None and t.requires_grad]


def compare(what, fast, slow, inputs, dy, tol):
    for name, g, w in zip(("y", "dx", "dw"), grads(fast, inputs, dy), grads(slow, inputs, dy)):
        close(f"{what} {name}", g, w, tol)


# ---- RMSNorm ------------------------------------------------------------------------------------

def _norm_case(shape, dtype, weighted, what):
    x = torch.randn(shape, dtype=dtype, requires_grad=True)
    w = (1 + 0.5 * torch.randn(shape[-1])).to(dtype).requires_grad_() if weighted else None
    dy = torch.randn(shape, dtype=dtype)
    compare(what, lambda a, b: rn.rms_norm(a, 1e-6, b), lambda a, b: ref.rms_norm(a, 1e-6, b),
            [x, w], dy, TOL[dtype])


@check
def rms_norm_odd_widths():
    """1023 rows, C = 96 and 200 (not powers of two), each dtype, with and without weight."""
    for dname, dtype in DTYPES.items():
        for cols in (96, 200):
            for weighted in (False, True):
                _norm_case((1023, cols), dtype, weighted, f"{dname} C={cols} weight={weighted}")


@check
def rms_norm_leading_shapes():
    """(B, T, C) activations and (B, T, H, D) heads; a single row; no rows at all."""
    for shape in ((3, 37, 200), (2, 37, 3, 24), (1, 96)):
        _norm_case(shape, torch.float32, True, f"shape {shape}")
    empty = torch.randn(0, 4, 96)
    assert rn.rms_norm(empty).shape == empty.shape


@check
def rms_norm_strided():
    """A slice of a wider tensor (row stride != C), a transpose (column stride != 1), and
    the stride-0 gradient that .sum() sends back. The views are taken inside the function,
    so the gradient flows back through them into the base tensor."""
    base = torch.randn(5, 37, 300, requires_grad=True)
    for what, view in (("slice", lambda t: t[..., 50:250]), ("transpose", lambda t: t[..., :96].transpose(0, 1))):
        w = torch.randn(view(base).shape[-1], requires_grad=True)
        compare(what, lambda a, b: rn.rms_norm(view(a), 1e-6, b), lambda a, b: ref.rms_norm(view(a), 1e-6, b),
                [base, w], torch.randn(view(base).shape), TOL[torch.float32])
    x = torch.randn(64, 200, requires_grad=True)
    rn.rms_norm(x).sum().backward()
    got = x.grad
    x.grad = None
    ref.rms_norm(x).sum().backward()
    close("sum() backward", got, x.grad, TOL[torch.float32])


@check
def rms_norm_mixed_weight_dtype():
    """An fp32 weight on bf16 activations: the output in x's dtype, dw in the weight's."""
    x = torch.randn(300, 200, dtype=torch.bfloat16, requires_grad=True)
    w = torch.randn(200, requires_grad=True)
    compare("bf16 x fp32 w", lambda a, b: rn.rms_norm(a, 1e-6, b), lambda a, b: ref.rms_norm(a, 1e-6, b),
            [x, w], torch.randn(300, 200, dtype=torch.bfloat16), TOL[torch.bfloat16])


@check
def rms_norm_nan_inf():
    """A NaN poisons its own row only, an inf row gives the reference's NaN/0 pattern; the
    gradients follow the reference too (dw is NaN wherever the reference's is)."""
    x = torch.randn(300, 96)
    x[7, 3] = float("nan")
    x[200, 5] = float("inf")
    x[201, 0] = 1e30  # finite, but its square overflows fp32 as in the reference
    w = torch.randn(96)
    for weight in (None, w):
        close("forward", rn.rms_norm(x, 1e-6, weight), ref.rms_norm(x, 1e-6, weight), TOL[torch.float32])
    y = rn.rms_norm(x)
    assert y[7].isnan().all() and y[:7].isfinite().all() and y[8:200].isfinite().all()
    for weight in (None, w.requires_grad_()):
        compare(f"backward weight={weight is not None}", lambda a, b: rn.rms_norm(a, 1e-6, b),
                lambda a, b: ref.rms_norm(a, 1e-6, b), [x.requires_grad_(), weight], torch.randn(300, 96),
                TOL[torch.float32])


@check
def rms_norm_stale_output():
    """A second call of the same shape gets its own answer, whatever the allocator reuses."""
    a, b = torch.randn(1023, 200), torch.randn(1023, 200) * 3
    rn.rms_norm(a)
    close("second call", rn.rms_norm(b), ref.rms_norm(b), TOL[torch.float32])
    del a
    close("after free", rn.rms_norm(b + 1), ref.rms_norm(b + 1), TOL[torch.float32])


@check
def rms_norm_rejects_bad_weight():
    try:
        rn.rms_norm(torch.randn(4, 96), weight=torch.randn(95))
    except ValueError:
        return
    raise AssertionError("a weight of the wrong width was accepted")


# ---- Rotary -------------------------------------------------------------------------------------

def _tables(seq_len, half, dtype, extra=0):
    angle = torch.randn(1, seq_len + extra, 1, half) * 3
    return angle.cos().to(dtype)[:, :seq_len], angle.sin().to(dtype)[:, :seq_len]


@check
def rotary_odd_shapes():
    """T=37, H=3, D=24 (D/2 = 12, not a power of two), each dtype; also T=1 and D=2."""
    for dname, dtype in DTYPES.items():
        for shape in ((2, 37, 3, 24), (3, 1, 2, 2)):
            cos, sin = _tables(shape[1], shape[-1] // 2, dtype, extra=5)  # a slice of a longer table
            x = torch.randn(shape, dtype=dtype, requires_grad=True)
            compare(f"{dname} {shape}", lambda a: ro.apply_rotary(a, cos, sin),
                    lambda a: ref.apply_rotary(a, cos, sin), [x], torch.randn(shape, dtype=dtype), TOL[dtype])


@check
def rotary_strided():
    """q as a slice of a fused (B, T, 3, H, D) projection, a slice of wider heads (head
    stride != D), a transposed x (stride along D != 1), and the stride-0 gradient of .sum()."""
    cos, sin = _tables(37, 12, torch.float32)
    qkv = torch.randn(2, 37, 3, 3, 24, requires_grad=True)
    transposed = torch.randn(2, 37, 24, 3, requires_grad=True)
    padded = torch.randn(2, 37, 3, 32, requires_grad=True)
    for what, base, view in (("qkv slice", qkv, lambda t: t[:, :, 0]),
                             ("head slice", padded, lambda t: t[..., 4:28]),
                             ("transpose", transposed, lambda t: t.transpose(-1, -2))):
        compare(what, lambda a: ro.apply_rotary(view(a), cos, sin), lambda a: ref.apply_rotary(view(a), cos, sin),
                [base], torch.randn(2, 37, 3, 24), 1e-5)
    x = torch.randn(2, 37, 3, 24, requires_grad=True)
    ro.apply_rotary(x, cos, sin).sum().backward()
    got = x.grad
    x.grad = None
    ref.apply_rotary(x, cos, sin).sum().backward()
    close("sum() backward", got, x.grad, 1e-5)


@check
def rotary_nan_inf():
    """A NaN reaches only the two outputs of its pair, as in the reference; forward and
    backward match the reference's NaN and inf places."""
    cos, sin = _tables(37, 12, torch.float32)
    x = torch.randn(2, 37, 3, 24)
    x[1, 5, 2, 3] = float("nan")
    x[0, 9, 0, 20] = float("inf")
    y = ro.apply_rotary(x, cos, sin)
    assert y[1, 5, 2].isnan().sum() == 2 and y.isnan().sum() <= 4
    compare("nan/inf", lambda a: ro.apply_rotary(a, cos, sin), lambda a: ref.apply_rotary(a, cos, sin),
            [x.requires_grad_()], torch.randn(2, 37, 3, 24), 1e-5)


@check
def rotary_stale_output():
    cos, sin = _tables(37, 12, torch.float32)
    a, b = torch.randn(2, 37, 3, 24), torch.randn(2, 37, 3, 24) * 3
    ro.apply_rotary(a, cos, sin)
    close("second call", ro.apply_rotary(b, cos, sin), ref.apply_rotary(b, cos, sin), 1e-5)


@check
def rotary_refuses_table_gradients():
    cos, sin = _tables(37, 12, torch.float32)
    try:
        ro.apply_rotary(torch.randn(2, 37, 3, 24), cos.requires_grad_(), sin)
    except NotImplementedError:
        return
    raise AssertionError("cos requiring a gradient was accepted (it would get none)")


# ---- Rotary + RMSNorm, fused ----------------------------------------------------------------

def _unfused(a, cos, sin):
    return ref.rms_norm(ref.apply_rotary(a, cos, sin))


@check
def rotary_rms_norm_odd_shapes():
    """Against the reference pair and against the two Triton kernels one after the other."""
    for dname, dtype in DTYPES.items():
        for shape in ((2, 37, 3, 24), (3, 1, 2, 2), (1, 5, 2, 200)):
            cos, sin = _tables(shape[1], shape[-1] // 2, dtype, extra=5)
            x = torch.randn(shape, dtype=dtype, requires_grad=True)
            dy = torch.randn(shape, dtype=dtype)
            fused = lambda a: rq.rotary_rms_norm(a, cos, sin)  # noqa: E731
            compare(f"{dname} {shape}", fused, lambda a: _unfused(a, cos, sin), [x], dy, TOL[dtype])
            compare(f"{dname} {shape} vs kernels", fused,
                    lambda a: rn.rms_norm(ro.apply_rotary(a, cos, sin)), [x], dy, TOL[dtype])


@check
def rotary_rms_norm_strided():
    cos, sin = _tables(37, 12, torch.float32)
    qkv = torch.randn(2, 37, 3, 3, 24, requires_grad=True)
    padded = torch.randn(2, 37, 3, 32, requires_grad=True)
    transposed = torch.randn(2, 37, 24, 3, requires_grad=True)
    for what, base, view in (("qkv slice", qkv, lambda t: t[:, :, 0]), ("head slice", padded, lambda t: t[..., 4:28]),
                             ("transpose", transposed, lambda t: t.transpose(-1, -2))):
        compare(what, lambda a: rq.rotary_rms_norm(view(a), cos, sin), lambda a: _unfused(view(a), cos, sin),
                [base], torch.randn(2, 37, 3, 24), 1e-5)
    # A gradient with unit stride along D but its own head stride, read in place.
    x = torch.randn(2, 37, 3, 24, requires_grad=True)
    dy = torch.randn(2, 37, 3, 32)[..., 4:28]
    compare("strided dy", lambda a: rq.rotary_rms_norm(a, cos, sin), lambda a: _unfused(a, cos, sin), [x], dy, 1e-5)
    rq.rotary_rms_norm(x, cos, sin).sum().backward()
    got = x.grad
    x.grad = None
    _unfused(x, cos, sin).sum().backward()
    close("sum() backward", got, x.grad, 1e-5)


@check
def rotary_rms_norm_nan_and_stale():
    """A NaN poisons its own head only; a second call of the same shape gets its own answer."""
    cos, sin = _tables(37, 12, torch.float32)
    x = torch.randn(2, 37, 3, 24)
    x[1, 5, 2, 3] = float("nan")
    x[0, 9, 0, 20] = float("inf")
    y = rq.rotary_rms_norm(x, cos, sin)
    assert y[1, 5, 2].isnan().all() and y.isnan().flatten(0, 2).any(-1).sum() == 2
    compare("nan/inf", lambda a: rq.rotary_rms_norm(a, cos, sin), lambda a: _unfused(a, cos, sin),
            [x.requires_grad_()], torch.randn(2, 37, 3, 24), 1e-5)
    b = torch.randn(2, 37, 3, 24) * 3
    close("second call", rq.rotary_rms_norm(b, cos, sin), _unfused(b, cos, sin), 1e-5)


@check
def package_functions_survive_the_imports():
    """Importing the kernel modules leaves kernels.rms_norm / kernels.apply_rotary the
    dispatch functions (a submodule named like them would replace them on import)."""
    import kernels
    from kernels import registry
    assert kernels.rms_norm is registry.rms_norm and kernels.apply_rotary is registry.apply_rotary


def main() -> None:
    assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"
    torch.manual_seed(0)
    global rn, ro, rq, ref
    from kernels import reference as ref, rmsnorm as rn, rotary as ro, rotary_norm as rq
    results = {"kernels_file": rn.__file__}
    for name, fn in CHECKS.items():
        try:
            fn()
            results[name] = "ok"
        except Exception as e:  # noqa: BLE001 - every failure is reported, by name
            results[name] = f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=-3)}"
    print("RESULT " + json.dumps(results))


if __name__ == "__main__":
    main()
