"""Two "devices" on one machine — the CPU with backend.threads=1 and with
backend.threads=2 — under budget.mode=normalized and budget.mode=wall: tokens processed
and val_bpb of the baseline (prints figures; asserts nothing).

    .venv/bin/python benchmarks/normalized_budget.py [--pairs 3] [--control 3] [--noise-runs 3] [--wall-seconds 20] [--reuse-calibration]

Each pair: both "devices" freshly calibrated, then one normalized experiment on each.
Normalized budgets should give both the same number of training tokens (within 3%,
pair after pair) and val_bpb within the noise floor; equal wall seconds should not. Also
prints how far each experiment's real training rate was from its calibration's.
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
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    cli("experiment", *BASE, f"backend.threads={threads}", "quiet=true", f"hydra.run.dir={run_dir}", *extra)
    s = json.loads((run_dir / "summary.json").read_text())
    s["tokens"] = s["total_tokens"]  # what the harness's feed served
    return s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=3, help="fresh calibrations + normalized experiments, in a row")
    ap.add_argument("--noise-runs", type=int, default=0)
    ap.add_argument("--wall-seconds", type=float, default=0, help="also compare equal wall budgets (0: skip)")
    ap.add_argument("--reuse-calibration", action="store_true", help="use cached calibrations when valid")
    ap.add_argument("--control", type=int, default=0,
                    help="then N normalized experiments on one device with one calibration: the run-to-run spread "
                         "that no calibration can remove")
    args = ap.parse_args()
    diffs = []
    with tempfile.TemporaryDirectory() as tmp:
        for p in range(args.pairs):
            cals = {t: calibration(t, args.noise_runs if t == 2 else 0, args.reuse_calibration) for t in (1, 2)}
            runs = {t: experiment(Path(tmp) / f"pair{p}", t, "budget.mode=normalized") for t in (1, 2)}
            a, b = runs[1], runs[2]
            diff = abs(a["tokens"] - b["tokens"]) / b["tokens"]
            diffs.append(diff)
            line = [f"pair {p + 1}:"]
            for t, r in runs.items():
                real = r["timed_tokens"] / r["training_seconds"]
                line.append(f"threads={t} calibrated {cals[t]['tokens_per_s']:,.0f} tokens/s (CV {100 * cals[t]['cv']:.1f}%), "
                            f"experiment trained at {real:,.0f} ({100 * (real / cals[t]['tokens_per_s'] - 1):+.1f}%), "
                            f"budget {r['budget_seconds']:.1f} s -> {r['num_steps']} batches, val_bpb {r['val_bpb']:.4f} |")
            line.append(f"tokens differ {100 * diff:.1f}%")
            print(" ".join(line), flush=True)
        noise = cals[2].get("noise")
        if noise:
            print(f"noise floor (threads=2, {noise['runs']} baseline runs): val_bpb {noise['mean']:.4f} ± {noise['std']:.4f}")
        print(f"normalized: tokens differ {', '.join(f'{100 * d:.1f}%' for d in diffs)} over {len(diffs)} pairs "
              f"(max {100 * max(diffs):.1f}%)")
        if args.control:
            runs = [experiment(Path(tmp) / f"control{i}", 2, "budget.mode=normalized") for i in range(args.control)]
            toks = [r["tokens"] for r in runs]
            rates = [r["timed_tokens"] / r["training_seconds"] for r in runs]
            print(f"control: threads=2, {args.control} runs on one calibration: tokens {', '.join(f'{t:,}' for t in toks)} "
                  f"(largest pairwise difference {100 * (max(toks) - min(toks)) / min(toks):.1f}%), trained at "
                  f"{', '.join(f'{r:,.0f}' for r in rates)} tokens/s")
        if args.wall_seconds:
            runs = {t: experiment(Path(tmp) / "wall", t, "budget.mode=wall", f"budget.seconds={args.wall_seconds:g}")
                    for t in (1, 2)}
            a, b = runs[1], runs[2]
            print(f"wall {args.wall_seconds:g} s: threads=1 {a['tokens']:,} tokens, val_bpb {a['val_bpb']:.4f} | "
                  f"threads=2 {b['tokens']:,} tokens, val_bpb {b['val_bpb']:.4f} | tokens differ "
                  f"{100 * abs(a['tokens'] - b['tokens']) / b['tokens']:.1f}%")


if __name__ == "__main__":
    main()
