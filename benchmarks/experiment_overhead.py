"""Where an experiment's wall time goes: training vs everything else (start-up before the
harness's clock starts, the handover, the evaluation with its causality probe), and the
training throughput. Prints figures; asserts nothing.

    .venv/bin/python benchmarks/experiment_overhead.py [--runs 2] [overrides ...]
    .venv/bin/python benchmarks/experiment_overhead.py --runs 1 backend=cpu model=tiny budget.mode=wall budget.seconds=30
"""
import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("overrides", nargs="*", default=["backend=cpu", "model=tiny", "budget.mode=wall", "budget.seconds=30"])
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            run_dir = Path(tmp) / f"run{i}"
            cmd = [sys.executable, "-m", "harness", "experiment", *args.overrides, "quiet=true", f"hydra.run.dir={run_dir}"]
            subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True)
            s = json.loads((run_dir / "summary.json").read_text())
            rows.append(s)
            train, total = s["training_seconds"], s["total_seconds"]
            tps = s["timed_tokens"] / train if train else float("nan")
            log = (run_dir / "train.log").read_text().splitlines()
            step_tps = [float(l.split("tok/s")[1].split("|")[0].replace(",", "")) for l in log if "tok/s" in l]
            print(f"run {i}: val_bpb {s['val_bpb']:.4f} | batches {s['num_steps']} | training {train:.1f} s of "
                  f"{total:.1f} s wall -> non-training {total - train:.1f} s, share {100 * (1 - train / total):.1f}% | "
                  f"start-up {s['startup_seconds']:.1f} s, train process {s['train_process_seconds']:.1f} s, "
                  f"evaluation {s['eval_seconds']:.1f} s (probe: {s['probe']['rows']} rows) | tokens/s {tps:,.0f} "
                  f"(median step {statistics.median(step_tps[1:] or step_tps):,.0f}) | {s['isolation']} | {s['device']}")
    share = [1 - r["training_seconds"] / r["total_seconds"] for r in rows]
    other = [r["total_seconds"] - r["training_seconds"] for r in rows]
    print(f"non-training: mean {statistics.mean(other):.2f} s (min {min(other):.2f}, max {max(other):.2f}), share "
          f"{100 * statistics.mean(share):.1f}% over {len(rows)} runs ({' '.join(args.overrides)})")


if __name__ == "__main__":
    main()
