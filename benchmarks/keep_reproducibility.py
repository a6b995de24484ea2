"""Do a campaign's keeps reproduce? A random-agent campaign, then each kept commit and the
baseline re-run a few times: a keep reproduces when its re-runs beat the baseline's re-runs
by more than 2 standard errors of the difference. Prints figures; asserts nothing.

    .venv/bin/python benchmarks/keep_reproducibility.py --rule naive     # any gain wins (the old default)
    .venv/bin/python benchmarks/keep_reproducibility.py --rule default   # the noise-aware rule
    .venv/bin/python benchmarks/keep_reproducibility.py --experiments 8 --reruns 3 backend=cpu model=tiny

The campaign lives in a temporary campaign.root; its branch and work tree are removed at
the end.
"""
import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RULES = {"naive": ["keep.baseline_runs=1"], "default": []}


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=ROOT, capture_output=True, text=True)


def rerun(tmp: Path, commit: str, overrides: list[str], n: int) -> list[float]:
    src = subprocess.run(["git", "show", f"{commit}:trainer/train.py"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    train = tmp / f"train-{commit[:10]}.py"
    train.write_text(src)
    vals = []
    for i in range(n):
        d = tmp / f"rerun-{commit[:10]}-{i}"
        cli("experiment", *overrides, f"train_file={train}", "quiet=true", f"hydra.run.dir={d}")
        s = json.loads((d / "summary.json").read_text())
        if s["status"] == "ok":
            vals.append(s["val_bpb"])
    return vals


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rule", choices=sorted(RULES), default="default")
    ap.add_argument("--experiments", type=int, default=8)
    ap.add_argument("--reruns", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("overrides", nargs="*", default=["backend=cpu", "model=tiny"])
    args = ap.parse_args()
    tag = f"keepbench-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        try:
            res = cli("run", *args.overrides, *RULES[args.rule], "agent=random", f"agent.seed={args.seed}",
                      f"campaign.max_experiments={args.experiments}", f"campaign.tag={tag}",
                      f"campaign.root={tmp / 'campaigns'}")
            if res.returncode != 0:
                sys.exit(f"campaign failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
            d = tmp / "campaigns" / tag / "cpu"
            rows = [json.loads(line) for line in (d / "results.jsonl").read_text().splitlines()]
            base = next(r for r in rows if r["seq"] == 0)
            keeps = [r for r in rows if r["seq"] > 0 and r["status"] == "keep"]
            runs = sum(1 for r in rows)
            print(f"rule={args.rule}: {args.experiments} proposals, {runs} runs in all, {len(keeps)} kept "
                  f"({' '.join(args.overrides)}, agent.seed={args.seed})", flush=True)
            b = rerun(tmp, base["full_commit"], args.overrides, args.reruns)
            bm, bs = statistics.mean(b), statistics.stdev(b)
            print(f"baseline re-runs: {', '.join(f'{v:.4f}' for v in b)} -> mean {bm:.4f}, std {bs:.4f}", flush=True)
            good = 0
            for k in keeps:
                v = rerun(tmp, k["full_commit"], args.overrides, args.reruns)
                km, ks = statistics.mean(v), statistics.stdev(v)
                se = math.sqrt(ks ** 2 / len(v) + bs ** 2 / len(b))
                ok = bm - km > 2 * se
                good += ok
                rule = k.get("keep_rule") or {}
                print(f"  keep seq {k['seq']} ({k['description'][:60]}): in campaign gain "
                      f"{(rule.get('gain') or 0):.4f} (margin {(rule.get('margin') or 0):.4f}); re-runs mean {km:.4f} "
                      f"-> gain {bm - km:+.4f}, 2 SE {2 * se:.4f}: {'reproduces' if ok else 'does not reproduce'}",
                      flush=True)
            share = f"{100 * good / len(keeps):.0f}%" if keeps else "n/a"
            print(f"rule={args.rule}: {good} of {len(keeps)} keeps reproduce ({share})")
        finally:
            tree = tmp / "campaigns" / tag / "cpu" / "worktree"
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
            subprocess.run(["git", "branch", "-D", f"autoresearch/{tag}/cpu"], cwd=ROOT, capture_output=True)


if __name__ == "__main__":
    main()
