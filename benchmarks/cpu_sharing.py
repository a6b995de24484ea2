"""Two CPU experiments side by side: does each get about its fair share of the machine?

Runs one experiment alone, then two started together, under OpenMP's default wait policy
(threads spin for a while before they sleep; OMP_WAIT_POLICY set to an empty value, which
libgomp treats as unset), under the policy this project sets (PASSIVE) and under a short
spin, and prints the training steps each made in the same wall budget. Asserts nothing.

    .venv/bin/python benchmarks/cpu_sharing.py [--rounds 2] [overrides ...]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POLICIES = {  # an empty OMP_WAIT_POLICY is libgomp's default (spin ~300k rounds, then sleep)
    "libgomp default": {"OMP_WAIT_POLICY": ""},
    "PASSIVE (ours)": {"OMP_WAIT_POLICY": "PASSIVE"},
    "spin 10k rounds": {"OMP_WAIT_POLICY": "", "GOMP_SPINCOUNT": "10000"},
}


def start(run_dir: Path, overrides: list[str], policy: dict) -> subprocess.Popen:
    env = dict(os.environ, **policy)
    cmd = [sys.executable, "-m", "harness", "experiment", *overrides, "quiet=true", f"hydra.run.dir={run_dir}"]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def steps(run_dir: Path) -> int:
    """Training steps the run made (batches its feed served), whatever its status."""
    s = json.loads((run_dir / "summary.json").read_text())
    if s["status"] != "ok":
        print(f"  ({run_dir.name}: {s['status']}: {s.get('reason', '')[:200]})", flush=True)
    return s.get("num_steps") or 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("overrides", nargs="*", default=["backend=cpu", "model=tiny", "budget.mode=wall",
                                                     "budget.seconds=20"])
    args = ap.parse_args()
    results = {name: {"alone": [], "pair": []} for name in POLICIES}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name, policy in POLICIES.items():
                d = Path(tmp) / f"{r}-{len(results[name]['alone'])}-{'-'.join(policy.values()) or 'default'}"
                p = start(d / "alone", args.overrides, policy)
                p.wait()
                results[name]["alone"].append(steps(d / "alone"))
                pair = [start(d / f"pair{i}", args.overrides, policy) for i in range(2)]
                for p in pair:
                    p.wait()
                results[name]["pair"] += [steps(d / f"pair{i}") for i in range(2)]
                print(f"round {r + 1} {name:<16} alone {results[name]['alone'][-1]:>3} steps | side by side "
                      f"{results[name]['pair'][-2]:>3} and {results[name]['pair'][-1]:>3} steps", flush=True)
    print(f"\n{os.cpu_count()} cores, {' '.join(args.overrides)}, {args.rounds} round(s)")
    for name, res in results.items():
        alone, pair = statistics.mean(res["alone"]), statistics.mean(res["pair"])
        print(f"{name:<16} alone {alone:5.1f} steps, each of two side by side {pair:5.1f} steps "
              f"({100 * pair / alone:.0f}% of alone; fair share 50%) [alone {res['alone']}, pairs {res['pair']}]")


if __name__ == "__main__":
    main()
