"""`autoresearch calibrate` and calibrated budgets on CPU (two thread counts stand in for
two devices of different speed)."""
import json
import subprocess
import sys
import time

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow

QUICK = ["backend=cpu", "model=tiny", "calibrate.repeats=3", "calibrate.window_seconds=0.7", "calibrate.warmup_steps=2"]
STEADY = "calibrate.max_cv=1"  # short test windows are noisy; only the noise test cares


def calibrate(*extra, timeout=180):
    res = run_cli("calibrate", *QUICK, *extra, timeout=timeout)
    assert res.returncode == 0, res.stdout + res.stderr
    return res


def saved(res) -> dict:
    path = res.stdout.split("saved")[-1].split()[0]
    return json.loads(open(path).read())


def test_calibrate_measures_then_serves_from_cache(cache_dir, tmp_path):
    out = tmp_path / "mine.json"
    res = calibrate("backend.threads=1", "calibrate.force=true", f"calibrate.out={out}")
    for needle in ("matmul (fp32)", "matmul (bf16)"):
        if needle in res.stdout:
            break
    else:
        pytest.fail("no matmul row:\n" + res.stdout)
    for row in ("GFLOP/s", "GB/s", "tokens/s (median of 3, CV", "MFU (datasheet peak)  n/a", "MFU (measured matmul)"):
        assert row in res.stdout, row
    cal = saved(res)
    assert cal["tokens_per_s"] > 0 and len(cal["tokens_per_s_windows"]) == 3
    assert cal["fingerprint"]["threads"] == 1 and cal["preset"] == "tiny"
    assert json.loads(out.read_text())["id"] == cal["id"]  # calibrate.out holds a copy
    t0 = time.time()
    again = calibrate("backend.threads=1", STEADY)
    assert "cached" in again.stdout and "throughput window" not in again.stdout
    assert saved(again)["created"] == cal["created"]
    assert time.time() - t0 < 30  # no measurement: start-up only
    stale = calibrate("backend.threads=1", "calibrate.max_age_hours=0", STEADY)
    assert "h old" in stale.stdout and "throughput window" in stale.stdout
    assert saved(stale)["created"] > cal["created"]
    noisy = calibrate("backend.threads=1", "calibrate.max_cv=0")
    if saved(stale)["cv"] > 0:  # any spread at all is "too noisy" at max_cv=0
        assert "is noisy" in noisy.stdout and "throughput window" in noisy.stdout


def test_other_load_during_calibration_is_warned_about(cache_dir):
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        res = calibrate("backend.threads=1", "calibrate.force=true")
    finally:
        hog.kill()
    assert "WARNING: other processes used" in res.stdout
    assert saved(res)["load_warning"]


def test_tokens_mode_gives_identical_steps_on_both_devices(cache_dir, tmp_path):
    steps = {}
    for threads in (1, 2):
        run_dir = tmp_path / f"t{threads}"
        res = run_cli("experiment", *QUICK, f"backend.threads={threads}", "budget.mode=tokens",
                      "budget.reference_seconds=3", "budget.force=true", "data.eval_tokens=4096", "quiet=true",
                      f"hydra.run.dir={run_dir}", timeout=300)
        assert res.returncode == 0, res.stdout + res.stderr
        s = json.loads((run_dir / "summary.json").read_text())
        assert s["budget_mode"] == "tokens" and s["budget_tokens"] > 0
        assert "budget: tokens:" in res.stdout
        steps[threads] = s["num_steps"]
    expected = s["budget_tokens"] // 2048  # a batch that would overrun the budget is not served
    assert steps[1] == steps[2] == expected


def test_out_of_bounds_budget_stops_with_advice(cache_dir):
    res = run_cli("experiment", *QUICK, "budget.reference_seconds=0.5", "quiet=true", timeout=300)
    assert res.returncode == 2
    assert "too short" in res.stderr and "budget.force=true" in res.stderr and "Traceback" not in res.stderr


def test_a_preset_too_big_for_the_device_stops_early(cache_dir):
    t0 = time.time()
    res = run_cli("calibrate", *QUICK, "calibrate.max_step_seconds=0.001", "calibrate.force=true", timeout=120)
    assert res.returncode == 2 and "pick a smaller preset" in res.stderr and "Traceback" not in res.stderr
    assert time.time() - t0 < 60  # no training step was attempted
