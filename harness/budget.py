"""Budget modes: what an experiment's budget means on this device (docs/architecture.md,
"Budget and calibration").

- wall: budget.seconds of training, as upstream.
- normalized (default): budget.reference_seconds on a reference device; here
  wall = reference_seconds x reference tokens/s / this device's calibrated tokens/s.
- tokens: the same number of training tokens everywhere (reference_seconds x reference
  tokens/s): identical step counts on every device.
- flops: the same training FLOPs everywhere: those tokens x the frozen baseline's
  FLOPs/token, by the harness's rule (6 x the model's floating-point elements, counted
  in the handed-over file); a bigger model gets fewer steps.
The reference (budget.reference) is `default` (the preset's row in
conf/reference_devices.yaml), a row name there, `self`, a calibration's id, or the path of
a calibration JSON.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

from omegaconf import OmegaConf

from harness import calibration_store
from harness.checks import calibration_problem
from harness.config import CONF_DIR

TABLE = CONF_DIR / "reference_devices.yaml"


class BudgetError(ValueError):
    pass


@dataclass
class Budget:
    mode: str
    seconds: float  # wall seconds of training on this device (tokens/flops: an estimate)
    tokens: int | None = None
    flops: float | None = None
    reference: str = ""  # what the reference was, for the record
    reason: str = ""  # one line: which budget and why

    def settings(self) -> dict:
        """What train.py sees through prepare (TIME_BUDGET, TOKEN_BUDGET, FLOP_BUDGET)."""
        return asdict(self)


def load_table(path: Path = TABLE) -> dict:
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)


def reference_throughput(cfg: dict, own: dict | None) -> tuple[float, str]:
    """(tokens/s of the reference device for cfg's preset, a description of it)."""
    ref, preset = cfg["budget"]["reference"], cfg["model"]["name"]
    if ref == "self":
        _need(own, "budget.reference=self")
        return own["tokens_per_s"], f"this device ({own['device']}, calibrated)"
    table = load_table()
    if ref == "default":
        ref = table["default"].get(preset)
        if ref is None:
            raise BudgetError(f"conf/reference_devices.yaml has no default reference for model={preset}")
    if ref in table["devices"]:
        row = table["devices"][ref].get(preset)
        if row is None:
            raise BudgetError(f"reference device {ref!r} has no throughput for model={preset} "
                              f"in conf/reference_devices.yaml")
        how = f"measured {row['date']}" if row["status"] == "measured" else "estimated"
        return float(row["tokens_per_s"]), f"{ref} ({table['devices'][ref]['device']}; {how})"
    cal = _find_calibration(ref, cfg)
    if cal["preset"] != preset:
        raise BudgetError(f"budget.reference={ref} is a calibration of model={cal['preset']}, not model={preset}")
    return float(cal["tokens_per_s"]), f"{cal['device']} (calibration {cal['id']}, {cal['created_iso']})"


def _find_calibration(ref: str, cfg: dict) -> dict:
    path = Path(ref).expanduser()
    if path.suffix == ".json" or path.exists():
        return _checked_calibration(ref, path)
    if re.fullmatch(r"[0-9a-f]{6,12}", ref):
        hits = calibration_store.by_id(cfg, ref)
        if hits:
            return _checked_calibration(ref, hits[-1])
    names = ", ".join(load_table()["devices"])
    raise BudgetError(f"budget.reference={ref!r} is neither 'default', 'self', a row of conf/reference_devices.yaml "
                      f"({names}), a calibration id under {calibration_store.directory(cfg)}, nor a calibration JSON path")


def _checked_calibration(ref: str, path: Path) -> dict:
    """The calibration JSON at `path`, whose fields the budget reads: one clear line when
    it is unreadable or a field has the wrong type, not a TypeError later."""
    cal = calibration_store.load(path)
    if cal is None:
        raise BudgetError(f"budget.reference={ref}: no readable calibration JSON at {path}")
    problem = calibration_problem(cal)
    if problem:
        raise BudgetError(f"budget.reference={ref}: the calibration at {path} is unreadable ({problem})")
    return cal


def _need(own: dict | None, what: str) -> None:
    if own is None:
        raise BudgetError(f"{what} needs this device's calibration")


def check_reference(cfg: dict) -> None:
    """Raise BudgetError now for a reference that names nothing, before a calibration of
    this device spends half a minute on a budget that cannot be resolved."""
    if cfg["budget"]["mode"] != "wall" and cfg["budget"]["reference"] != "self":
        reference_throughput(cfg, None)


def needs_calibration(cfg: dict) -> bool:
    """Every mode but wall derives its length from calibration; every mode takes its
    start-up allowance and the causality probe's tolerance from it, unless both are set."""
    ev = cfg["eval"]
    fixed = cfg["budget"].get("allowance_seconds") is not None and (
        not ev.get("causality_check", True) or ev.get("probe_tolerance") is not None)
    return cfg["budget"]["mode"] != "wall" or not fixed


def resolve(cfg: dict, own: dict | None) -> Budget:
    """The budget for this run; `own` is this device's calibration (not needed for wall)."""
    b = cfg["budget"]
    mode = b["mode"]
    if mode == "wall":
        # explicit seconds: the bounds guard derived budgets only
        return Budget("wall", float(b["seconds"]), reason=f"wall: {b['seconds']:g} s of training (budget.seconds)")
    _need(own, f"budget.mode={mode}")
    ref_tps, ref_desc = reference_throughput(cfg, own)
    ref_s, own_tps = float(b["reference_seconds"]), float(own["tokens_per_s"])
    work = ref_s * ref_tps  # tokens the reference device trains in reference_seconds
    seconds = work / own_tps
    if mode == "normalized":
        why = (f"normalized: {ref_s:g} s on {ref_desc} at {ref_tps:,.0f} tokens/s = {seconds:.1f} s here at "
               f"{own_tps:,.0f} tokens/s (calibration {own['id']})")
        return _bounded(Budget("normalized", seconds, reference=ref_desc, reason=why), b)
    tokens = int(round(work))
    if mode == "tokens":
        why = f"tokens: {tokens:,} training tokens ({ref_s:g} s on {ref_desc}); ~{seconds:.1f} s here"
        return _bounded(Budget("tokens", seconds, tokens=tokens, reference=ref_desc, reason=why), b)
    if mode == "flops":
        flops = work * float(own["model_flops_per_token"])  # the frozen baseline's, by the harness's rule
        why = f"flops: {flops:.3e} training FLOPs ({ref_s:g} s on {ref_desc}); ~{seconds:.1f} s here for the baseline"
        return _bounded(Budget("flops", seconds, flops=flops, reference=ref_desc, reason=why), b)
    raise BudgetError(f"unknown budget.mode={mode!r}")


def _bounded(budget: Budget, b: dict) -> Budget:
    lo, hi = float(b["min_seconds"]), float(b["max_seconds"])
    if b["force"] or lo <= budget.seconds <= hi:
        return budget
    side = "short" if budget.seconds < lo else "long"
    advice = ("a larger model preset (or a longer budget.reference_seconds)" if side == "short"
              else "a smaller model preset (model=tiny on a CPU), another budget.reference, or budget.mode=wall")
    raise BudgetError(f"the budget is {budget.seconds:,.1f} s of training here, too {side} "
                      f"(bounds {lo:g}-{hi:g} s, budget.min_seconds/max_seconds). {budget.reason}. "
                      f"Pick {advice}, or set budget.force=true.")
