"""Compiles the RMSNorm and rotary kernels for an NVIDIA and an AMD GPU, on a machine with
neither, as tests/test_kernel_norm_rotary.py's guard for the compiled path.

The interpreter runs a kernel's Python, not its compilation: a construct the compiler
rejects (a loop-carried value of the wrong type, an unsupported index) passes there and
fails only on a GPU. Triton compiles ahead of time for a named target with no device
present (its wheel carries ptxas and the AMD linker), so each kernel is compiled here at
the settings the launchers pick for the shapes train.py uses: C = 768 activations and
D = 128 heads, in bf16.

Run as `python -m tests.norm_rotary_compile` without TRITON_INTERPRET; prints RESULT and
a JSON object {"target kernel settings": "ok" or the error}.
"""
import inspect
import json
import os
import traceback

P, F = "*bf16", "*fp32"  # bf16 activations; rstd and the weight-gradient partials in fp32


def _jobs():
    from kernels import rmsnorm, rotary, rotary_norm
    norm = {"X": P, "W": P, "Y": P, "RSTD": F, "DY": P, "DX": P, "DW_PARTIAL": F, "eps": "fp32"}
    rot = {"X": P, "COS": P, "SIN": P, "Y": P, "RSTD": F, "DY": P, "DX": P, "eps": "fp32"}
    for weighted in (True, False):
        for fn in (rmsnorm._rms_norm_fwd, rmsnorm._rms_norm_bwd):
            yield fn, norm, 768, 1, {"HAS_WEIGHT": weighted}
    for inverse in (False, True):
        yield rotary._rotary, rot, 64, 2, {"INVERSE": inverse}
    for fn in (rotary_norm._rotary_norm_fwd, rotary_norm._rotary_norm_bwd):
        yield fn, rot, 64, 2, {}


def _compile(fn, types, cols, parts, flags, target):
    """Compile fn with the launchers' settings for rows `cols` wide (`parts` halves per row)."""
    import triton
    from triton.compiler import ASTSource

    from kernels import launch
    block_c = launch.block_cols(cols, fn.__name__)
    block_r = launch.block_rows(parts * block_c, 1 << 20)
    width = "BLOCK_COLS" if "BLOCK_COLS" in fn.arg_names else "BLOCK_HALF"
    constexprs = {**flags, "BLOCK_ROWS": block_r, width: block_c}
    # Every other argument is a pointer, the float eps, or an int (sizes, strides).
    signature = {a: "constexpr" if a in constexprs else types.get(a, "i32") for a in fn.arg_names}
    warps = launch.num_warps(parts * block_r * block_c, lanes=target.warp_size)
    triton.compile(ASTSource(fn, signature, constexprs), target=target, options={"num_warps": warps})
    return f"{constexprs} num_warps={warps}"


def main() -> None:
    assert os.environ.get("TRITON_INTERPRET") != "1", "run without TRITON_INTERPRET: this compiles"
    import triton.backends
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    # The ahead-of-time interface this uses (constexprs named in the signature) is Triton
    # 3.3's; an older Triton, or a build without a target's backend, skips rather than fails.
    old_api = "constexprs" not in inspect.signature(ASTSource.__init__).parameters
    results = {}
    for target, backend in ((GPUTarget("cuda", 90, 32), "nvidia"), (GPUTarget("hip", "gfx942", 64), "amd")):
        for fn, types, cols, parts, flags in _jobs():
            key = f"{target.backend} {fn.__name__} {flags}"
            if old_api or backend not in triton.backends.backends:
                results[key] = f"skip: Triton {triton.__version__} " + \
                    ("predates the constexprs interface" if old_api else f"has no {backend} backend")
                continue
            try:
                _compile(fn, types, cols, parts, flags, target)
                results[key] = "ok"
            except Exception as e:  # noqa: BLE001 - every failure is reported, by name
                results[key] = f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=-3)}"
    print("RESULT " + json.dumps(results))


if __name__ == "__main__":
    main()
