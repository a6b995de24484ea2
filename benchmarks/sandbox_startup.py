"""What the sandbox costs a process's start: `python -c "import torch"` plain and through
the sandbox launcher (Landlock + seccomp on Linux), alternated. Prints figures; asserts nothing.

    .venv/bin/python benchmarks/sandbox_startup.py [--runs 4]
"""
import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    from harness import sandbox

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=4)
    args = ap.parse_args()
    sup = sandbox.support()
    if sup.kind == "none":
        sys.exit(f"no sandbox here: {'; '.join(sup.notes)}")
    cmd = [sys.executable, "-c", "import torch"]
    times: dict[str, list[float]] = {"plain": [], "sandboxed": []}
    with tempfile.TemporaryDirectory() as scratch:
        policy = sandbox.base_policy("cpu").merged(sandbox.Policy(write=(scratch,)))
        variants = {"plain": cmd, "sandboxed": sandbox.wrap(cmd, policy, sup)}
        for _ in range(args.runs):
            for name, argv in variants.items():
                t0 = time.perf_counter()
                subprocess.run(argv, check=True)
                times[name].append(time.perf_counter() - t0)
    for name, ts in times.items():
        print(f"{name:>9}: import torch {statistics.median(ts):.2f} s median "
              f"({min(ts):.2f}-{max(ts):.2f} over {len(ts)} runs) [{sup.label if name == 'sandboxed' else 'none'}]")


if __name__ == "__main__":
    main()
