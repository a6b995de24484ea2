"""The val_bpb noise floor: the frozen baseline run as `runs` whole experiments under the
normalized budget, and the spread of their val_bpb (`calibrate.noise_runs`).

    noise.floor(cfg, cal, runs=3, log=print)   # {"runs", "val_bpb", "mean", "std"}

Kept beside the calibration it belongs to; the keep rule (harness/keep.py) pools it with
the campaign's own repeated runs. Measuring the device is calibration's job
(harness/calibration.py); this runs experiments, so it sits above both.
"""
from __future__ import annotations

import copy
import statistics

from harness import budget as budget_mod
from harness import calibration_store, experiment
from harness.calibration import CalibrationError
from harness.workload import BASELINE


def floor(cfg: dict, cal: dict, runs: int, log) -> dict:
    """Spread of the frozen baseline's val_bpb over `runs` experiments, normalized budget."""
    c = copy.deepcopy(cfg)
    c.update(train_file=str(BASELINE), quiet=True)
    c["budget"]["mode"] = "normalized"
    budget = budget_mod.resolve(c, cal)
    root = calibration_store.directory(cfg) / "noise" / cal["id"]
    values = []
    for i in range(runs):
        log(f"calibrate: noise run {i + 1}/{runs} ...")
        out = experiment.run(c, root / f"run{i}", budget, own_calibration=cal)
        if out["status"] == "interrupted":
            raise KeyboardInterrupt
        if out["status"] != "ok":
            raise CalibrationError(f"noise run {i + 1} failed ({out['status']}): {out.get('reason', '')}")
        values.append(out["val_bpb"])
        log(f"calibrate: noise run {i + 1}/{runs}: val_bpb {out['val_bpb']:.6f}")
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"runs": runs, "val_bpb": values, "mean": statistics.mean(values), "std": std}
