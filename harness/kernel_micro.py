"""A kernel campaign's micro-benchmark step: a candidate that passed `kernels check` has its
Triton kernels timed at the model preset's shapes, before its end-to-end experiment.

    figures = measure(cfg, kernels_dir, log)      # in the harness
    python -m harness.kernel_micro IN.json OUT.json   # the sandboxed child it starts

The timing runs in the candidate's own process (a Triton kernel can only be timed where it
runs), so its figures are the candidate's testimony: they are recorded in the ledger row
(`gates.micro_bench`) for the agent and the reader, marked advisory, and decide nothing.
What a kernel campaign keeps is decided by the end-to-end experiment that follows, timed
by the harness's clock and feed (harness/decision.py). On a CPU the step is skipped: Triton's
interpreter says nothing about speed.
"""
from __future__ import annotations

import json
import math
import sys
import tempfile
from pathlib import Path

import backends
from harness import isolation, kernel_check

PASSES = ("fwd", "fwd+bwd")


def measure(cfg: dict, kernels_dir: Path, log=print, force: bool = False) -> dict:
    """The candidate's kernel times ({"ms": {"kernel shape": {"fwd": ms, "fwd+bwd": ms}}},
    advisory), {"skipped": why} off a GPU, or {"failed": why}. `force`: run off a GPU too
    (Triton's interpreter: the figures mean nothing; tests use it to exercise the path)."""
    bk = backends.activate(cfg["backend"]["name"], cfg["backend"].get("threads"))
    if bk.NAME not in kernel_check.GPU_BACKENDS and not force:
        return {"skipped": f"no GPU ({bk.NAME}): Triton's interpreter says nothing about speed"}
    iso = isolation.choose(cfg, bk, log=log)
    with tempfile.TemporaryDirectory(prefix="autoresearch-micro-") as tmp:
        scratch = Path(tmp)
        request = {"model": cfg["model"], "data": {k: cfg["data"][k] for k in ("max_seq_len", "vocab_size")},
                   "only": list(cfg["kernels"].get("only") or []), "repeats": int(cfg["kernels"]["repeats"])}
        (scratch / "in.json").write_text(json.dumps(request))
        log(f"micro-benchmark: the candidate's kernels at the {cfg['model']['name']} preset's shapes ...")
        res = kernel_check.run_child(cfg, bk, iso, scratch, kernels_dir,
                                     ["harness.kernel_micro", "in.json", "out.json"], "micro.log")
        if res.returncode != 0 or not (scratch / "out.json").is_file():
            tail = " | ".join(res.output.strip().splitlines()[-3:])[-500:]
            why = "timed out" if res.timed_out else f"exit {res.returncode}"
            return {"failed": f"the micro-benchmark's process failed ({why}): {tail}"}
        raw = (scratch / "out.json").read_text(errors="replace")[:100_000]
    figures = parse(raw)
    if not figures:
        return {"failed": "the micro-benchmark's process wrote no usable figures"}
    return {"advisory": "timed in the candidate's own process; the end-to-end experiment decides", "ms": figures}


def parse(raw: str) -> dict:
    """The child's figures, kept only where they have the expected shape: a known pass and a
    finite positive number of milliseconds (the child runs the candidate's code)."""
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    out = {}
    for label, times in list(data.items())[:32]:
        if not isinstance(label, str) or not isinstance(times, dict):
            continue
        kept = {p: float(v) for p, v in times.items()
                if p in PASSES and isinstance(v, (int, float)) and not isinstance(v, bool)
                and math.isfinite(v) and 0 < v < 1e7}
        if kept:
            out[label[:80]] = kept
    return out


def main(argv: list[str]) -> int:
    from harness import kernel_bench
    from kernels import registry

    request = json.loads(Path(argv[0]).read_text())
    bk = backends.current()  # the backend the harness named in the environment
    gpu = bk.NAME in kernel_check.GPU_BACKENDS
    clock = kernel_bench.timer(bk, gpu, request["repeats"])
    out = {}
    for name, label, make, grad_idx in kernel_bench.shapes(request, bk.compute_dtype(), bk.device()):
        if request["only"] and name not in request["only"]:
            continue
        fn = registry.triton_implementation(name)
        passes = kernel_bench.passes(fn, make, grad_idx)
        out[f"{name} {label}"] = {p: clock(passes[p]) for p in PASSES}
        print(f"micro-benchmark: {name} {label}: " + ", ".join(f"{p} {v:.3f} ms" for p, v in out[f"{name} {label}"].items()),
              flush=True)
    Path(argv[1]).write_text(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
