"""The keep decision for one candidate's runs: run it again, or keep, discard, crash.

    decision = KeepDecision(cfg["keep"], ledger.records(), calibration)
    decision.again(seq, runs)                   # one more run before deciding?
    verdict = decision.verdict(seq, runs, known)  # status, mean, and the rule for the ledger

harness/keep.py is the statistics (the pooled noise, the margin); this module applies it
to a campaign: the baseline runs keep.baseline_runs times and is kept when it scores; a
candidate is compared with the branch head (the last kept row, the mean of its runs).
A run that did not score (a crash, no number, NaN or inf: `scored`) makes its
candidate a crash, whatever the other runs gave: there is no mean to compare.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass

from harness.campaign_state import Known
from harness.keep import KeepRule
from harness.ledger import better, metric
from harness.ledger_rows import kept_speed, kept_value, us_per_token


def scored(run: dict) -> float | None:
    """A run's val_bpb when it scored (status ok and a finite number), else None."""
    return metric(run.get("val_bpb")) if run.get("status") == "ok" else None


def mean_of(runs: list[dict]) -> float | None:
    """The mean val_bpb of runs that all scored; None when any did not."""
    vals = [scored(r) for r in runs]
    return statistics.mean(vals) if vals and None not in vals else None


@dataclass(frozen=True)
class Head:
    """The branch head: the last kept row's value (and speed), and how many runs it is the mean of."""
    value: float | None  # None: nothing kept yet
    runs: int
    speed: float | None = None  # its mean us_per_token

    @classmethod
    def of(cls, records: list[dict]) -> "Head":
        kept = [r for r in records if r.get("status") == "keep"]
        if not kept:
            return cls(None, 0)
        return cls(kept_value(kept[-1]), int(kept[-1].get("runs") or 1), kept_speed(kept[-1]))


def speeds_of(runs: list[dict]) -> list[float] | None:
    """Each run's us_per_token; None when one has none (it did not train)."""
    speeds = [us_per_token(r) for r in runs]
    return None if not speeds or None in speeds else speeds


@dataclass(frozen=True)
class Verdict:
    status: str  # keep, discard, crash, refused (or a known outcome's)
    mean: float | None  # the mean of the runs (None: one did not score)
    rule: KeepRule
    head: Head
    speed_rule: KeepRule | None = None  # a kernel campaign's: us_per_token
    speed: float | None = None  # the mean us_per_token of the runs

    def record(self, n_runs: int) -> dict:
        """The ledger's `keep_rule` field: the rule, its noise, the gain and the margin (and,
        in a kernel campaign, the same for the speed)."""
        best, n_head = self.head.value, self.head.runs
        out = {**self.rule.describe(), "best_before": best, "head_runs": n_head,
               "gain": None if best is None or self.mean is None else best - self.mean,
               "margin": None if best is None else self.rule.margin(n_runs, n_head)}
        if self.speed_rule is not None:
            head = self.head.speed
            out["speed"] = {**self.speed_rule.describe(), "us_per_token_before": head,
                            "gain": None if head is None or self.speed is None else head - self.speed,
                            "margin": None if head is None else self.speed_rule.margin(n_runs, n_head)}
        return out


class KeepDecision:
    """The decision against the ledger as it is now (`records`)."""

    def __init__(self, keep_cfg: dict, records: list[dict], calibration: dict | None, speed: bool = False):
        """`speed`: a kernel campaign's rule: kept when faster end to end (us_per_token, by the
        harness's clock and feed) beyond the noise, and val_bpb no worse beyond its noise."""
        self.keep_cfg, self.records, self.calibration, self.speed = keep_cfg, records, calibration, speed
        self.head = Head.of(records)

    def speed_rule(self, current: list[float] = ()) -> KeepRule:
        return KeepRule.from_config(self.keep_cfg, self.records, None, current, field="us_per_token")

    def rule(self, current: list[float] = ()) -> KeepRule:
        """The keep rule with the noise measured so far, the candidate's runs (`current`) included."""
        return KeepRule.from_config(self.keep_cfg, self.records, self.calibration, current)

    def again(self, seq: int, runs: list[dict]) -> bool:
        """Run the candidate again? The baseline runs keep.baseline_runs times (its spread is
        the campaign's first noise measurement); a candidate that beats the head, but by
        less than the noise margin, is re-run up to keep.confirm_runs times."""
        mean = mean_of(runs)
        if mean is None:
            return False  # a run that did not score decides it: a crash
        if seq == 0:
            return len(runs) < max(1, int(self.keep_cfg["baseline_runs"]))
        if self.speed:
            speeds = speeds_of(runs)
            if speeds is None or self.head.speed is None:
                return False
            return self.speed_rule(speeds).decide(speeds, self.head.speed, self.head.runs) == "again"
        if self.head.value is None or not better(mean, self.head.value):
            return False
        vals = [scored(r) for r in runs]
        return self.rule(vals).decide(vals, self.head.value, self.head.runs) == "again"

    def verdict(self, seq: int, runs: list[dict], known: Known | None = None) -> Verdict:
        mean = mean_of(runs)
        vals = [scored(r) for r in runs] if mean is not None else []
        rule = self.rule(vals)
        if known is not None:
            status = known.status
        elif runs[0]["status"] == "refused":
            status = "refused"
        elif mean is None:
            status = "crash"
        elif seq == 0:
            status = "keep"  # the baseline is the head to beat
        elif self.speed:
            return self._speed_verdict(runs, mean, vals, rule)
        elif not better(mean, self.head.value):
            status = "discard"  # no gain at all: no margin to ask about
        else:
            status = "keep" if rule.decide(vals, self.head.value, self.head.runs) == "keep" else "discard"
        speeds = speeds_of(runs) if self.speed else None
        return Verdict(status, mean, rule, self.head, self.speed_rule(speeds or []) if self.speed else None,
                       statistics.mean(speeds) if speeds else None)

    def _speed_verdict(self, runs: list[dict], mean: float, vals: list[float], rule: KeepRule) -> Verdict:
        """Kept when faster beyond the speed noise and val_bpb not worse beyond its own."""
        speeds = speeds_of(runs)
        speed_rule = self.speed_rule(speeds or [])
        faster = (speeds is not None and self.head.speed is not None
                  and speed_rule.decide(speeds, self.head.speed, self.head.runs) == "keep")
        worse = self.head.value is not None and mean - self.head.value > rule.margin(len(vals), self.head.runs)
        return Verdict("keep" if faster and not worse else "discard", mean, rule, self.head, speed_rule,
                       statistics.mean(speeds) if speeds else None)
