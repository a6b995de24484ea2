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


def calibrated(cfg: dict, log=_say) -> dict:
    """This device's calibration for cfg's preset (cached when valid, else measured), with
    the noise floor of calibrate.noise_runs experiments when asked for and not yet there
    (a calibration interrupted during its noise runs keeps its measurement)."""
    cal = calibration.calibrate(cfg, log)
    runs = int(cfg["calibrate"]["noise_runs"])
    if runs > 0 and int((cal.get("noise") or {}).get("runs", 0)) < runs:
        cal["noise"] = noise.floor(cfg, cal, runs, log)
        calibration.keep(cal, cfg["calibrate"])
    return cal


def decide(cfg: dict, own: dict | None = None, log=_say) -> tuple[budget_mod.Budget, dict | None]:
    """The run's budget and this device's calibration (where the start-up allowance and
    the probe's tolerance come from); calibrates first when needed and none is cached."""
    budget_mod.check_reference(cfg)
    if own is None and budget_mod.needs_calibration(cfg):
        own = calibrated(cfg, log)
    return budget_mod.resolve(cfg, own), own
