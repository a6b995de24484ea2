"""The honest baseline on 1 and 2 threads, quiet and beside a CPU hog, under wall,
normalized and tokens budgets: is any honest run cut off?

Calibrates each thread count first on the quiet machine (cached, as a user's would be),
then runs the unmodified train.py (`model=tiny`) once per cell and prints, per run: the
status, training seconds, the overshoot past the budget, the slowest step the feed saw,
the wall time of the whole experiment, and val_bpb. A hog is one process spinning on a
core (`while True: pass`) for the whole run. Asserts nothing; exits 1 if any run was not
`ok`, so a CI step can use it.

    .venv/bin/python benchmarks/load_matrix.py [--threads 1 2] [--modes wall normalized tokens] [overrides ...]
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASE = ["backend=cpu", "model=tiny", "quiet=true"]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=ROOT, capture_output=True, text=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--modes", nargs="+", default=["wall", "normalized", "tokens"])
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args()
    for t in a.threads:
        res = cli("calibrate", *BASE, f"backend.threads={t}", *a.overrides)
        print(f"calibrate threads={t}: exit {res.returncode}", flush=True)
        if res.returncode != 0:
            print(res.stdout[-2000:] + res.stderr[-2000:])
            return 1
    rows, bad = [], 0
    with tempfile.TemporaryDirectory(prefix="autoresearch-load-matrix-") as tmp:
        for t in a.threads:
            for load in ("quiet", "hog"):
                for mode in a.modes:
                    run_dir = Path(tmp) / f"{t}-{load}-{mode}"
                    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if load == "hog" else None
                    t0 = time.monotonic()
                    try:
                        cli("experiment", *BASE, f"backend.threads={t}", f"budget.mode={mode}",
                            f"hydra.run.dir={run_dir}", *a.overrides)
                    finally:
                        if hog is not None:
                            hog.kill()
                            hog.wait()
                    wall = time.monotonic() - t0
                    try:
                        s = json.loads((run_dir / "summary.json").read_text())
                    except FileNotFoundError:
                        s = {"status": "no summary", "reason": "the experiment stopped before its run"}
                    bad += s["status"] != "ok"
                    rows.append((t, load, mode, s, wall))
                    print(f"threads={t} {load:<5} {mode:<10} {s['status']:<8} train {s.get('training_seconds') or 0:6.1f} s "
                          f"(budget {s.get('budget_seconds') or 0:5.1f} s, over {s.get('overshoot_seconds') or 0:4.1f} s, "
                          f"slowest step {s.get('slowest_step_seconds') or 0:4.2f} s) | experiment {wall:5.1f} s | "
                          f"val_bpb {s.get('val_bpb') or float('nan'):.4f}"
                          + ("" if s["status"] == "ok" else f" | {str(s.get('reason', ''))[:160]}"), flush=True)
    print(f"{len(rows) - bad} of {len(rows)} runs ok")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
