"""`autoresearch calibrate` and calibrated budgets on CPU (two thread counts stand in for
two devices of different speed)."""
import json
import subprocess
import sys
import time

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow

QUICK = ["backend=cpu", "model=tiny", "calibrate.repeats=2", "calibrate.window_seconds=1.5", "calibrate.warmup_steps=2"]
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
    res = calibrate("backend.threads=1", "calibrate.force=true", STEADY, f"calibrate.out={out}")
    for needle in ("matmul (fp32)", "matmul (bf16)"):
        if needle in res.stdout:
            break
    else:
        pytest.fail("no matmul row:\n" + res.stdout)
    for row in ("GFLOP/s", "GB/s", "trained as an experiment", "MFU (datasheet peak)  n/a", "MFU (measured matmul)"):
        assert row in res.stdout, row
    cal = saved(res)
    # forced: kept whatever the machine did meanwhile (other jobs beside the suite are said)
    assert cal["tokens_per_s"] > 0 and len(cal["tokens_per_s_windows"]) == 2
    assert cal["quality"] == "ok" or cal["quality"].startswith("accepted with calibrate.force: other processes used")
    assert cal["startup_seconds"] > 0 and cal["isolation"] != "none"  # measured in the experiment's sandbox
    assert cal["fingerprint"]["threads"] == 1 and cal["preset"] == "tiny"
    # the baseline was evaluated as an experiment is: its runners' times bound later evaluations
    assert set(cal["eval_timing"]) == {"scored", "probe"} and "scored runner" in res.stdout
    for t in cal["eval_timing"].values():
        assert t["startup"] > 0 and t["forward"] > 0 and t["tokens"] > 0
    assert json.loads(out.read_text())["id"] == cal["id"]  # calibrate.out holds a copy
    t0 = time.time()
    again = calibrate("backend.threads=1", STEADY)
    assert "cached" in again.stdout and "throughput window" not in again.stdout
    assert saved(again)["created"] == cal["created"]
    assert time.time() - t0 < 30  # no measurement: start-up only
    # too old, then failing the bar (any spread at all fails it at max_cv=0): measured
    # again, then a stop with the ways out; the failed measurement replaces nothing
    noisy = run_cli("calibrate", *QUICK, "backend.threads=1", "calibrate.max_age_hours=0", "calibrate.max_cv=0",
                    "calibrate.attempts=2", timeout=300)
    assert noisy.returncode == 2 and "h old" in noisy.stdout, noisy.stdout + noisy.stderr
    assert "attempt 1 of 2 failed the quality bar" in noisy.stdout and "attempt 2 of 2" in noisy.stdout
    for way_out in ("calibrate.force=true", "quiet machine", "budget.mode=wall"):
        assert way_out in noisy.stderr, way_out
    assert "Traceback" not in noisy.stderr and saved(calibrate("backend.threads=1", STEADY))["created"] == cal["created"]


def test_a_calibration_under_foreign_load_stops(cache_dir):
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        res = run_cli("calibrate", *QUICK, STEADY, "backend.threads=1", "calibrate.max_age_hours=0",
                      "calibrate.attempts=1", timeout=300)  # measured anew (the cached one is "too old")
    finally:
        hog.kill()
    assert res.returncode == 2 and "other processes used" in res.stderr, res.stdout + res.stderr
    assert "failed its quality bar in 1 measurement" in res.stderr and "calibrate.force=true" in res.stderr


def test_a_tokens_budget_runs_beside_a_cpu_hog(cache_dir, tmp_path):
    """A tokens budget against the reference CPU needs no throughput figure: the busy
    machine's calibration is kept for its limits, and the honest run is not cut off."""
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        res = run_cli("experiment", *QUICK, "backend.threads=1", "budget.mode=tokens", "budget.reference_seconds=3",
                      "budget.force=true", "calibrate.max_age_hours=0", "calibrate.attempts=1",
                      "data.eval_tokens=4096", "quiet=true", f"hydra.run.dir={tmp_path / 'run'}", timeout=400)
    finally:
        hog.kill()
    assert res.returncode == 0, res.stdout + res.stderr
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["status"] == "ok" and s["calibration_quality"].startswith("for limits only (failed the quality bar"), s
    assert "kept for limits only" in res.stdout and "per experiment here" in res.stdout


def test_the_quality_bar_remeasures_then_stops_or_accepts_when_forced(tmp_path, monkeypatch):
    """calibrate() with the measurement stubbed: noisy twice then clean is used; noisy
    every time stops, unless forced, and then says so; a forced one is kept and reused."""
    from harness import calibration
    from harness.config import compose_dict

    results = []

    def fake_measure(cfg, bk, log, stretch=1.0):
        return {"tokens_per_s": 1000.0, "cv": results.pop(0), "load_warning": ""}

    monkeypatch.setattr(calibration, "_measure", fake_measure)
    cfg = compose_dict("calibrate", ["backend=cpu", "model=tiny", f"data.cache_dir={tmp_path}",
                                     "calibrate.attempts=3", "calibrate.max_cv=0.1"])
    results[:] = [0.5, 0.4, 0.05]
    cal = calibration.calibrate(cfg, log=lambda m: None)
    assert cal["attempts"] == 3 and cal["quality"] == "ok" and cal["cv"] == 0.05 and not results
    cfg["calibrate"]["force"] = True  # measure anew, although the cached one is fine
    results[:] = [0.5, 0.5, 0.5]
    with_force = calibration.calibrate(cfg, log=lambda m: None)
    assert with_force["quality"].startswith("accepted with calibrate.force: throughput CV 50.0%")
    cfg["calibrate"]["force"] = False  # the forced one sticks: no measurement, no stop
    results[:] = [0.5]
    again = calibration.calibrate(cfg, log=lambda m: None)
    assert again["created"] == with_force["created"] and again["quality"] == with_force["quality"] and results
    cfg["calibrate"]["max_age_hours"] = 0  # aged out: measured again, and now it stops
    results[:] = [0.5, 0.5, 0.5]
    with pytest.raises(calibration.CalibrationError, match="quality bar in 3 measurements"):
        calibration.calibrate(cfg, log=lambda m: None)
    assert not results


def test_a_busy_machine_serves_budgets_that_need_no_throughput(tmp_path, monkeypatch):
    """A measurement that fails the bar is kept `for limits only` where no budget depends
    on the throughput (tokens/flops against another device, wall), used again for those,
    and measured anew for a normalized budget, which then stops."""
    from harness import budgeting, calibration
    from harness.config import compose_dict

    calls = []

    def fake_measure(cfg, bk, log, stretch=1.0):
        calls.append(stretch)
        return {"tokens_per_s": 1000.0, "cv": 0.5, "load_warning": "other processes used ~1.0 CPU cores"}

    monkeypatch.setattr(calibration, "_measure", fake_measure)
    cfg = compose_dict("calibrate", ["backend=cpu", "model=tiny", f"data.cache_dir={tmp_path}",
                                     "calibrate.attempts=2", "budget.mode=tokens"])
    assert not budgeting.throughput_sets_budget(cfg)
    cal = budgeting.calibrated(cfg, log=lambda m: None, limits_only=True)
    assert cal["quality"].startswith("for limits only (failed the quality bar: throughput CV 50.0%")
    assert calls == [1.0, 2.0]  # redone once, windows twice as long
    assert budgeting.calibrated(cfg, log=lambda m: None, limits_only=True)["created"] == cal["created"]
    assert calls == [1.0, 2.0]  # reused: not measured again
    cfg["budget"]["mode"] = "normalized"
    assert budgeting.throughput_sets_budget(cfg)
    with pytest.raises(calibration.CalibrationError, match="budget.mode=tokens, flops or wall"):
        budgeting.calibrated(cfg, log=lambda m: None, limits_only=False)
    cfg["budget"].update(mode="tokens", reference="self")  # the budget is this device's throughput
    assert budgeting.throughput_sets_budget(cfg)


def test_too_few_batches_are_measured_again_with_longer_windows(tmp_path, monkeypatch):
    from harness import calibration
    from harness.config import compose_dict

    calls = []

    def fake_measure(cfg, bk, log, stretch=1.0):
        calls.append(stretch)
        if len(calls) < 3:
            raise calibration.TooFewBatches("only 4 batches were timed: too few for 5 windows")
        return {"tokens_per_s": 1000.0, "cv": 0.01, "load_warning": ""}

    monkeypatch.setattr(calibration, "_measure", fake_measure)
    cfg = compose_dict("calibrate", ["backend=cpu", "model=tiny", f"data.cache_dir={tmp_path}", "calibrate.attempts=3"])
    cal = calibration.calibrate(cfg, log=lambda m: None)
    assert calls == [1.0, 2.0, 4.0] and cal["quality"] == "ok" and cal["attempts"] == 3
    calls.clear()
    cfg["calibrate"]["force"] = True
    monkeypatch.setattr(calibration, "_measure", lambda *a, **k: (_ for _ in ()).throw(
        calibration.TooFewBatches("only 2 batches were timed: too few for 5 windows")))
    with pytest.raises(calibration.CalibrationError, match="could not time enough batches in 3 attempts"):
        calibration.calibrate(cfg, log=lambda m: None)
    # a noisy measurement, then two that timed too few: the noisy one is what is kept, with its own reason
    outcomes = [{"tokens_per_s": 1000.0, "cv": 0.5, "load_warning": ""}, None, None]

    def mixed(cfg, bk, log, stretch=1.0):
        got = outcomes.pop(0)
        if got is None:
            raise calibration.TooFewBatches("only 2 batches were timed: too few for 5 windows")
        return got

    monkeypatch.setattr(calibration, "_measure", mixed)
    cfg["calibrate"]["force"] = False
    cfg["calibrate"]["max_age_hours"] = 0
    kept = calibration.calibrate(cfg, log=lambda m: None, limits_only=True)
    assert kept["cv"] == 0.5 and kept["quality"].startswith("for limits only (failed the quality bar: throughput CV")


def test_windows_are_sized_from_the_step_time():
    from harness import calibration
    from harness.config import compose_dict

    cfg = compose_dict("calibrate", ["backend=cpu", "model=tiny"])
    rps = __import__("harness.limits", fromlist=["x"]).requests_per_step(cfg)
    step_tokens = cfg["model"]["total_batch_size"]
    # a fast device: the asked seconds stand; a slow one (one step = 2 s): 5 windows of 3+ requests
    assert calibration.sized_seconds(cfg, 5, 20.0, step_tokens, step_tokens * 10.0) == 20.0
    slow = calibration.sized_seconds(cfg, 5, 20.0, step_tokens, step_tokens / 2.0)
    assert slow == pytest.approx(1.5 * (5 * 3 + 2) * 2.0 / rps) and slow >= 20.0


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
        assert "frozen baseline's runner" in s["eval_bound_source"] and s["eval_timing"]["scored"]["bound"] > 3
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
