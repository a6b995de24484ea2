"""`autoresearch run` end to end on CPU: random, scripted and claude agents, faults, and a
campaign killed with SIGKILL and resumed (the external agent's `record` and `ledger`:
tests/test_campaign_faults.py)."""
import json
import random
import signal
import subprocess
import sys
import time
import uuid

import pytest

from tests.conftest import ROOT, remove_campaign, run_cli

pytestmark = pytest.mark.slow

# the causality probe has tests of its own (test_probe, test_attacks): a campaign's runs skip it
FAST = ["backend=cpu", "model=tiny", "budget.mode=wall", "budget.seconds=2", "data.eval_tokens=2048",
        "keep.confirm_runs=0", "eval.causality_check=false"]
ONE_BASELINE = "keep.baseline_runs=1"  # most tests need no noise measurement: one baseline run


def git(*args, cwd=ROOT):
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True).stdout.strip()


@pytest.fixture()
def campaign(tmp_path):
    tag = f"test-{uuid.uuid4().hex[:8]}"
    root = tmp_path / "campaigns"
    yield tag, root, root / tag / "cpu"
    remove_campaign(tag, root)


def run(campaign, *extra, verb="run", timeout=600, baseline_runs=1):
    tag, root, _ = campaign
    return run_cli(verb, *FAST, f"keep.baseline_runs={baseline_runs}", f"campaign.tag={tag}",
                   f"campaign.root={root}", *extra, timeout=timeout)


def rows(d):
    jsonl = [json.loads(line) for line in (d / "results.jsonl").read_text().splitlines()]
    tsv = (d / "results.tsv").read_text().splitlines()
    assert tsv[0].split("\t")[:5] == ["commit", "val_bpb", "memory_gb", "status", "description"]
    assert len(tsv) - 1 == len(jsonl)
    return jsonl


def test_random_campaign_killed_and_resumed(cache_dir, campaign):
    """The issue's command, SIGKILLed at a random moment, then the same command again."""
    tag, root, d = campaign
    head, status = git("rev-parse", "HEAD"), git("status", "--porcelain")
    args = ["agent=random", "campaign.max_experiments=3"]
    cmd = [sys.executable, "-m", "harness", "run", *FAST, ONE_BASELINE, *args, f"campaign.tag={tag}",
           f"campaign.root={root}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(random.uniform(4, 30))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    res = run(campaign, *args)
    assert res.returncode == 0, res.stdout + res.stderr
    recs = rows(d)
    assert [r["seq"] for r in recs] == [0, 1, 2, 3]  # nothing lost, nothing twice
    assert recs[0]["description"] == "baseline" and recs[0]["status"] == "keep"
    assert all(r["status"] in ("keep", "discard", "crash") for r in recs)
    assert all(r["agent"] == "random" and r["backend"] == "cpu" for r in recs)
    kept = [r for r in recs if r["status"] == "keep"]
    best = min(kept, key=lambda r: r["val_bpb"])
    branch_head = git("rev-parse", f"autoresearch/{tag}/cpu")
    assert branch_head == best["full_commit"] == kept[-1]["full_commit"]
    assert git("status", "--porcelain", cwd=d / "worktree") == ""
    assert git("rev-parse", "HEAD") == head and git("status", "--porcelain") == status  # checkout untouched
    assert "ledger:" in res.stdout and "best kept" in res.stdout and "max_experiments=3 reached" in res.stdout


def test_faults_with_scripted_agent(cache_dir, campaign, tmp_path):
    t = "trainer/train.py"
    edits = [
        {"description": "raises", "path": t, "old": "def main():\n", "new": "def main():\n    raise RuntimeError('agent bug')\n"},
        {"description": "syntax error", "path": t, "old": "def main():", "new": "def main(:"},
        {"description": "nan loss", "path": t, "old": "loss_f, epoch, ended = out\n", "new": "loss_f, epoch, ended = out\n        loss_f = float('nan')\n"},
        {"description": "hangs", "path": t, "old": "def main():\n", "new": "def main():\n    time.sleep(600)\n"},
        {"description": "outside scope", "path": "trainer/prepare.py", "old": "EVAL_TOKENS: int", "new": "EVAL_TOKENS: float"},
        {"description": "../ traversal", "path": "../../outside.py", "content": "x = 1\n"},
        {"description": "shorter warm-down", "path": t, "old": "WARMDOWN_RATIO = 0.5", "new": "WARMDOWN_RATIO = 0.4"},
    ]
    script = tmp_path / "edits.json"
    script.write_text(json.dumps(edits))
    res = run(campaign, "agent=scripted", f"agent.script={script}", "campaign.max_experiments=10",
              "budget.allowance_seconds=8")
    assert res.returncode == 0, res.stdout + res.stderr
    recs = rows(campaign[2])
    got = [(r["description"].split(")")[0] if r["description"].startswith("(") else r["description"], r["status"])
           for r in recs]
    assert [s for _, s in got] == ["keep", "crash", "crash", "crash", "crash", "refused", "refused",
                                   recs[-1]["status"]]
    assert recs[-1]["status"] in ("keep", "discard") and recs[-1]["val_bpb"] is not None
    by_seq = {r["seq"]: r for r in recs}
    assert "agent bug" in by_seq[1]["error_tail"]
    assert "SyntaxError" in by_seq[2]["error_tail"]
    assert by_seq[3]["experiment_status"] == "nan"
    assert by_seq[4]["experiment_status"] == "timeout" and "cut off" in by_seq[4]["reason"]
    assert "prepare.py" in by_seq[5]["reason"] and "outside.py" in by_seq[6]["reason"]
    assert not (campaign[1].parent / "outside.py").exists()
    assert "the agent has nothing more to try" in res.stdout
    tree = campaign[2] / "worktree"
    assert git("status", "--porcelain", cwd=tree) == ""
    assert "agent bug" not in (tree / t).read_text() and "EVAL_TOKENS: int" in (tree / "trainer/prepare.py").read_text()


def test_claude_agent_drives_a_campaign(cache_dir, campaign, monkeypatch):
    """The real anthropic client, served by a local stand-in of the Messages API."""
    from harness import campaign as C
    from harness.agents.claude import ClaudeAgent
    from harness.config import compose_dict
    from harness.display import Display
    from tests.fake_anthropic import FakeAnthropic, error, tool_use

    tag, root, d = campaign
    api = FakeAnthropic([
        tool_use("read_file", {"path": "trainer/train.py"}),
        error(429),
        tool_use("replace_in_file", {"path": "trainer/train.py", "old": "WARMDOWN_RATIO = 0.5",
                                     "new": "WARMDOWN_RATIO = 0.6"}),
        tool_use("write_file", {"path": "trainer/prepare.py", "content": "hacked"}),
        tool_use("run_experiment", {"description": "longer warm-down"}),
    ])
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-not-a-real-key")
    import anthropic._base_client as base

    monkeypatch.setattr(base, "INITIAL_RETRY_DELAY", 0.01)
    monkeypatch.setattr(C, "make_agent", lambda cfg, seed: ClaudeAgent(cfg, seed, http_client=api.client()))
    cfg = compose_dict("run", [*FAST, ONE_BASELINE, "agent=auto", "campaign.max_experiments=1", f"campaign.tag={tag}",
                               f"campaign.root={root}"])
    c = C.Campaign(cfg)
    assert c.agent_name == "claude"  # agent=auto with a key
    c.open()
    try:
        why, code = c.run(Display(interval=60))
    finally:
        c.unlock()
    assert "max_experiments=1" in why and code == 0
    recs = rows(d)
    assert [r["description"] for r in recs] == ["baseline", "longer warm-down"]
    assert recs[1]["agent_tokens_in"] > 0 and recs[1]["agent_cost_usd"] > 0
    assert (d / "worktree" / "trainer" / "prepare.py").read_text() != "hacked"
    bodies = [r["body"] for r in api.requests]
    assert any("is_error" in json.dumps(b) for b in bodies)  # the refused write went back to the model
    assert len(api.requests) == 5  # four answers + the 429 the SDK retried
