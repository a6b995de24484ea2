"""Static rules for kernel files: the known ways an agent-written kernel cheats, refused
before anything runs.

    problems = kernel_rules.check_source(text, "kernels/rms_norm.py")   # [] when clean

A kernel campaign times the training run end to end, so a kernel that is fast only on
paper gains nothing there; these rules keep the gate before it (`kernels check`, the
micro-benchmark) honest and the campaign's discoveries real kernels:
- no concurrency: threads, processes, async, CUDA streams, events or graphs (work hidden
  beside the timed stream);
- no timers and no synchronization (the harness does the timing);
- no try/except (a silent fallback to torch when the Triton path fails);
- no reference, no torch math on the launch path (the result computed by torch, not the
  kernel): only allocation, views, casts and the vendor GEMMs (`@`, mm, matmul, addmm);
- no caching keyed on tensor identity (id(), data_ptr(), weak references, memoizing
  decorators);
- no dynamic code (exec, eval, compile, __import__, importlib, getattr with a computed
  name, ctypes) with which any rule above could be dodged;
- no reaching into the harness or the dispatch (importing `harness`, `kernels.registry`,
  `sys`, `gc`, `inspect`), and no patching of an imported module (`module.attr = ...`):
  the check's child runs the candidate's code, which must not rewrite what reports on it.
The rules read the code, so they also refuse honest code that merely looks like a trick;
the message says which rule and where, and the project's own kernels pass them.
"""
from __future__ import annotations

import ast

BANNED_MODULES = {"threading", "multiprocessing", "concurrent", "asyncio", "subprocess", "ctypes", "time",
                  "timeit", "signal", "importlib", "weakref", "functools", "socket", "pickle", "marshal",
                  "kernels.reference", "torch.nn.functional", "torch.multiprocessing", "sched", "queue",
                  "harness", "kernels.registry", "sys", "builtins", "gc", "inspect"}
BANNED_NAMES = {"exec", "eval", "compile", "__import__", "id", "globals", "locals", "vars", "setattr", "delattr",
                "breakpoint", "open", "reference"}
BANNED_ATTRS = {
    "Stream": "creates a CUDA stream", "stream": "uses a CUDA stream", "current_stream": "uses a CUDA stream",
    "set_stream": "uses a CUDA stream", "Event": "creates a CUDA event", "CUDAGraph": "creates a CUDA graph",
    "graph": "uses a CUDA graph", "synchronize": "synchronizes the device (the harness times the run)",
    "perf_counter": "reads a timer", "monotonic": "reads a timer", "elapsed_time": "reads a timer",
    "data_ptr": "keys on tensor identity", "_version": "keys on tensor identity", "lru_cache": "memoizes",
    "cache": "memoizes", "reference": "calls the reference", "functional": "calls torch.nn.functional",
    "__code__": "rewrites code", "__globals__": "rewrites code", "__dict__": "reaches into objects",
    "_C": "calls torch's C internals",
}
# torch.<name>(...) a launcher may call: allocation, casts, views, shapes and GEMMs.
TORCH_CALLS = {"empty", "empty_like", "empty_strided", "zeros", "zeros_like", "full", "full_like", "ones",
               "ones_like", "arange", "mm", "matmul", "addmm", "bmm", "is_tensor", "is_floating_point",
               "finfo", "iinfo", "device", "Size", "tensor", "no_grad", "get_device_properties",
               "current_device", "is_grad_enabled", "promote_types", "result_type", "cdiv",
               "is_autocast_enabled", "get_autocast_dtype", "autocast", "enable_grad"}
# tensor methods that compute a result torch-side (what the kernel is for)
TENSOR_MATH = {"exp", "log", "tanh", "rsqrt", "sqrt", "pow", "mean", "softmax", "log_softmax", "logsumexp",
               "cross_entropy", "nll_loss", "norm", "var", "std", "max", "min", "amax", "amin", "cumsum",
               "gather", "scatter", "scatter_add", "index_select", "where", "sigmoid", "sin", "cos", "neg",
               "abs", "square", "reciprocal", "lerp", "addcmul", "addcdiv", "cat", "stack", "roll",
               "flip", "rms_norm", "layer_norm", "einsum", "prod", "argmax", "topk", "sort"}


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def check_source(text: str, path: str = "<kernel>") -> list[str]:
    """Each rule the source breaks, as `path:line: what`; [] when it keeps them all."""
    try:
        tree = ast.parse(text, path)
    except SyntaxError as e:
        return [f"{path}:{e.lineno}: does not parse: {e.msg}"]
    found = []
    imported = {(a.asname or a.name).split(".")[0] for n in ast.walk(tree)
                if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}

    def bad(node: ast.AST, what: str) -> None:
        found.append(f"{path}:{getattr(node, 'lineno', 0)}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if _banned_module(a.name):
                    bad(node, f"imports {a.name} (not allowed in a kernel file)")
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            names = [f"{mod}.{a.name}" if mod else a.name for a in node.names]
            if node.level and any(a.name == "reference" for a in node.names) or _banned_module(mod) or any(
                    _banned_module(n) for n in names):
                bad(node, f"imports from {'.' * node.level}{mod} (not allowed in a kernel file)")
        elif isinstance(node, (ast.Try, getattr(ast, "TryStar", ast.Try))):
            bad(node, "try/except: a kernel fails loudly (a silent fallback to torch is refused)")
        elif isinstance(node, ast.Name) and node.id in BANNED_NAMES:
            bad(node, f"uses {node.id} (not allowed in a kernel file)")
        elif isinstance(node, ast.Attribute) and node.attr in BANNED_ATTRS:
            bad(node, f".{node.attr}: {BANNED_ATTRS[node.attr]}")
        elif isinstance(node, ast.Call):
            _check_call(node, bad)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            bad(node, "global state in a kernel (a cache across calls) is refused")
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                base = _dotted(t).split(".")[0] if isinstance(t, ast.Attribute) else ""
                if base in imported:
                    bad(node, f"assigns to {_dotted(t)}: a kernel does not patch the modules it imports")
    return found


def _banned_module(name: str) -> bool:
    return any(name == m or name.startswith(m + ".") for m in BANNED_MODULES)


def _check_call(node: ast.Call, bad) -> None:
    func = node.func
    name = _dotted(func)
    if name == "getattr" and not (len(node.args) > 1 and isinstance(node.args[1], ast.Constant)):
        bad(node, "getattr with a computed name (not allowed in a kernel file)")
    if name.startswith("torch.") and name.count(".") == 1 and name.split(".")[1] not in TORCH_CALLS:
        bad(node, f"{name}(): torch computing on the launch path (only allocation, views, casts and "
                  f"GEMMs; the kernel computes the rest)")
    if name.startswith(("F.", "torch.nn.functional.", "torch.special.", "torch.linalg.", "torch.fft.")):
        bad(node, f"{name}(): torch computing on the launch path")
    if isinstance(func, ast.Attribute) and func.attr in TENSOR_MATH and not name.startswith(("tl.", "triton.")):
        bad(node, f".{func.attr}(): torch computing on the launch path (inside @triton.jit use tl.*)")
