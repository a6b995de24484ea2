"""The transfer matrix: how each kept discovery of one campaign fares on another device.

    judge = Judge(cfg["keep"], calibration, baseline_runs, [runs of every cell], speed=False)
    judge.cell(runs)          # {"val_bpb_mean", "runs", "gain", "margin", "verdict"}
    print(table(matrix))

The statistics are the keep decision's (harness/keep.py): the noise is pooled over the
target's repeated runs of one tree (the baseline's runs, each discovery's repeats) and the
target's calibration noise floor; a cell `helps` when its mean beats the baseline's by
more than the margin t x sigma x sqrt(1/n + 1/n_baseline), `hurts` when it loses by
more, `neutral` in between. A run that did not score makes its cell `hurts` (it breaks
training there); a cell that could not be built is `not applied`. In a kernel campaign
the verdict is on speed (us_per_token), val_bpb no worse beyond its margin, as its keep
rule is. Every number comes from the target's ledger rows, measured by the harness.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass

from harness.keep import KeepRule, Noise
from harness.ledger import metric


@dataclass(frozen=True)
class Runs:
    """The runs of one tree on the target, from its ledger rows."""
    vals: tuple  # each run's val_bpb (None: it did not score)
    speeds: tuple  # each run's us_per_token (None: not measured)
    failure: str = ""  # the first run that did not score: its status and reason

    @classmethod
    def of_rows(cls, rows: list[dict]) -> "Runs":
        vals = tuple(metric(r.get("val_bpb")) if r.get("experiment_status") == "ok" else None for r in rows)
        bad = next((r for r in rows if r.get("experiment_status") != "ok" or metric(r.get("val_bpb")) is None), None)
        failure = ""
        if bad is not None:
            reason = " ".join(str(bad.get("reason") or "").split())[:200]
            failure = f"{bad.get('experiment_status')}" + (f": {reason}" if reason else "")
        return cls(vals, tuple(metric(r.get("us_per_token")) for r in rows), failure)

    def __len__(self) -> int:
        return len(self.vals)

    @property
    def mean(self) -> float | None:
        return None if self.failure or not self.vals else statistics.mean(self.vals)

    @property
    def speed(self) -> float | None:
        return None if not self.speeds or None in self.speeds else statistics.mean(self.speeds)


class Judge:
    """Verdicts against the target's baseline, with the noise of every run of the replay."""

    def __init__(self, keep_cfg: dict, calibration: dict | None, baseline: Runs, cells: list[Runs],
                 speed: bool = False):
        self.baseline, self.speed = baseline, speed
        everything = [baseline, *cells]
        scored = [list(r.vals) for r in everything if r.mean is not None]
        self.rule = KeepRule.with_noise(keep_cfg, Noise.of_groups(scored, calibration))
        timed = [list(r.speeds) for r in everything if r.speed is not None]
        self.speed_rule = KeepRule.with_noise(keep_cfg, Noise.of_groups(timed, None, "us_per_token"), "us_per_token")

    def margin(self, n: int) -> float:
        """The val_bpb gain a cell of n runs needs to count as helps (or to lose, as hurts)."""
        return self.rule.margin(n, len(self.baseline))

    def cell(self, runs: Runs | None, why: str = "") -> dict:
        if runs is None:
            return {"val_bpb_mean": None, "runs": 0, "gain": None, "verdict": "not applied", "why": why}
        if runs.mean is None:
            return {"val_bpb_mean": None, "runs": len(runs), "gain": None, "verdict": "hurts",
                    "why": f"did not score on the target ({runs.failure})"}
        gain = self.baseline.mean - runs.mean
        margin = self.margin(len(runs))
        verdict = "helps" if gain > margin else "hurts" if -gain > margin else "neutral"
        out = {"val_bpb_mean": runs.mean, "runs": len(runs), "gain": gain, "margin": margin, "verdict": verdict}
        if self.speed:
            out.update(self._speed(runs, worse=-gain > margin))
        return out

    def _speed(self, runs: Runs, worse: bool) -> dict:
        """A kernel campaign's verdict: faster beyond the speed noise, val_bpb not worse beyond its margin."""
        base, mine = self.baseline.speed, runs.speed
        if base is None or mine is None:
            return {"us_per_token_mean": mine, "speed_gain": None, "verdict": "hurts" if worse else "neutral"}
        gain = base - mine
        margin = self.speed_rule.margin(len(runs), len(self.baseline))
        verdict = ("hurts" if worse or -gain > margin else "helps" if gain > margin else "neutral")
        return {"us_per_token_mean": mine, "speed_gain": gain, "speed_margin": margin, "verdict": verdict}


def _cell_text(cell: dict) -> str:
    gain = cell.get("speed_gain") if cell.get("speed_gain") is not None else cell.get("gain")
    return f"{cell['verdict']:<11} " + (f"{gain:+.4f}" if gain is not None else "-")


def table(m: dict) -> str:
    """The matrix printed: one line per discovery, its gain on the source and its verdicts here."""
    speed = any("speed_gain" in (r.get(k) or {}) for r in m["rows"] for k in ("individual", "cumulative"))
    unit = "us/token here, val_bpb on the source" if speed else "val_bpb"
    b, budget = m["baseline"], m["budget"]
    noise = f"{m['noise']:.4f}" if m["noise"] is not None else "none measured"
    lines = [f"replay of {m['source']['tag']}/{m['source']['slot']} on {m['target']['tag']}/{m['target']['slot']} "
             f"(budget {budget['seconds']:.1f} s, {budget['mode']}): baseline val_bpb {b['val_bpb_mean']:.6f} over "
             f"{b['runs']} run(s); noise {noise}, margin {m['margin']:.4f}; gains in {unit}, positive = better",
             f"{'seq':<5}{'commit':<14}{'source gain':<13}{'individual':<21}{'cumulative':<21}description"]
    for r in m["rows"]:
        src = f"{r['source_gain']:+.4f}" if r["source_gain"] is not None else "-"
        lines.append(f"{r['seq']:<5}{r['commit']:<14}{src:<13}{_cell_text(r['individual']):<21}"
                     f"{_cell_text(r['cumulative']):<21}{r['description'][:60]}")
        for mode in ("individual", "cumulative"):
            if r[mode].get("why"):
                lines.append(f"{'':<5}{mode}: {r[mode]['why'][:150]}")
    if not m["rows"]:
        lines.append("(the source kept nothing after its baseline: nothing to replay)")
    return "\n".join(lines)
