"""A `scope=kernels` campaign: every candidate that touches kernels/ passes `kernels check`
(the static rules, then each kernel against its reference in a sandboxed child) before
anything is timed. The scripted agent plants a wrong backward (refused, and the ledger
says why) and then makes a correct change (checked, run, kept). The experiments are
stubbed (experiment.run returns val_bpb values at once): the check is real."""
import pytest

from tests.test_campaign_state import rows, run_campaign, stub_experiments

pytest.importorskip("triton")

BACKWARD = "dx = (g - n * mean_gn[:, None]) * rstd[:, None]"


def test_a_kernel_campaign_refuses_a_wrong_kernel_and_keeps_a_correct_one(cache_dir, where, monkeypatch, tmp_path):
    import json

    edits = [
        {"description": "faster norm backward", "path": "kernels/rmsnorm.py", "old": BACKWARD,
         "new": BACKWARD.replace("g - n", "g + n")},
        {"description": "larger GPU tiles", "path": "kernels/launch.py", "old": "GPU_TILE = 2048",
         "new": "GPU_TILE = 4096"},
    ]
    script = tmp_path / "edits.json"
    script.write_text(json.dumps(edits))
    stub_experiments(monkeypatch, [1.0, 0.9])
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
