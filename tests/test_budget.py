"""Budget modes: resolution against the reference table, calibrations, and bounds."""
import json
import time

import pytest

from harness import budget as B
from harness.config import compose_dict

OWN = {"id": "abc123def456", "tokens_per_s": 1000.0, "flops_per_token": 2.0e7, "model_flops_per_token": 4.4e7, "device": "Test CPU",
       "preset": "tiny", "created": time.time(), "created_iso": "2026-11-30T00:00:00+00:00", "cv": 0.01}


def cfg(*over):
    return compose_dict("experiment", ["model=tiny", *over])


def table_tps(row="ci-cpu-2core", preset="tiny"):
    return B.load_table()["devices"][row][preset]["tokens_per_s"]


def test_wall_needs_no_calibration():
    b = B.resolve(cfg("budget.mode=wall", "budget.seconds=42"), None)
    assert (b.mode, b.seconds, b.tokens, b.flops) == ("wall", 42.0, None, None)


def test_normalized_scales_by_throughput_ratio():
    c = cfg("budget.mode=normalized", "budget.reference_seconds=20")
    b = B.resolve(c, OWN)
    assert b.seconds == pytest.approx(20 * table_tps() / 1000.0)
    assert "ci-cpu-2core" in b.reason and "measured" in b.reason and OWN["id"] in b.reason
    faster = B.resolve(c, {**OWN, "tokens_per_s": 2000.0})
    assert faster.seconds == pytest.approx(b.seconds / 2)  # same work, half the time


def test_tokens_and_flops_are_device_independent():
    c = cfg("budget.mode=tokens", "budget.reference_seconds=20")
    slow, fast = B.resolve(c, OWN), B.resolve(c, {**OWN, "tokens_per_s": 3000.0})
    assert slow.tokens == fast.tokens == round(20 * table_tps())
    assert slow.seconds == pytest.approx(3 * fast.seconds)  # only the time estimate differs
    f = B.resolve(cfg("budget.mode=flops", "budget.reference_seconds=20"), OWN)
    assert f.flops == pytest.approx(20 * table_tps() * OWN["model_flops_per_token"])


def test_reference_self_row_path_and_id(tmp_path, monkeypatch):
    assert B.resolve(cfg("budget.reference=self", "budget.reference_seconds=30"), OWN).seconds == pytest.approx(30)
    h100 = B.resolve(cfg("model=reference", "budget.reference=h100-sxm", "budget.force=true"), {**OWN, "preset": "reference"})
    assert h100.seconds == pytest.approx(300 * table_tps("h100-sxm", "reference") / 1000.0)
    lab = {**OWN, "id": "0123456789ab", "tokens_per_s": 500.0, "device": "Lab A100"}
    path = tmp_path / "lab.json"
    path.write_text(json.dumps(lab))
    by_path = B.resolve(cfg(f"budget.reference={path}", "budget.reference_seconds=20"), OWN)
    assert by_path.seconds == pytest.approx(10.0) and "Lab A100" in by_path.reason
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path))
    (tmp_path / "calibration").mkdir()
    (tmp_path / "calibration" / "cuda-tiny-0123456789ab.json").write_text(json.dumps(lab))
    by_id = B.resolve(cfg("budget.reference=0123456789ab", "budget.reference_seconds=20"), OWN)
    assert by_id.seconds == pytest.approx(10.0)


def test_bad_references_are_clear():
    with pytest.raises(B.BudgetError, match="neither"):
        B.resolve(cfg("budget.reference=nowhere"), OWN)
    with pytest.raises(B.BudgetError, match="no throughput for model=small"):
        B.resolve(cfg("model=small", "budget.reference=ci-cpu-2core"), {**OWN, "preset": "small"})
    with pytest.raises(B.BudgetError, match="needs this device's calibration"):
        B.resolve(cfg("budget.mode=normalized"), None)


def test_insane_budgets_stop_with_advice_unless_forced():
    with pytest.raises(B.BudgetError, match="too long.*smaller model preset"):
        B.resolve(cfg("model=reference"), {**OWN, "preset": "reference"})  # an H100's 300 s on a 1k tokens/s CPU
    with pytest.raises(B.BudgetError, match="too short"):
        B.resolve(cfg("budget.reference_seconds=1"), {**OWN, "tokens_per_s": 1e6})
    assert B.resolve(cfg("budget.reference_seconds=1", "budget.force=true"), {**OWN, "tokens_per_s": 1e6}).seconds < 1


def test_every_table_row_is_marked():
    table = B.load_table()
    for preset, row in table["default"].items():
        assert preset in table["devices"][row]
    for name, dev in table["devices"].items():
        for preset, r in dev.items():
            if preset == "device":
                continue
            assert r["status"] in ("measured", "estimated") and r["tokens_per_s"] > 0
            assert ("date" in r and "how" in r) if r["status"] == "measured" else "how" in r
