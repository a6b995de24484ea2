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
from harness.ledger_rows import kept_value


def scored(run: dict) -> float | None:
    """A run's val_bpb when it scored (status ok and a finite number), else None."""
    return metric(run.get("val_bpb")) if run.get("status") == "ok" else None


def mean_of(runs: list[dict]) -> float | None:
    """The mean val_bpb of runs that all scored; None when any did not."""
    vals = [scored(r) for r in runs]
    return statistics.mean(vals) if vals and None not in vals else None


@dataclass(frozen=True)
class Head:
    """The branch head: the last kept row's value and how many runs it is the mean of."""
    value: float | None  # None: nothing kept yet
    runs: int

    @classmethod
    def of(cls, records: list[dict]) -> "Head":
        kept = [r for r in records if r.get("status") == "keep"]
        return cls(kept_value(kept[-1]), int(kept[-1].get("runs") or 1)) if kept else cls(None, 0)


@dataclass(frozen=True)
class Verdict:
    status: str  # keep, discard, crash, refused (or a known outcome's)
    mean: float | None  # the mean of the runs (None: one did not score)
    rule: KeepRule
    head: Head

    def record(self, n_runs: int) -> dict:
        """The ledger's `keep_rule` field: the rule, its noise, the gain and the margin."""
        best, n_head = self.head.value, self.head.runs
        return {**self.rule.describe(), "best_before": best, "head_runs": n_head,
                "gain": None if best is None or self.mean is None else best - self.mean,
                "margin": None if best is None else self.rule.margin(n_runs, n_head)}


class KeepDecision:
    """The decision against the ledger as it is now (`records`)."""

    def __init__(self, keep_cfg: dict, records: list[dict], calibration: dict | None):
        self.keep_cfg, self.records, self.calibration = keep_cfg, records, calibration
        self.head = Head.of(records)

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
        elif not better(mean, self.head.value):
            status = "discard"  # no gain at all: no margin to ask about
        else:
            status = "keep" if rule.decide(vals, self.head.value, self.head.runs) == "keep" else "discard"
        return Verdict(status, mean, rule, self.head)
