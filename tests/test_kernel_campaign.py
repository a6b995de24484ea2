"""A `scope=kernels` campaign: every candidate that touches kernels/ passes `kernels check`
(the static rules, then each kernel against its reference in a sandboxed child) before
anything is timed, and is kept when it trains faster end to end (microseconds per token,
by the harness's clock and feed) beyond the noise, with val_bpb no worse beyond its own.
The scripted agent plants a wrong backward (refused, and the ledger says why) and then
makes a correct change (checked, run, kept). The experiments are stubbed (experiment.run
returns val_bpb and speed at once): the check is real."""
import pytest

from harness import experiment
from harness.decision import KeepDecision
from tests.test_campaign_state import rows, run_campaign

KEEP = {"baseline_runs": 3, "confirm_runs": 2, "noise_sigmas": 2.0, "threshold": None}


def stub(monkeypatch, runs):
    """experiment.run returns (val_bpb, microseconds per token) pairs in turn."""
    it = iter(runs)

    def run(cfg, run_dir, budget, own_calibration=None, kernels_dir=None, announce=True):
        run_dir.mkdir(parents=True, exist_ok=True)
        val, us = next(it)
        return {"status": "ok", "val_bpb": val, "run_dir": str(run_dir), "budget_seconds": budget.seconds,
                "budget_mode": budget.mode, "isolation": "none", "training_seconds": us,
                "timed_tokens": 1_000_000}  # us seconds for a million tokens: us microseconds per token

    monkeypatch.setattr(experiment, "run", run)


BACKWARD = "dx = (g - n * mean_gn[:, None]) * rstd[:, None]"


def test_a_kernel_campaign_refuses_a_wrong_kernel_and_keeps_a_correct_one(cache_dir, where, monkeypatch, tmp_path):
    import json

    pytest.importorskip("triton")
    edits = [
        {"description": "faster norm backward", "path": "kernels/rmsnorm.py", "old": BACKWARD,
         "new": BACKWARD.replace("g - n", "g + n")},
        {"description": "larger GPU tiles", "path": "kernels/launch.py", "old": "GPU_TILE = 2048",
         "new": "GPU_TILE = 4096"},
    ]
    script = tmp_path / "edits.json"
    script.write_text(json.dumps(edits))
    stub(monkeypatch, [(1.0, 10.0), (1.0, 8.0)])  # the baseline; the correct change, 20% faster
    c, why, code, shown = run_campaign(where, "scope=kernels", "agent=scripted", f"agent.script={script}",
                                       "campaign.max_experiments=2")
    assert code == 0 and "max_experiments=2 reached" in why, why
    recs = rows(c)
    assert [(r["seq"], r["status"]) for r in recs] == [(0, "keep"), (1, "refused"), (2, "keep")]
    refused = recs[1]
    assert refused["reason"].startswith("kernels check failed: ") and "grad of x" in refused["reason"]
    assert refused["val_bpb"] is None and refused["full_commit"] != c.kept_commit()
    assert "kernels check: passed" in shown
    assert "GPU_TILE = 4096" in (c.tree / "kernels" / "launch.py").read_text()  # the kept change is the head
    assert BACKWARD in (c.tree / "kernels" / "rmsnorm.py").read_text()  # the refused one is gone
    assert recs[2]["us_per_token"] == pytest.approx(8.0) and recs[2]["keep_rule"]["speed"]["gain"] == pytest.approx(2.0)
    # the gates each candidate passed through, in its row: on a CPU the micro-benchmark says why it did not run
    assert refused["gates"]["kernels_check"].startswith("failed") and "micro_bench" not in refused["gates"]
    assert recs[2]["gates"]["kernels_check"].startswith("passed")
    assert "no GPU" in recs[2]["gates"]["micro_bench"]["skipped"]
    assert "gates" not in recs[0]  # the baseline is not a kernel candidate


def test_a_candidate_killed_during_its_kernels_check_is_checked_again_on_resume(cache_dir, where, monkeypatch,
                                                                                 tmp_path):
    import json

    from harness import kernel_check

    pytest.importorskip("triton")
    script = tmp_path / "edits.json"
    script.write_text(json.dumps([{"description": "larger GPU tiles", "path": "kernels/launch.py",
                                   "old": "GPU_TILE = 2048", "new": "GPU_TILE = 4096"}]))
    real, calls = kernel_check.run, []

    def interrupted_once(cfg, kernels_dir=None, log=print):
        calls.append(kernels_dir)
        if len(calls) == 1:
            raise KeyboardInterrupt  # Ctrl-C (or a kill) while the candidate is being checked
        return real(cfg, kernels_dir=kernels_dir, log=log)

    monkeypatch.setattr(kernel_check, "run", interrupted_once)
    stub(monkeypatch, [(1.0, 10.0), (1.0, 8.0)])
    args = ("scope=kernels", "agent=scripted", f"agent.script={script}", "campaign.max_experiments=1")
    with pytest.raises(KeyboardInterrupt):
        run_campaign(where, *args)
    c, why, code, _ = run_campaign(where, *args)  # resumed: the same candidate, checked, then run
    recs = rows(c)
    assert code == 0 and [(r["seq"], r["status"]) for r in recs] == [(0, "keep"), (1, "keep")], why
    assert len(calls) == 2 and recs[1]["description"] == "larger GPU tiles"
    assert recs[1]["gates"]["kernels_check"].startswith("passed")


def row(seq, status, val, us, confirms=None):
    r = {"seq": seq, "status": status, "val_bpb": val, "us_per_token": us, "experiment_status": "ok"}
    return {**r, "confirms": confirms} if confirms is not None else r


BASELINE = [row(0, "keep", 1.000, 10.0), row(1, "confirm", 1.002, 10.1, 0), row(2, "confirm", 0.998, 9.9, 0)]
BASELINE[0].update(mean_val_bpb=1.0, mean_us_per_token=10.0, runs=3)


def runs(*pairs):
    return [{"status": "ok", "val_bpb": v, "training_seconds": us, "timed_tokens": 1_000_000} for v, us in pairs]


def test_the_kernel_keep_rule_wants_speed_beyond_noise_and_no_worse_val_bpb():
    decide = KeepDecision(KEEP, BASELINE, None, speed=True)
    assert decide.verdict(3, runs((1.0, 8.0))).status == "keep"  # 20% faster, same val_bpb
    assert decide.verdict(3, runs((0.95, 10.0))).status == "discard"  # better val_bpb, not faster: not a kernel win
    assert decide.verdict(3, runs((1.2, 8.0))).status == "discard"  # faster, but val_bpb worse beyond its noise
    assert decide.again(3, runs((1.0, 9.9)))  # faster within the noise: run it again
    assert not decide.again(3, runs((1.0, 10.5)))  # slower: no confirmation needed
    v = decide.verdict(3, runs((1.0, 8.0)))
    assert v.record(1)["speed"]["us_per_token_before"] == 10.0 and v.speed == pytest.approx(8.0)
    assert KeepDecision(KEEP, BASELINE, None).verdict(3, runs((0.95, 10.0))).status == "keep"  # other scopes: val_bpb
