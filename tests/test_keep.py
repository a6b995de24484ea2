"""The keep rule (harness/keep.py): pooled noise from the ledger, the margin, the decisions."""
import math
import random
import statistics

import pytest

from harness.keep import KeepRule, Noise, student_t

KEEP = {"baseline_runs": 3, "confirm_runs": 1, "threshold": None, "noise_sigmas": 2.0}


def row(seq, val, status="keep", confirms=None, experiment_status="ok"):
    r = {"seq": seq, "val_bpb": val, "status": status, "experiment_status": experiment_status}
    if confirms is not None:
        r["confirms"] = confirms
    return r


def test_noise_pools_repeated_runs_of_each_commit_and_the_calibration():
    records = [row(0, 2.50), row(1, 2.52, "confirm", 0), row(2, 2.48, "confirm", 0),  # baseline: var 4e-4
               row(3, 2.45, "discard"), row(4, 2.47, "confirm", 3),                 # candidate: var 2e-4
               row(5, None, "crash", experiment_status="crash"), row(6, 2.40, "discard")]  # single runs: no dof
    n = Noise.pooled(records)
    assert n.dof == 3 and n.std == pytest.approx(math.sqrt((2 * 4e-4 + 1 * 2e-4) / 3))
    cal = {"id": "abc", "noise": {"runs": 3, "std": 0.01}}
    both = Noise.pooled(records, cal)
    assert both.dof == 5 and both.std == pytest.approx(math.sqrt((2 * 4e-4 + 2e-4 + 2 * 1e-4) / 5))
    assert "calibration abc" in both.source
    assert Noise.pooled([row(0, 2.5)]).std is None  # one run: nothing measured


def test_student_t_quantiles():
    # t quantiles at the normal 2-sigma level (one-sided 0.97725), from published tables
    for dof, exact in ((2, 4.53), (4, 2.87), (10, 2.32), (1000, 2.0)):
        assert student_t(2.0, dof) == pytest.approx(exact, rel=0.05)


def test_margin_is_t_standard_errors_of_the_difference():
    rule = KeepRule(Noise(0.02, 4, "test"), 2.0, 1)
    assert rule.margin(1, 3) == pytest.approx(student_t(2.0, 4) * 0.02 * math.sqrt(1 + 1 / 3))
    assert rule.margin(2, 3) < rule.margin(1, 3)  # more runs, a smaller margin
    assert KeepRule(Noise(0.02, 4, "t"), 2.0, 1, fixed=0.01).margin(1, 3) == 0.01
    assert KeepRule(Noise(None, 0, "t"), 2.0, 1).margin(1, 3) == 0.0


def test_decisions():
    rule = KeepRule(Noise(0.02, 1000, "test"), 2.0, 1)  # a well-measured noise: t = 2
    head = 2.50
    assert rule.decide([2.40], head, 3) == "keep"  # 0.10 > 2 x 0.02 x sqrt(1 + 1/3) = 0.046
    assert rule.decide([2.48], head, 3) == "again"  # a gain within the margin: run it again
    assert rule.decide([2.48, 2.49], head, 3) == "discard"  # confirmed within noise, no runs left
    assert rule.decide([2.46, 2.45], head, 3) == "keep"  # 0.045 > 2 x 0.02 x sqrt(1/2 + 1/3) = 0.0365
    assert KeepRule(Noise(0.02, 2, "t"), 2.0, 1).decide([2.46, 2.45], head, 3) == "discard"  # 2 dof: t = 4.5
    assert rule.decide([2.55], head, 3) == "discard"  # worse: never re-run
    assert rule.decide([2.55], None) == "keep"  # nothing kept yet
    assert KeepRule(Noise(None, 0, "t"), 2.0, 1).decide([2.4999], head, 1) == "keep"  # no noise: any gain


def test_the_rule_rarely_keeps_pure_noise():
    """Simulated campaigns where no candidate is better: the rule keeps ~2% of candidates,
    the naive rule (any gain wins) about half of them."""
    rng = random.Random(0)
    sigma, keeps, naive, candidates = 0.02, 0, 0, 0
    for _ in range(300):
        base = [rng.gauss(2.5, sigma) for _ in range(3)]
        records = [row(0, base[0])] + [row(i, v, "confirm", 0) for i, v in enumerate(base[1:], 1)]
        rule = KeepRule.from_config(KEEP, records)
        head = statistics.mean(base)
        for _ in range(4):
            runs = [rng.gauss(2.5, sigma)]
            while (d := rule.decide(runs, head, 3)) == "again":
                runs.append(rng.gauss(2.5, sigma))
            keeps += d == "keep"
            naive += runs[0] < head
            candidates += 1
    assert keeps / candidates < 0.06 and naive / candidates > 0.35
