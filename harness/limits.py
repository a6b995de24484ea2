"""The harness's fixed limits for one experiment, from config and this device's calibration.

    lim = limits.resolve(cfg, calibration, budget, bk)

- allowance: the most seconds from the start of train.py to the start of the training
  clock (start-up, first batches, compile). Default: 1.5 x the frozen baseline's
  start-up as measured by calibration, + 1 s. Start-up beyond it counts as training.
- warmup_tokens: the most tokens served before the clock starts, as random rows (the
  feed; default: two optimizer steps of the preset's batch, as the baseline's untimed
  warm-up).
- grace: seconds past the budget before a still-training run is cut off (default:
  2% of the budget, at least 1 s; the feed also allows two of the run's own steps, at
  most 5% of the budget).
- tolerance: the largest change, in nats, of a scored log-probability that the
  causality probe accepts. Default: 10 x the frozen baseline's own probe noise on this
  device and dtype (measured by calibration; zero for deterministic kernels), and never
  below the dtype's floor below.
"""
from __future__ import annotations

from dataclasses import dataclass

from harness.budget import Budget

# nats: rounding that identical arithmetic can still differ by (a row's logits computed
# with different neighbours in its batch); a dependence on the future worth measuring is
# far above these. Low precision gets more room.
TOLERANCE_FLOOR = {"fp32": 1e-4, "bf16": 2e-3, "fp16": 2e-3}


@dataclass(frozen=True)
class Limits:
    allowance: float
    allowance_source: str
    warmup_tokens: int
    grace: float
    tolerance: float
    tolerance_source: str
    probe_batches: int


def warmup_tokens(cfg: dict) -> int:
    """The most tokens served before the clock starts: budget.warmup_tokens, or two optimizer steps."""
    warmup = cfg["budget"].get("warmup_tokens")
    return int(warmup) if warmup is not None else 2 * int(cfg["model"]["total_batch_size"])


def resolve(cfg: dict, cal: dict | None, budget: Budget, dtype_name: str) -> Limits:
    b, ev = cfg["budget"], cfg["eval"]
    if b.get("allowance_seconds") is not None:
        allowance, a_src = float(b["allowance_seconds"]), "budget.allowance_seconds"
    elif cal and cal.get("startup_seconds"):
        allowance = 1.5 * float(cal["startup_seconds"]) + 1.0
        a_src = f"1.5 x the frozen baseline's start-up {cal['startup_seconds']:.1f} s + 1 s (calibration {cal['id']})"
    else:
        raise ValueError("no start-up allowance: set budget.allowance_seconds or calibrate this device")
    warmup = warmup_tokens(cfg)
    grace = b.get("grace_seconds")
    grace = float(grace) if grace is not None else max(1.0, 0.02 * budget.seconds)
    floor = TOLERANCE_FLOOR.get(dtype_name, 2e-3)
    if ev.get("probe_tolerance") is not None:
        tol, t_src = float(ev["probe_tolerance"]), "eval.probe_tolerance"
    elif cal and cal.get("probe_noise") is not None:
        tol = max(floor, 10 * float(cal["probe_noise"]))
        t_src = (f"max({dtype_name} floor {floor:g}, 10 x the frozen baseline's probe noise "
                 f"{cal['probe_noise']:.3g}) on {cal['device']}")
    else:
        tol, t_src = floor, f"the {dtype_name} floor (no calibration at hand)"
    probes = int(ev["probe_batches"]) if ev.get("causality_check", True) else 0
    return Limits(allowance, a_src, warmup, grace, tol, t_src, probes)
