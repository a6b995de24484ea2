"""Two "devices" on one machine — the CPU with backend.threads=1 and with
backend.threads=2 — under budget.mode=normalized and budget.mode=wall: tokens processed
and val_bpb of the baseline (prints figures; asserts nothing).

    .venv/bin/python benchmarks/normalized_budget.py [--noise-runs 3] [--wall-seconds 20] [--reuse-calibration]

Normalized budgets should give both the same number of training tokens (within a few %)
and val_bpb within the noise floor; equal wall seconds should not.
"""
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASE = ["backend=cpu", "model=tiny"]


def cli(*args) -> str:
    res = subprocess.run([sys.executable, "-m", "harness", *args], cwd=ROOT, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"failed: autoresearch {' '.join(args)}\n{res.stdout}\n{res.stderr}")
    return res.stdout


def calibration(threads: int, noise_runs: int, reuse: bool) -> dict:
    out = cli("calibrate", *BASE, f"backend.threads={threads}", f"calibrate.force={str(not reuse).lower()}",
              f"calibrate.noise_runs={noise_runs}")
    return json.loads(Path(out.split("saved")[-1].split()[0]).read_text())


def experiment(tmp: Path, threads: int, *extra) -> dict:
    run_dir = tmp / f"t{threads}-{extra[0].split('=')[-1]}"
    cli("experiment", *BASE, f"backend.threads={threads}", "quiet=true", f"hydra.run.dir={run_dir}", *extra)
    s = json.loads((run_dir / "summary.json").read_text())
    s["tokens"] = s["total_tokens"]  # what the harness's feed served
    return s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--noise-runs", type=int, default=3)
    ap.add_argument("--wall-seconds", type=float, default=20)
    ap.add_argument("--reuse-calibration", action="store_true", help="use cached calibrations when valid")
    args = ap.parse_args()
    cals = {t: calibration(t, args.noise_runs if t == 2 else 0, args.reuse_calibration) for t in (1, 2)}
    for t, c in cals.items():
        print(f"threads={t}: calibrated {c['tokens_per_s']:,.0f} tokens/s (CV {100 * c['cv']:.1f}%), "
              f"matmul {c['matmul_flops_per_s'] / 1e9:,.0f} GFLOP/s")
    noise = cals[2].get("noise")
    if noise:
        print(f"noise floor (threads=2, {noise['runs']} baseline runs): val_bpb {noise['mean']:.4f} ± {noise['std']:.4f}")
    with tempfile.TemporaryDirectory() as tmp:
        for mode, extra in (("normalized", ["budget.mode=normalized"]),
                            ("wall", ["budget.mode=wall", f"budget.seconds={args.wall_seconds:g}"])):
            runs = {t: experiment(Path(tmp), t, *extra) for t in (1, 2)}
            a, b = runs[1], runs[2]
            print(f"{mode:>10}: threads=1 {a['budget_seconds']:.1f} s -> {a['tokens']:,} tokens, val_bpb {a['val_bpb']:.4f} | "
                  f"threads=2 {b['budget_seconds']:.1f} s -> {b['tokens']:,} tokens, val_bpb {b['val_bpb']:.4f} | "
                  f"tokens differ {100 * abs(a['tokens'] - b['tokens']) / b['tokens']:.1f}%, "
                  f"val_bpb differ {abs(a['val_bpb'] - b['val_bpb']):.4f}"
                  + (f" ({abs(a['val_bpb'] - b['val_bpb']) / noise['std']:.1f} noise std)" if noise and noise["std"] else ""))


if __name__ == "__main__":
    main()
