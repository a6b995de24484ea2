"""The child of `autoresearch kernels check`: runs each kernel's Triton implementation on the
inputs the harness drew, and hands back what came out; the harness compares.

    python -m harness.kernel_probe IN.pt OUT.pt     (AUTORESEARCH_KERNELS=triton; on a CPU,
                                                     TRITON_INTERPRET=1 before anything imports)

IN.pt holds, per case, three draws (a, b, c) of the same shapes. For each case, in order:
1. the kernel runs on a (forward only) and its output is dropped: a later output may land
   in the freed buffer, so a kernel that skips elements shows a's stale values;
2. it runs on b (forward only): the first output compared;
3. a's tensors are overwritten in place with c's values (same tensors, same storage) and it
   runs again, forward and backward: a kernel that caches by tensor identity or address
   returns a's answer, not c's;
4. the inputs as they are afterwards go back too: a kernel must not modify its inputs.
While the kernel runs on b, the torch operators it calls are recorded (the Triton
launches are not torch operators): computing the result with torch (a fallback to the
reference) shows up there. This process runs the candidate's code, so what it reports
is a witness, not a judge: the comparisons are the harness's, against references it
computes itself, and nothing here decides a campaign's metric.
"""
from __future__ import annotations

import sys

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# aten operators a launcher may call: allocation, views, copies and casts, and the GEMMs a
# fused kernel leaves to the vendor BLAS; anything else computes what the kernel should.
ALLOWED_OPS = {
    "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "zeros", "zeros_like", "new_zeros",
    "full", "full_like", "new_full", "ones", "ones_like", "fill", "fill_", "zero_", "copy_", "clone", "contiguous",
    "detach", "alias", "lift_fresh", "view", "_unsafe_view", "reshape", "as_strided", "t", "transpose", "permute",
    "expand", "squeeze", "unsqueeze", "flatten", "select", "slice", "narrow", "split", "split_with_sizes",
    "unbind", "_to_copy", "to", "_reshape_alias", "mm", "addmm", "bmm", "matmul", "baddbmm", "set_", "resize_",
    "mul", "mul_", "div", "div_", "add", "add_", "sub", "sub_", "sum", "arange", "scalar_tensor", "item",
    "_local_scalar_dense", "is_nonzero", "eq", "ne", "count_nonzero", "clamp", "clamp_min", "reciprocal",
}


class OpRecorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(func.__name__.split(".")[0])
        return func(*args, **(kwargs or {}))


def _run(fn, case: dict) -> dict:
    from harness.kernel_cases import cases

    import backends

    spec = next(c for c in cases() if c.kernel == case["kernel"] and c.label == case["label"])
    dev = backends.current().device()
    a, b, c = ({k: (v.to(dev) if torch.is_tensor(v) else v) for k, v in case[d].items()} for d in "abc")
    with torch.no_grad():
        spec.call(fn, a)  # dropped: its buffer may be reused by the next output
        rec = OpRecorder()
        with rec:
            out_b = spec.call(fn, b)
    out_b = out_b.detach().clone()
    for k, v in a.items():  # c's values into a's own tensors
        if torch.is_tensor(v):
            v.copy_(c[k])
    leaves = {k: (v.requires_grad_(True) if k in spec.grads else v) for k, v in a.items()}
    out_c = spec.call(fn, leaves)
    backward_error = ""
    try:  # a forward that is right and a backward that fails are two findings, both reported
        out_c.backward(leaves["grad_out"])
    except Exception as e:
        backward_error = f"{type(e).__name__}: {e}"[:2000]
    grads = {k: (leaves[k].grad.detach().clone() if leaves[k].grad is not None else None) for k in spec.grads}
    after = {k: v.detach().clone() for k, v in {**{f"a.{k}": v for k, v in a.items()},
                                                **{f"b.{k}": v for k, v in b.items()}}.items() if torch.is_tensor(v)}
    cpu = lambda t: None if t is None else t.detach().cpu()  # noqa: E731
    return {"out_b": cpu(out_b), "out_c": cpu(out_c), "grads": {k: cpu(v) for k, v in grads.items()},
            "inputs_after": {k: cpu(v) for k, v in after.items()}, "ops": sorted(rec.ops - ALLOWED_OPS),
            "backward_error": backward_error}


def main(argv: list[str]) -> int:
    from kernels import registry

    todo = torch.load(argv[0], weights_only=True)
    results = []
    for case in todo:
        try:
            fn = registry.triton_implementation(case["kernel"])
            results.append({"kernel": case["kernel"], "label": case["label"], **_run(fn, case)})
        except Exception as e:  # the candidate's failure is a finding, reported per case
            results.append({"kernel": case["kernel"], "label": case["label"],
                            "error": f"{type(e).__name__}: {e}"[:2000]})
        print(f"kernels check: ran {case['kernel']} {case['label']}", flush=True)
    torch.save(results, argv[1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
