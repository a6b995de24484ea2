"""The keep rule's error rates by simulation: how often it keeps a candidate that is no
better than the head (false keeps), and how often it keeps one that is better by 1 or 2
run-to-run standard deviations (power), with the campaign's default settings and its
confirmation runs. Uses harness/keep.py itself. Prints figures; asserts nothing.

    .venv/bin/python benchmarks/keep_rule_simulation.py [--trials 20000] [--baseline-runs 3] [--confirm-runs 2]
"""
import argparse
import random

from harness.keep import KeepRule


def keep_rate(effect: float, args, prior_dof: int, rng: random.Random) -> float:
    keeps = 0
    cfg = {"baseline_runs": args.baseline_runs, "confirm_runs": args.confirm_runs, "threshold": None,
           "noise_sigmas": args.sigmas}
    for _ in range(args.trials):
        base = [rng.gauss(0, 1) for _ in range(args.baseline_runs)]
        # the baseline row and its confirmation rows, plus earlier repeated commits (prior_dof)
        records = [{"seq": 0, "val_bpb": base[0], "status": "keep"}]
        records += [{"seq": i, "val_bpb": v, "status": "confirm", "confirms": 0} for i, v in enumerate(base[1:], 1)]
        for j in range(prior_dof):
            records += [{"seq": 100 + 2 * j, "val_bpb": rng.gauss(0, 1), "status": "discard"},
                        {"seq": 101 + 2 * j, "val_bpb": rng.gauss(0, 1), "status": "confirm", "confirms": 100 + 2 * j}]
        head = sum(base) / len(base)
        runs = []
        while True:
            runs.append(rng.gauss(-effect, 1))
            decision = KeepRule.from_config(cfg, records, current=runs).decide(runs, head, len(base))
            if decision != "again":
                keeps += decision == "keep"
                break
    return keeps / args.trials


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=20000)
    ap.add_argument("--baseline-runs", type=int, default=3)
    ap.add_argument("--confirm-runs", type=int, default=2)
    ap.add_argument("--sigmas", type=float, default=2.0)
    args = ap.parse_args()
    rng = random.Random(0)
    print(f"keep.baseline_runs={args.baseline_runs} keep.confirm_runs={args.confirm_runs} "
          f"keep.noise_sigmas={args.sigmas:g}, {args.trials} simulated candidates per cell")
    print(f"{'noise dof before the candidate':<32}{'no better':>12}{'1 sd better':>14}{'2 sd better':>14}")
    for prior in (0, 4, 10):
        rates = [keep_rate(e, args, prior, rng) for e in (0.0, 1.0, 2.0)]
        print(f"{args.baseline_runs - 1 + prior:<32}" + "".join(f"{100 * r:>13.1f}%" for r in rates))
    print("naive rule (any gain wins): no better 50%, 1 sd better ~76%, 2 sd better ~92% (one run each side)")


if __name__ == "__main__":
    main()
