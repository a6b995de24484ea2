"""The harness's fixed limits for one experiment, from config and this device's calibration.

    lim = limits.resolve(cfg, calibration, budget, bk)

- allowance: the most seconds from the start of train.py to the start of the training
  clock (start-up, first batches, compile). Default: 1.5 x the frozen baseline's
  start-up as measured by calibration, + 1 s. Start-up beyond it counts as training.
- warmup_tokens: the most tokens served before the clock starts, as random rows (the
  feed; default: two optimizer steps of the preset's batch, as the baseline's untimed
  warm-up).
- grace: seconds for the handover past the run's last step (default: 2% of the budget,
  at least 1 s); the feed's deadline adds 1.5 x the run's slowest step (harness/feed.py).
- tolerance: the largest change, in nats, of a scored log-probability that the
  causality probe accepts. Default: 10 x the frozen baseline's own probe noise on this
  device and dtype (measured by calibration; zero for deterministic kernels), and never
  below the dtype's floor below.
- eval_bound: the most seconds each model runner may take (harness/score.py's Bound):
  eval.bound_factor (2) x what the frozen baseline's runner of the same role took on
  this device (calibration evaluates it as an experiment does), its forwards scaled by
  the model's FLOPs per token over the baseline's (at least 1), + eval.bound_slack_seconds
  (3). eval.runner_seconds sets a flat bound instead (no calibration needed); with
  neither, only eval.timeout_seconds limits the evaluation (the summary says so).
"""
from __future__ import annotations

from dataclasses import dataclass

from harness.budget import Budget

# nats: rounding that identical arithmetic can still differ by (a row's logits computed
# with different neighbours in its batch); a dependence on the future worth measuring is
# far above these. Low precision gets more room.
TOLERANCE_FLOOR = {"fp32": 1e-4, "bf16": 2e-3, "fp16": 2e-3}


@dataclass(frozen=True)
class Bound:
    """The most wall seconds one runner may take, from its launch to its last answer, for
    `tokens` forwarded: the device's frozen baseline took `startup` seconds to load and
    `per_token` seconds per token (its scored runner's and its probe runner's, each for
    its own role: a probe's few batches carry its first forward's cost), x `scale` (the
    model's FLOPs per token over the baseline's, at least 1), x `factor`, + `slack`.
    Training or adapting at load or at the first forward is compute off the clock: it
    ends the evaluation `timeout` here, whatever the probe says."""
    startup: dict  # role -> seconds the baseline's runner took from its launch to LOADED
    per_token: dict  # role -> seconds per token of the baseline's forwards
    scale: float
    factor: float
    slack: float
    source: str

    def seconds(self, role: str, tokens: int) -> float:
        return self.factor * (self.startup[role] + self.per_token[role] * tokens * self.scale) + self.slack


@dataclass(frozen=True)
class Limits:
    allowance: float
    allowance_source: str
    warmup_tokens: int
    grace: float
    tolerance: float
    tolerance_source: str
    probe_batches: int


def requests_per_step(cfg: dict) -> int:
    """Batch requests per optimizer step of the preset (its micro-batches), at least 1."""
    m = cfg["model"]
    per_request = int(m["device_batch_size"]) * int(cfg["data"]["max_seq_len"])
    return max(1, int(m["total_batch_size"]) // max(1, per_request))


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
        # the workload's noise (rows re-batched in one process) and the baseline's own probe
        # in its real runners (fp32 kernels pick other paths for other batch shapes)
        noise = max(float(cal["probe_noise"]), float(cal.get("eval_probe_diff") or 0.0))
        tol = max(floor, 10 * noise)
        t_src = (f"max({dtype_name} floor {floor:g}, 10 x the frozen baseline's probe noise "
                 f"{noise:.3g}) on {cal['device']}")
    else:
        tol, t_src = floor, f"the {dtype_name} floor (no calibration at hand)"
    probes = int(ev["probe_batches"]) if ev.get("causality_check", True) else 0
    return Limits(allowance, a_src, warmup, grace, tol, t_src, probes)


def eval_bound(cfg: dict, cal: dict | None, model_flops_per_token: float | None) -> Bound | None:
    """Each runner's bound for a model of `model_flops_per_token` (see the module's doc)."""
    ev = cfg["eval"]
    factor, slack = float(ev.get("bound_factor", 2.0)), float(ev.get("bound_slack_seconds", 3.0))
    if ev.get("runner_seconds") is not None:
        flat = float(ev["runner_seconds"])
        return Bound({"scored": flat, "probe": flat}, {"scored": 0.0, "probe": 0.0}, 1.0, 1.0, 0.0,
                     f"eval.runner_seconds={flat:g}")
    timing = (cal or {}).get("eval_timing")
    if not timing:
        return None
    base = float(cal.get("model_flops_per_token") or 0)
    scale = max(1.0, float(model_flops_per_token) / base) if base > 0 and model_flops_per_token else 1.0
    startup = {role: float(t["startup"]) for role, t in timing.items()}
    per_token = {role: float(t["forward"]) / max(1, int(t["tokens"])) for role, t in timing.items()}
    return Bound(startup, per_token, scale, factor, slack,
                 f"{factor:g} x the frozen baseline's runner on {cal['device']}"
                 f"{f', forwards x {scale:.2f} for the model size' if scale > 1 else ''}, + {slack:g} s "
                 f"(calibration {cal['id']})")
