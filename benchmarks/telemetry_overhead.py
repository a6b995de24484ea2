"""What the telemetry sampler costs: the CPU time of its thread per second of training, per
sample, and (with --experiments N) a tiny experiment's tokens/s with and without it.
Prints figures; asserts nothing.

    .venv/bin/python benchmarks/telemetry_overhead.py                       # sampler alone, ~20 s
    .venv/bin/python benchmarks/telemetry_overhead.py --experiments 2       # + 2 experiments each way, ~4 min on a CPU
    .venv/bin/python benchmarks/telemetry_overhead.py --backend cuda --experiments 2 backend=cuda model=tiny

The sampler alone watches a child that keeps one core busy in a tree of four processes
(read each sample, after a scan of every process on the machine to find the run's), for
--seconds. "Without" runs the same experiment with the sampler replaced by a stand-in that
does nothing (patched in the experiment's own process).
"""
import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TREE = """
import subprocess, sys, time
kids = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]) for _ in range(3)]
t = time.time()
while time.time() - t < 600: pass
"""

WITHOUT = """
import sys
from harness import cli, training

class Off:
    def __init__(self, *a, **k): pass
    def start(self): return self
    def stop(self): pass
    def peak_memory_mb(self): return None
    def summary(self, *a, **k): return None

training.Telemetry = Off
cli.main(sys.argv[1:])
"""


def sampler_alone(backend: str, seconds: float) -> None:
    import psutil

    from harness.telemetry import INTERVAL_S, Telemetry

    proc = subprocess.Popen([sys.executable, "-c", TREE])
    try:
        time.sleep(1.0)  # the tree is up
        tel = Telemetry(proc.pid, backend).start()
        t0 = time.monotonic()
        time.sleep(seconds)
        tel.stop()
        wall = time.monotonic() - t0
        s = tel.summary((t0, t0 + wall), timed_tokens=0)
    finally:
        for p in psutil.Process(proc.pid).children(recursive=True) + [psutil.Process(proc.pid)]:
            p.kill()
        proc.wait()
    n = len(tel.samples)
    print(f"sampler alone ({backend}, sources {'+'.join(s['sources'])}, {len(psutil.pids())} processes on the "
          f"machine, {psutil.cpu_count()} cores): {n} samples in {wall:.1f} s (interval {INTERVAL_S} s); "
          f"{1e3 * tel.sampler_cpu_s / n:.2f} ms CPU per sample, {1e3 * tel.sampler_cpu_s / wall:.2f} ms CPU per "
          f"second of training = {100 * tel.sampler_cpu_s / wall:.3f}% of one core; tree CPU "
          f"{s['cpu_percent_mean']}%, foreign {s['foreign_cpu_percent_mean']}%")


def experiments(runs: int, overrides: list[str]) -> None:
    rates: dict[str, list[float]] = {"with": [], "without": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(runs):
            for mode in ("with", "without"):  # alternated: a drift in the machine's load hits both
                run_dir = Path(tmp) / f"{mode}{i}"
                args = ["experiment", *overrides, "quiet=true", f"hydra.run.dir={run_dir}"]
                cmd = [sys.executable, "-m", "harness", *args] if mode == "with" else \
                    [sys.executable, "-c", WITHOUT, *args]
                res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
                s = json.loads((run_dir / "summary.json").read_text())
                if res.returncode != 0:
                    sys.exit(f"run {i} {mode}: {s['status']}: {s.get('reason')}\n{res.stderr[-2000:]}")
                tps = s["timed_tokens"] / s["training_seconds"]
                rates[mode].append(tps)
                t = s.get("telemetry") or {}
                print(f"run {i} {mode:>7} telemetry: {tps:,.0f} tokens/s, val_bpb {s['val_bpb']:.4f}"
                      + (f", sampler {t.get('sampler_cpu_percent')}% of a core, {t.get('samples')} samples, "
                         f"foreign CPU {t.get('foreign_cpu_percent_mean')}%" if t else ""))
    w, wo = statistics.mean(rates["with"]), statistics.mean(rates["without"])
    spread = max(statistics.pstdev(rates["with"]), statistics.pstdev(rates["without"]))
    print(f"tokens/s: with {w:,.0f}, without {wo:,.0f} (mean of {runs} each): {100 * (w / wo - 1):+.2f}%, "
          f"spread between runs of one kind {100 * spread / wo:.2f}% ({' '.join(overrides)})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="cpu", help="what the sampler reads (cuda: NVML, rocm: amdsmi)")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--experiments", type=int, default=0, help="runs of a tiny experiment each way (0: none)")
    ap.add_argument("overrides", nargs="*", default=[
        "backend=cpu", "model=tiny", "budget.mode=wall", "budget.seconds=15", "data.eval_tokens=8192",
        "budget.allowance_seconds=30", "eval.probe_tolerance=1e-4"])  # limits given: no calibration needed
    args = ap.parse_args()
    sampler_alone(args.backend, args.seconds)
    if args.experiments:
        experiments(args.experiments, args.overrides)


if __name__ == "__main__":
    main()
