"""`autoresearch kernels bench`: each kernel's speed and memory against its reference, eager
and under torch.compile, at the shapes the model preset really runs.

    autoresearch kernels bench backend=cuda model=reference     (the figures that matter)
    autoresearch kernels bench backend=cpu kernels.csv=/tmp/k.csv

Per kernel and shape: forward-only and forward+backward time of the reference in eager
mode, of the reference under torch.compile, and of the Triton implementation; the
Triton one's speedup over both; and the peak memory of forward+backward of each. On a
GPU, `triton.testing.do_bench` times (it synchronizes and flushes the L2 cache between
repetitions); on a CPU a synchronized wall-clock timer does, and the Triton column is
empty (its interpreter says nothing about speed). Rows are appended to the CSV
(`kernels.csv`) with the device's fingerprint and the time; a table is printed.
"""
from __future__ import annotations

import csv
import json
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch

import backends
from harness.kernel_cases import rotary_tables
from kernels import reference, registry

FIELDS = ["time", "device", "backend", "fingerprint", "kernel", "shape", "dtype", "pass",
          "eager_ms", "compiled_ms", "triton_ms", "speedup_vs_eager", "speedup_vs_compiled",
          "eager_peak_mb", "compiled_peak_mb", "triton_peak_mb"]


def shapes(cfg: dict, dtype: torch.dtype, dev) -> list[tuple[str, str, Callable[[], tuple], tuple[int, ...]]]:
    """(kernel, shape label, inputs factory, indices of the inputs that need grad) at the
    preset's shapes: the residual stream and q/k for RMSNorm, q/k for rotary, the last
    hidden state and lm_head for the loss."""
    m, d = cfg["model"], cfg["data"]
    B, T, C, D, V = (int(m["device_batch_size"]), int(d["max_seq_len"]), int(m["width"]), int(m["head_dim"]),
                     int(d["vocab_size"]))
    H = C // D
    rnd = lambda *s: torch.randn(*s, device=dev, dtype=dtype)  # noqa: E731
    cos, sin = rotary_tables(T, D, dtype, dev)
    targets = torch.randint(0, V, (B * T,), device=dev)
    return [
        ("rms_norm", f"{B * T}x{C}", lambda: (rnd(B * T, C), 1e-6, None), (0,)),
        ("rms_norm", f"{B * T * H}x{D}", lambda: (rnd(B * T * H, D), 1e-6, None), (0,)),
        ("apply_rotary", f"{B}x{T}x{H}x{D}", lambda: (rnd(B, T, H, D), cos, sin), (0,)),
        ("linear_cross_entropy", f"{B * T}x{C} V={V}",
         lambda: (rnd(B * T, C), rnd(V, C) / C ** 0.5, targets, 15.0, -1), (0, 1)),
    ]


def timer(bk, gpu: bool, repeats: int) -> Callable[[Callable], float]:
    if gpu:
        from triton.testing import do_bench

        return lambda fn: float(do_bench(fn, warmup=25, rep=100))

    def wall(fn) -> float:
        fn()  # warm-up (compilation, first allocations)
        times = []
        for _ in range(repeats):
            bk.synchronize()
            t0 = time.perf_counter()
            fn()
            bk.synchronize()
            times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)

    return wall


def _peak_mb(bk, fn: Callable) -> float | None:
    """Peak memory of one call above what was held before it (a GPU's allocator; None on a
    CPU, where the process's peak RSS cannot be reset)."""
    if bk.NAME not in ("cuda", "rocm"):
        return None
    bk.synchronize()
    before = bk.memory_allocated()
    bk.reset_peak_memory()
    fn()
    bk.synchronize()
    return (bk.max_memory_allocated() - before) / 2 ** 20


def passes(fn: Callable, make: Callable[[], tuple], grad_idx: tuple[int, ...]) -> dict[str, Callable]:
    """The forward-only and forward+backward closures of `fn` on one set of inputs."""
    args = list(make())
    leaves = [a.requires_grad_(True) if i in grad_idx else a for i, a in enumerate(args)]

    def forward():
        with torch.no_grad():
            fn(*args)

    def forward_backward():
        out = fn(*leaves)
        out.backward(torch.ones_like(out))
        for i in grad_idx:
            leaves[i].grad = None

    return {"fwd": forward, "fwd+bwd": forward_backward}


def run(cfg: dict, log=print) -> list[dict]:
    bk = backends.activate(cfg["backend"]["name"], cfg["backend"].get("threads"), cfg["backend"].get("device"))
    gpu = bk.NAME in ("cuda", "rocm")
    dtype, dev = bk.compute_dtype(), bk.device()
    clock = timer(bk, gpu, int(cfg["kernels"]["repeats"]))
    only = cfg["kernels"].get("only")
    rows, stamp = [], datetime.now(timezone.utc).isoformat(timespec="seconds")
    fp = json.dumps(bk.fingerprint(), sort_keys=True, default=str)
    for name, label, make, grad_idx in shapes(cfg, dtype, dev):
        if only and name not in only:
            continue
        ref = getattr(reference, name)
        impls = {"eager": ref, "compiled": torch.compile(ref, dynamic=False)}
        if gpu:
            impls["triton"] = registry.triton_implementation(name)
        for which in ("fwd", "fwd+bwd"):
            row = {"time": stamp, "device": bk.device_name(), "backend": bk.NAME, "fingerprint": fp,
                   "kernel": name, "shape": label, "dtype": str(dtype).removeprefix("torch."), "pass": which}
            for impl, fn in impls.items():
                closure = passes(fn, make, grad_idx)[which]
                row[f"{impl}_ms"] = clock(closure)
                row[f"{impl}_peak_mb"] = _peak_mb(bk, closure) if which == "fwd+bwd" else None
            if row.get("triton_ms"):
                row["speedup_vs_eager"] = row["eager_ms"] / row["triton_ms"]
                row["speedup_vs_compiled"] = row["compiled_ms"] / row["triton_ms"]
            rows.append(row)
            log(f"kernels bench: {name} {label} {which}: eager {row['eager_ms']:.3f} ms, compiled "
                f"{row['compiled_ms']:.3f} ms" + (f", triton {row['triton_ms']:.3f} ms" if gpu else ""))
    path = Path(cfg["kernels"]["csv"]).expanduser()
    append(path, rows)
    log(table(rows) + f"\nkernels bench: {len(rows)} row(s) appended to {path.resolve()}")
    return rows


def append(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerows(rows)


def table(rows: list[dict]) -> str:
    def ms(v):
        return "-" if v is None else f"{v:.3f}"

    def x(v):
        return "-" if v is None else f"{v:.2f}x"

    lines = [f"{'kernel':<22}{'shape':<20}{'pass':<9}{'eager ms':>10}{'compiled':>10}{'triton':>10}"
             f"{'vs eager':>10}{'vs comp.':>10}{'peak MB e/c/t':>20}"]
    for r in rows:
        peaks = "/".join("-" if r.get(f"{i}_peak_mb") is None else f"{r[f'{i}_peak_mb']:.0f}"
                         for i in ("eager", "compiled", "triton"))
        lines.append(f"{r['kernel']:<22}{r['shape']:<20}{r['pass']:<9}{ms(r['eager_ms']):>10}"
                     f"{ms(r['compiled_ms']):>10}{ms(r.get('triton_ms')):>10}{x(r.get('speedup_vs_eager')):>10}"
                     f"{x(r.get('speedup_vs_compiled')):>10}{peaks:>20}")
    return "\n".join(lines)
