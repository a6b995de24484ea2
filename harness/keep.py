"""The keep rule: a candidate is kept only when it beats the branch head by more than noise.

    rule = KeepRule.from_config(cfg["keep"], ledger.records(), calibration, current=candidate_vals)
    rule.decide(candidate_vals, head_mean, head_runs)   # "keep", "discard" or "again" (run it once more)

The campaign knows its noise from the start: the baseline runs `keep.baseline_runs` times
(3 by default), and every experiment run more than once (the baseline, confirmation runs)
adds to a pooled standard deviation of val_bpb between runs of one commit; a calibration's
noise floor (calibrate.noise_runs) is pooled in too. A candidate with mean m_c over n_c
runs beats the head (mean m_h over n_h runs) when

    m_h - m_c > t x sigma x sqrt(1/n_c + 1/n_h)

that is, by more than t standard errors of the difference, where t is the Student-t
quantile at keep.noise_sigmas normal standard deviations (2: one-sided 2.3%) for the
noise estimate's degrees of freedom: with the baseline's 2 dof, t = 4.4; with 10, 2.3.
A candidate that gains, but not by that much, is run again (at most keep.confirm_runs
more times) before the decision; those runs add degrees of freedom to sigma too. `keep.threshold` set: a fixed val_bpb margin instead of the noise rule.
With no noise measured at all (keep.baseline_runs=1 and no calibration noise), any gain
wins, and the ledger says so.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from harness.ledger import metric


def student_t(z: float, dof: int) -> float:
    """The Student-t quantile with `dof` degrees of freedom at the normal quantile `z`
    (Cornish-Fisher expansion; within ~4% of the exact value from 2 dof up): a noise
    estimate from few runs is itself uncertain, so its margin is wider."""
    n = max(dof, 1)
    return (z + (z ** 3 + z) / (4 * n) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * n ** 2)
            + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * n ** 3))


@dataclass(frozen=True)
class Noise:
    std: float | None  # pooled val_bpb standard deviation between runs of one commit
    dof: int  # its degrees of freedom (runs beyond the first of each repeated commit)
    source: str

    @staticmethod
    def pooled(records: list[dict], calibration: dict | None = None, current: list[float] = (),
               field: str = "val_bpb") -> "Noise":
        """Pooled over the ledger's repeated commits (a row and its `confirm` rows), the
        runs of the experiment being decided (`current`) and the calibration's noise runs.
        `replay` rows (another campaign's commits, run by `autoresearch replay`) are not
        this campaign's experiments and count for nothing here."""
        # a run with no number (None, NaN, inf) measures no noise: ledger.metric is the one rule
        groups: dict[int | str, list[float]] = {"current": [v for v in map(metric, current) if v is not None]}
        for r in records:
            v = metric(r.get(field))
            if v is None or r.get("experiment_status", "ok") != "ok" or r.get("status") == "replay":
                continue
            groups.setdefault(r["confirms"] if r.get("status") == "confirm" else r["seq"], []).append(v)
        return Noise.of_groups(list(groups.values()), calibration, field)

    @staticmethod
    def of_groups(groups: list[list[float]], calibration: dict | None = None, field: str = "val_bpb") -> "Noise":
        """Pooled over groups of runs, each group the runs of one commit, and the calibration's noise runs."""
        ss = sum((len(g) - 1) * statistics.variance(g) for g in groups if len(g) > 1)
        dof = sum(len(g) - 1 for g in groups if len(g) > 1)
        parts = [f"{dof} dof from repeated runs in this campaign"] if dof else []
        cal = (calibration or {}).get("noise") if field == "val_bpb" else None  # the floor is val_bpb's
        if cal and cal.get("runs", 0) > 1 and cal.get("std") is not None:
            ss += (cal["runs"] - 1) * cal["std"] ** 2
            dof += cal["runs"] - 1
            parts.append(f"{cal['runs'] - 1} dof from calibration {calibration.get('id', '')}".rstrip())
        if not dof:
            return Noise(None, 0, "no noise measured (keep.baseline_runs=1 and no calibration noise runs)")
        return Noise(math.sqrt(ss / dof), dof, " + ".join(parts))


@dataclass(frozen=True)
class KeepRule:
    noise: Noise
    sigmas: float
    confirm_runs: int
    fixed: float | None = None  # keep.threshold

    @classmethod
    def from_config(cls, keep_cfg: dict, records: list[dict], calibration: dict | None = None,
                    current: list[float] = (), field: str = "val_bpb") -> "KeepRule":
        """The rule for `field` (lower is better): val_bpb, or a kernel campaign's
        us_per_token; keep.threshold is a val_bpb margin, so it applies to val_bpb only."""
        return cls.with_noise(keep_cfg, Noise.pooled(records, calibration, current, field), field)

    @classmethod
    def with_noise(cls, keep_cfg: dict, noise: Noise, field: str = "val_bpb") -> "KeepRule":
        """The rule for a noise measured elsewhere (a replay's runs: harness/transfer.py)."""
        fixed = keep_cfg.get("threshold") if field == "val_bpb" else None
        return cls(noise, float(keep_cfg["noise_sigmas"]), int(keep_cfg["confirm_runs"]),
                   None if fixed is None else float(fixed))

    def margin(self, n_candidate: int, n_head: int) -> float:
        """The gain (val_bpb) a candidate must exceed to be kept."""
        if self.fixed is not None:
            return self.fixed
        if self.noise.std is None:
            return 0.0
        t = student_t(self.sigmas, self.noise.dof)
        return t * self.noise.std * math.sqrt(1 / max(n_candidate, 1) + 1 / max(n_head, 1))

    def decide(self, candidate: list[float], head: list[float] | float | None, n_head: int = 1) -> str:
        """'keep', 'discard', or 'again' (a gain within the margin, with confirmation runs left).
        `head`: the head's mean (with `n_head` runs behind it) or None (nothing kept yet)."""
        if head is None:
            return "keep"
        gain = head - statistics.mean(candidate)
        margin = self.margin(len(candidate), n_head)
        if gain > margin:
            return "keep"
        if gain > 0 and len(candidate) <= self.confirm_runs:
            return "again"
        return "discard"

    def describe(self) -> dict:
        """The rule as recorded with every decision in the ledger."""
        if self.fixed is not None:
            rule, std = f"mean gain > keep.threshold={self.fixed:g}", None
        else:
            rule = (f"mean gain > t({self.sigmas:g} sigma, {self.noise.dof} dof) x sigma x sqrt(1/n_candidate + 1/n_head)"
                    if self.noise.std is not None else "any mean gain (no noise measured)")
            std = self.noise.std
        return {"rule": rule, "noise_std": std, "noise_dof": self.noise.dof, "noise_source": self.noise.source,
                "confirm_runs": self.confirm_runs}
