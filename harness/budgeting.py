"""A run's budget, decided in one place: `autoresearch experiment`, `autoresearch
calibrate` and a campaign (harness/campaign.py) all call here.

    budget, cal = budgeting.decide(cfg)   # checks the reference, calibrates when needed
    cal = budgeting.calibrated(cfg)       # this device's calibration (+ noise floor if asked)

The pieces it orders: harness/budget.py is the arithmetic (a mode, a reference and a
calibration in; seconds, tokens or FLOPs out); harness/calibration.py measures the device
(cached by fingerprint); harness/noise.py runs the frozen baseline as experiments for the
val_bpb noise floor. The reference is checked before a calibration spends half a minute on
a budget that could not be resolved.
"""
from __future__ import annotations

from harness import budget as budget_mod
from harness import calibration, noise


def _say(message: str) -> None:
    print(message, flush=True)


def calibrated(cfg: dict, log=_say, limits_only: bool = False) -> dict:
    """This device's calibration for cfg's preset (cached when valid, else measured), with
    the noise floor of calibrate.noise_runs experiments when asked for and not yet there
    (a calibration interrupted during its noise runs keeps its measurement).
    `limits_only`: see calibration.calibrate (a busy machine's measurement is kept)."""
    cal = calibration.calibrate(cfg, log, limits_only=limits_only)
    runs = int(cfg["calibrate"]["noise_runs"])
    if runs > 0 and int((cal.get("noise") or {}).get("runs", 0)) < runs:
        cal["noise"] = noise.floor(cfg, cal, runs, log)
        calibration.keep(cal, cfg["calibrate"])
    return cal


def throughput_sets_budget(cfg: dict) -> bool:
    """Whether this device's measured tokens/s sets the budget: a normalized budget, or
    any derived one whose reference is this device (budget.reference=self). The others
    (wall; tokens and flops against another device) take only their limits from the
    measurement, which a busy machine must not stop."""
    b = cfg["budget"]
    return b["mode"] == "normalized" or (b["mode"] != "wall" and b["reference"] == "self")


def decide(cfg: dict, own: dict | None = None, log=_say) -> tuple[budget_mod.Budget, dict | None]:
    """The run's budget and this device's calibration (where the start-up allowance and
    the probe's tolerance come from); calibrates first when needed and none is cached."""
    budget_mod.check_reference(cfg)
    if own is None and budget_mod.needs_calibration(cfg):
        own = calibrated(cfg, log, limits_only=not throughput_sets_budget(cfg))
    return budget_mod.resolve(cfg, own), own


HARNESS_SECONDS = 5.0  # set-up, the guard, the self-test's cache, the summary: a few seconds a run


def experiment_seconds(budget: budget_mod.Budget, cal: dict | None) -> tuple[float, str]:
    """About how long one experiment takes on this device, from its calibration: training
    (tokens/flops: their estimate), the frozen baseline's start-up and evaluation."""
    startup = float((cal or {}).get("startup_seconds") or 0.0)
    timing = (cal or {}).get("eval_timing") or {}
    evaluation = sum(float(t["startup"]) + float(t["forward"]) for t in timing.values())
    total = budget.seconds + startup + evaluation + HARNESS_SECONDS
    how = (f"{budget.seconds:.0f} s of training + ~{startup:.0f} s start-up + ~{evaluation:.0f} s evaluation"
           + ("" if cal else " (no calibration: start-up and evaluation unknown)")
           + (f", from calibration {cal['id']}" if cal else ""))
    return total, how


def cost_line(budget: budget_mod.Budget, cal: dict | None, experiments: int | None = None) -> str:
    """One line saying what a run (and a campaign of `experiments` of them) will take here."""
    each, how = experiment_seconds(budget, cal)
    line = f"~{_duration(each)} per experiment here ({how})"
    if experiments:
        line += (f"; {experiments} runs to go: ~{_duration(each * experiments)} in all, plus the agent's own time "
                 f"and any confirmation re-runs")
    return line


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
