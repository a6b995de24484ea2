"""The campaign's live line: experiment, elapsed vs budget, best, counts, agent spend."""
import io
import time
from types import SimpleNamespace

from harness.display import Display


def fake_campaign(best=2.5, spent=(0.01, 0.02)):
    ledger = SimpleNamespace(counts=lambda: {"keep": 2, "discard": 1, "crash": 1, "refused": 1})
    return SimpleNamespace(ledger=ledger, budget_seconds=22.0, best_val=lambda: best,
                           agent_spent=lambda: sum(spent))


def test_status_line_has_everything():
    line = Display.status(fake_campaign(), 3, "MATRIX_LR 0.04 -> 0.05", 1, 12.3)
    for part in ("[exp 3 (confirm 1)]", "MATRIX_LR 0.04 -> 0.05", "12 s elapsed", "training budget 22 s",
                 "best 2.500000", "kept 2", "discarded 1", "crashed 2", "agent $0.0300"):
        assert part in line, part
    assert "best -" in Display.status(fake_campaign(best=None), 0, "baseline", 0, 0)


def test_ticker_writes_lines_until_stopped():
    out = io.StringIO()
    d = Display(stream=out, interval=0.05)
    d.start(1, "x", 0, fake_campaign())
    time.sleep(0.3)
    d.stop()
    n = out.getvalue().count("[exp 1]")
    time.sleep(0.15)
    assert n >= 3 and out.getvalue().count("[exp 1]") == n  # stopped means stopped
    d.result({"seq": 1, "status": "crash", "val_bpb": None, "description": "x", "reason": "boom"})
    assert "crash" in out.getvalue().splitlines()[-1] and "boom" in out.getvalue()
