"""The campaign's state and its accounting, fast: campaign.json's pending record (the shape
older versions wrote still resumes), the keep decision's one rule for a run with no number,
and the agent's spend counted to the dollar across a cost cap reached mid-proposal and a
resume. The experiments are stubbed (experiment.run returns a summary at once); the
claude agent talks to the local stand-in of the Messages API (tests/fake_anthropic.py)."""
import io
import json
import subprocess

import pytest

from harness import experiment
from harness.agents import Proposal
from harness.campaign_state import CampaignState, Known, Pending
from harness.config import compose_dict
from harness.decision import KeepDecision

pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")

SETTINGS = ["backend=cpu", "model=tiny", "budget.mode=wall", "budget.seconds=2", "keep.baseline_runs=1",
            "keep.confirm_runs=0", "isolation=off", "budget.allowance_seconds=30", "eval.probe_tolerance=1e-4",
            "eval.causality_check=false"]  # the probe has tests of its own
OLD_PENDING = {"seq": 1, "commit": "c" * 40, "parent": "p" * 40, "description": "old-style", "agent_seconds": 1.5,
               "agent_tokens_in": 7, "agent_tokens_out": 3, "agent_cache_read": 0, "agent_cache_write": 0,
               "agent_cost_usd": 0.25, "runs": [{"status": "ok", "val_bpb": 1.0}]}


# ----------------------------------------------------------------- the state file

def test_pending_keeps_the_shape_campaign_json_always_had(tmp_path):
    p = Pending.from_json(OLD_PENDING)
    assert (p.seq, p.commit, p.description, p.agent_seconds, p.runs) == (1, "c" * 40, "old-style", 1.5,
                                                                          OLD_PENDING["runs"])
    assert p.usage["agent_cost_usd"] == 0.25 and "agent_seconds" not in p.usage and p.known is None
    assert p.to_json() == OLD_PENDING
    refused = {**OLD_PENDING, "runs": [], "known": {"status": "refused", "reason": "outside the scope"}}
    assert Pending.from_json(refused).known == Known("refused", "outside the scope")
    assert Pending.from_json(refused).to_json() == refused
    made = Pending.of(2, "a" * 40, "b" * 40, Proposal("x", tokens_in=5, cost_usd=0.1), 2.0)
    assert made.usage == Proposal("x", tokens_in=5, cost_usd=0.1).as_record()


def test_state_changes_are_saved_by_one_writer(tmp_path):
    path = tmp_path / "campaign.json"
    old = {"tag": "t", "backend": "cpu", "branch": "b", "base_commit": "p" * 40, "agent": "random",
           "settings": {"model.name": "tiny"}, "a_key_from_a_newer_version": 1, "pending": OLD_PENDING}
    path.write_text(json.dumps(old))
    state = CampaignState.load(path)
    assert state.pending == Pending.from_json(OLD_PENDING) and state.base_commit == "p" * 40
    state.add_run({"status": "ok", "val_bpb": 0.9})
    assert json.loads(path.read_text())["pending"]["runs"][-1]["val_bpb"] == 0.9
    state.clear_pending()
    saved = json.loads(path.read_text())
    assert "pending" not in saved and saved["a_key_from_a_newer_version"] == 1
    state.baseline_failed("timeout", "cut off", "/runs/0")
    assert json.loads(path.read_text())["baseline_failures"][0]["status"] == "timeout"
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically, nothing half-written left
    path.write_text(json.dumps({**old, "pending": {"seq": "one"}}))
    with pytest.raises(ValueError, match="campaign.json: its pending experiment"):
        CampaignState.load(path)


def test_a_run_with_no_number_is_one_rule(tmp_path):
    base = [{"seq": 0, "status": "keep", "val_bpb": 1.0, "runs": 1, "mean_val_bpb": 1.0}]
    decide = KeepDecision({"baseline_runs": 1, "confirm_runs": 2, "noise_sigmas": 2, "threshold": None}, base, None)
    for bad in (None, float("nan"), float("inf")):
        runs = [{"status": "ok", "val_bpb": bad}]
        assert not decide.again(1, runs) and decide.verdict(1, runs).status == "crash"
    assert decide.verdict(1, [{"status": "ok", "val_bpb": 0.9}]).status == "keep"  # no noise measured: any gain
    assert decide.verdict(1, [{"status": "ok", "val_bpb": 1.0}]).status == "discard"


# ----------------------------------------------------------------- campaigns, experiments stubbed

def stub_experiments(monkeypatch, values):
    """experiment.run returns these val_bpb values in turn, at once."""
    vals = iter(values)

    def run(cfg, run_dir, budget, own_calibration=None, kernels_dir=None, announce=True):
        run_dir.mkdir(parents=True, exist_ok=True)
        return {"status": "ok", "val_bpb": next(vals), "run_dir": str(run_dir), "budget_seconds": budget.seconds,
                "budget_mode": budget.mode, "isolation": "none"}

    monkeypatch.setattr(experiment, "run", run)


def run_campaign(where, *extra):
    """One `autoresearch run` in this process: (campaign, why it stopped, code, what it displayed)."""
    from harness.campaign import Campaign
    from harness.display import Display

    tag, root = where
    c = Campaign(compose_dict("run", [*SETTINGS, f"campaign.tag={tag}", f"campaign.root={root}", *extra]))
    c.open()
    out = io.StringIO()
    try:
        why, code = c.run(Display(stream=out, interval=60))
    finally:
        c.unlock()
    return c, why, code, out.getvalue()


def rows(c):
    tsv = (c.dir / "results.tsv").read_text().splitlines()
    assert len(tsv) - 1 == len(c.ledger) and all(r.split("\t")[0] for r in tsv[1:])
    return c.ledger.records()


def git(tree, *args):
    return subprocess.run(["git", *args], cwd=tree, capture_output=True, text=True).stdout.strip()


def test_an_old_pending_record_resumes(cache_dir, where, monkeypatch):
    """A campaign.json written before the pending record was typed: its candidate re-runs."""
    from harness import gitwork

    stub_experiments(monkeypatch, [1.0, 0.9])
    c, _, code, _ = run_campaign(where, "agent=random", "campaign.max_experiments=0")
    assert code == 0 and [r["status"] for r in rows(c)] == ["keep"]
    baseline = c.kept_commit()
    train = c.tree / "trainer" / "train.py"
    train.write_text(train.read_text() + "\n# an edit\n")
    commit = gitwork.commit_all(c.tree, "exp 1: old-style")  # then killed: the state says pending
    state = json.loads(c.state_path.read_text())
    state["pending"] = {**OLD_PENDING, "commit": commit, "parent": baseline, "runs": []}
    c.state_path.write_text(json.dumps(state))
    c, why, code, shown = run_campaign(where, "agent=random", "campaign.max_experiments=1")
    assert code == 0 and "max_experiments=1 reached" in why, why
    assert "re-running the interrupted experiment 1 (old-style)" in shown
    last = rows(c)[-1]
    assert (last["seq"], last["description"], last["full_commit"], last["status"]) == (1, "old-style", commit, "keep")
    assert (last["agent_tokens_in"], last["agent_cost_usd"], last["agent_seconds"]) == (7, 0.25, 1.5)
    assert c.agent_spent() == pytest.approx(0.25) and c.state.pending is None
    assert "pending" not in json.loads(c.state_path.read_text())


def test_spend_survives_a_cost_cap_reached_mid_proposal_and_a_resume(cache_dir, where, monkeypatch):
    from harness import campaign as C
    from harness.agents.claude import ClaudeAgent
    from harness.agents.prices import cost_usd, price_for
    from tests.fake_anthropic import FakeAnthropic, tool_use, usage

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-not-a-real-key")
    api = {}
    monkeypatch.setattr(C, "make_agent", lambda cfg, seed: ClaudeAgent(cfg, seed, http_client=api["now"].client()))
    stub_experiments(monkeypatch, [1.0, 0.9])
    price = price_for(compose_dict("run", ["agent=claude"])["agent"]["model"])
    bills = [usage(100, 20), usage(60, 10, cache_write=100, cache_read=500), usage(100, 20),  # the capped proposal
             usage(80, 30, cache_read=900), usage(40, 15, cache_read=1200)]  # the one after the resume
    billed = [cost_usd(price, u["input_tokens"], u["output_tokens"], u["cache_creation_input_tokens"],
                       u["cache_read_input_tokens"]) for u in bills]
    warmdown = {"path": "trainer/train.py", "old": "WARMDOWN_RATIO = 0.5", "new": "WARMDOWN_RATIO = 0.6"}

    # 1. The cap ($0.001) is reached in the middle of the first proposal, after three billed
    #    answers and an edit: a clean stop, the edit gone, the dollars in a `stopped` row.
    api["now"] = FakeAnthropic([tool_use("read_ledger", {}, use=bills[0]),
                                tool_use("replace_in_file", warmdown, use=bills[1]),
                                tool_use("read_ledger", {}, use=bills[2])])
    c, why, code, _ = run_campaign(where, "agent=claude", "agent.max_cost_usd=0.001", "campaign.max_experiments=3")
    assert code == 0 and "agent.max_cost_usd" in why, why
    assert sum(billed[:3]) >= 0.001 > sum(billed[:2]) and len(api["now"].requests) == 3
    recs = rows(c)
    assert [(r["seq"], r["status"]) for r in recs] == [(0, "keep"), (1, "stopped")]
    stopped = recs[1]
    assert stopped["agent_cost_usd"] == pytest.approx(sum(billed[:3]), abs=1e-6)
    assert stopped["agent_tokens_in"] == 260 and stopped["agent_cache_read"] == 500
    assert stopped["val_bpb"] is None and stopped["full_commit"] == c.kept_commit() == recs[0]["full_commit"]
    assert git(c.tree, "status", "--porcelain") == "" and git(c.tree, "rev-parse", "HEAD") == c.kept_commit()
    assert c.experiments_done() == 0 and c.state.pending is None and c.ledger.best()["seq"] == 0
    assert c.keep_decision().rule().noise.dof == 0  # a stopped row measures no noise
    assert "stopped" in "\n".join(c.ledger.summary_lines()) and "best kept" in c.report()

    # 2. Resumed with a higher cap: the spend goes on from the ledger's, every dollar in it.
    api["now"] = FakeAnthropic([tool_use("replace_in_file", warmdown, use=bills[3]),
                                tool_use("run_experiment", {"description": "longer warm-down"}, use=bills[4])])
    c, why, code, _ = run_campaign(where, "agent=claude", "agent.max_cost_usd=0.01", "campaign.max_experiments=1")
    assert code == 0 and "max_experiments=1 reached" in why, why
    recs = rows(c)
    assert [(r["seq"], r["status"]) for r in recs] == [(0, "keep"), (1, "stopped"), (2, "keep")]
    assert recs[2]["agent_cost_usd"] == pytest.approx(sum(billed[3:]), abs=1e-6)
    assert c.agent_spent() == pytest.approx(sum(billed), abs=1e-6)
    assert c.agent.spent_usd == pytest.approx(sum(billed), abs=1e-6)
    brief = api["now"].requests[0]["body"]["messages"][0]["content"][0]["text"]
    assert "Last experiment: baseline" in brief  # the stopped proposal is not an experiment to learn from


def test_spend_survives_ctrl_c_mid_proposal_and_a_turn_limit_without_an_edit(cache_dir, where, monkeypatch):
    """Ctrl-C (or SIGTERM) while the agent converses, and a proposal that runs out of turns
    with no edit: both end the proposal, and both leave a `stopped` row with what the API
    billed, so the spend after a resume is the sum of every response."""
    from harness import campaign as C
    from harness.agents.claude import ClaudeAgent
    from harness.agents.prices import cost_usd, price_for
    from tests.fake_anthropic import FakeAnthropic, tool_use, usage

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-not-a-real-key")
    api = {}
    monkeypatch.setattr(C, "make_agent", lambda cfg, seed: ClaudeAgent(cfg, seed, http_client=api["now"].client()))
    stub_experiments(monkeypatch, [1.0])
    price = price_for(compose_dict("run", ["agent=claude"])["agent"]["model"])
    bills = [usage(100, 20), usage(60, 10, cache_read=500), usage(70, 5), usage(90, 25, cache_read=300)]
    billed = [cost_usd(price, u["input_tokens"], u["output_tokens"], u["cache_creation_input_tokens"],
                       u["cache_read_input_tokens"]) for u in bills]
    real_tool = ClaudeAgent._tool

    def interrupted_edit(self, name, args, ctx, edits):
        if name == "replace_in_file":
            raise KeyboardInterrupt  # what Ctrl-C (or SIGTERM, through harness/stops.py) raises mid-proposal
        return real_tool(self, name, args, ctx, edits)

    monkeypatch.setattr(ClaudeAgent, "_tool", interrupted_edit)
    api["now"] = FakeAnthropic([tool_use("read_ledger", {}, use=bills[0]),
                                tool_use("replace_in_file", {"path": "trainer/train.py", "old": "x", "new": "y"},
                                         use=bills[1])])
    with pytest.raises(KeyboardInterrupt):
        run_campaign(where, "agent=claude", "campaign.max_experiments=3")
    c, _, _, _ = run_campaign(where, "agent=claude", "campaign.max_experiments=0")  # reads the ledger back
    recs = rows(c)
    assert [(r["seq"], r["status"]) for r in recs] == [(0, "keep"), (1, "stopped")]
    assert recs[1]["reason"] == "interrupted by the user during the proposal"
    assert recs[1]["agent_cost_usd"] == pytest.approx(sum(billed[:2]), abs=1e-6)

    monkeypatch.setattr(ClaudeAgent, "_tool", real_tool)
    api["now"] = FakeAnthropic([tool_use("list_files", {}, use=bills[2]), tool_use("list_files", {}, use=bills[3])])
    c, why, code, _ = run_campaign(where, "agent=claude", "agent.max_turns=2", "campaign.max_experiments=3")
    assert code == 0 and "no edit in 2 turns" in why, why
    recs = rows(c)
    assert [(r["seq"], r["status"]) for r in recs] == [(0, "keep"), (1, "stopped"), (2, "stopped")]
    assert c.agent_spent() == pytest.approx(sum(billed), abs=1e-6) and c.experiments_done() == 0
