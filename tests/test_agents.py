"""Agents: random (seeded literal mutation), scripted (replay), claude (the real anthropic
client against a local wire-format stand-in: tools, retries, caching, cost, the key)."""
import ast
import json
import logging

import anthropic
import pytest

from harness.agents import Context, CostCapReached, Proposal, StopCampaign
from harness.agents.claude import ClaudeAgent
from harness.agents.prices import price_for
from harness.agents.random_agent import DEFAULT_EXCLUDE, find_knobs
from harness.agents.registry import make_agent
from harness.workspace import EditError, ScopeError, Workspace
from tests.fake_anthropic import FakeAnthropic, end_turn, error, tool_use, usage

# The SDK warns that the default model is deprecated; that is for users, not these tests.
pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")

TRAIN = '''import prepare

MAX_SEQ_LEN = prepare.MAX_SEQ_LEN  # not a literal: never touched
DEPTH = 4  # blocks
MATRIX_LR = 0.04  # Muon LR
LR = 0.04  # a name that is a suffix of MATRIX_LR's
ADAM_BETAS = (0.8, 0.95)  # betas
WARMDOWN_RATIO = 0.5  # fraction of the budget
FINAL_LR_FRAC = 0.0  # LR multiplier at the end
MUON_MOMENTUM = 0.95  # momentum
TOTAL_BATCH_SIZE = 524288  # tokens per step
USE_BIAS = False  # bias in linears
WINDOW_PATTERN = "SSSL"  # attention windows
SEED = 42  # excluded
PRINT_EVERY = 10  # excluded
USE_COMPILE = True  # excluded
WARMUP_STEPS_UNTIMED = 2  # excluded

def main():
    LOCAL = 3
'''


def ctx_for(root, editable=("train.py",), seq=None, last=None, lines=()):
    ws = Workspace(root, list(editable), immutable=["prepare.py"])
    return Context(ws, "# program\nLower val_bpb.", list(lines), last, seq)


@pytest.fixture()
def tree(tmp_path):
    (tmp_path / "train.py").write_text(TRAIN)
    (tmp_path / "prepare.py").write_text("MAX_SEQ_LEN = 64\n")
    return tmp_path


# ----------------------------------------------------------------------------- random
def run_random(root, seed, steps, **cfg):
    agent = make_agent({"name": "random", "choices": {"WINDOW_PATTERN": ["SSSL", "L", "SL"]},
                        **cfg}, seed)
    descs = [agent.propose(ctx_for(root)).description for _ in range(steps)]
    return descs, (root / "train.py").read_text()


def test_random_deterministic(tree, tmp_path_factory):
    other = tmp_path_factory.mktemp("other")
    (other / "train.py").write_text(TRAIN)
    a = run_random(tree, 7, 25)
    assert a == run_random(other, 7, 25)
    (other / "train.py").write_text(TRAIN)
    assert run_random(other, 8, 25)[0] != a[0]
    assert all(" -> " in d for d in a[0])


def test_random_seq_makes_resume_reproducible(tree):
    agent = make_agent({"name": "random"}, 3)
    first = agent.propose(ctx_for(tree, seq=5)).description
    (tree / "train.py").write_text(TRAIN)
    again = make_agent({"name": "random"}, 3).propose(ctx_for(tree, seq=5)).description
    assert first == again


def test_random_changes_only_literals(tree):
    before = find_knobs(TRAIN)
    descs, after_text = run_random(tree, 1, 60, mutations_per_step=2)
    after = find_knobs(after_text)
    ast.parse(after_text)  # still a valid file
    old_lines, new_lines = TRAIN.splitlines(), after_text.splitlines()
    assert len(old_lines) == len(new_lines)
    for old, new in zip(old_lines, new_lines):
        if old != new:
            name = old.split(" = ")[0]
            k, k2 = before[name], after[name]
            assert old[:k.col] == new[:k2.col]  # the name and ' = '
            assert old[k.end_col:] == new[k2.end_col:]  # the comment, untouched
    for name in DEFAULT_EXCLUDE:
        assert after[name].value == before[name].value
    assert all(not any(d.startswith(n + " ") for n in DEFAULT_EXCLUDE)
               for step in descs for d in step.split("; "))
    assert "MAX_SEQ_LEN = prepare.MAX_SEQ_LEN" in after_text and "LOCAL = 3" in after_text
    assert isinstance(after["DEPTH"].value, int) and after["DEPTH"].value >= 1
    tbs = after["TOTAL_BATCH_SIZE"].value
    assert isinstance(tbs, int) and tbs & (tbs - 1) == 0
    assert 0 <= after["WARMDOWN_RATIO"].value <= 1 and 0 <= after["FINAL_LR_FRAC"].value <= 1
    assert 0 < after["MUON_MOMENTUM"].value < 1
    assert all(0 < b < 1 for b in after["ADAM_BETAS"].value)
    assert after["WINDOW_PATTERN"].value in ("SSSL", "L", "SL")


def test_random_description_and_log_step(tree):
    agent = make_agent({"name": "random", "include": ["MATRIX_LR"], "log_step": 0.5}, 0)
    ctx = ctx_for(tree)
    d = agent.propose(ctx).description
    name, old, arrow, new = d.split()
    assert (name, old, arrow) == ("MATRIX_LR", "0.04", "->")
    assert 0.04 * 0.6 <= float(new) <= 0.04 * 1.66
    text = (tree / "train.py").read_text()
    assert f"MATRIX_LR = {new}  # Muon LR\n" in text and "\nLR = 0.04  # a name" in text
    assert make_agent({"name": "random", "include": ["SEED"]}, 0).propose(ctx) is None  # none left


# ----------------------------------------------------------------------------- scripted
def test_scripted_in_order_then_none(tree):
    agent = make_agent({"name": "scripted", "edits": [
        {"description": "deeper", "path": "train.py", "old": "DEPTH = 4", "new": "DEPTH = 6"},
        {"description": "two", "edits": [dict(path="train.py", old="DEPTH = 6", new="DEPTH = 7"),
                                         dict(path="train.py", old="\nLR", new="\nLR2")]},
        {"description": "rewrite", "path": "train.py", "content": "DEPTH = 2\n"}]}, 0)
    ctx = ctx_for(tree)
    assert agent.propose(ctx).description == "deeper"
    assert "DEPTH = 6  # blocks" in (tree / "train.py").read_text()
    assert agent.propose(ctx).description == "two"
    text = (tree / "train.py").read_text()
    assert "DEPTH = 7  #" in text and "\nLR2 = 0.04" in text
    assert agent.propose(ctx) == Proposal("rewrite")
    assert (tree / "train.py").read_text() == "DEPTH = 2\n"
    assert agent.propose(ctx) is None


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_scripted_from_file(tree, tmp_path_factory, suffix):
    steps = [{"description": "lr", "path": "train.py", "old": "_LR = 0.04", "new": "_LR = 0.05"}]
    script = tmp_path_factory.mktemp("s") / f"edits{suffix}"
    script.write_text(json.dumps(steps))  # JSON is valid YAML too
    agent = make_agent({"name": "scripted", "script": str(script)}, 0)
    assert agent.propose(ctx_for(tree)).description == "lr"
    assert "MATRIX_LR = 0.05" in (tree / "train.py").read_text()


def test_scripted_errors_are_loud(tree):
    ctx = ctx_for(tree)
    agent = make_agent({"name": "scripted", "edits": [
        {"description": "escape", "path": "../x.py", "content": "x"},
        {"description": "missing", "path": "train.py", "old": "NOPE", "new": "x"}]}, 0)
    with pytest.raises(ScopeError):
        agent.propose(ctx)
    assert ctx.workspace.refusals
    with pytest.raises(EditError):
        agent.propose(ctx)
    with pytest.raises(ValueError, match="needs path"):
        make_agent({"name": "scripted", "edits": [{"description": "bad"}]}, 0)
    with pytest.raises(ValueError, match="unknown agent"):
        make_agent({"name": "gpt"}, 0)


# ----------------------------------------------------------------------------- claude
SECRET = "sk-ant-api03-TESTKEY-never-in-logs-0123456789"
PRICES = {"claude-sonnet-4-5": dict(input=3.0, output=15.0, cache_write=3.75, cache_read=0.3)}


@pytest.fixture()
def fast_retries(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    # The SDK's backoff starts at 0.5 s; the tests keep its code path but not the wait.
    monkeypatch.setattr(anthropic._base_client, "INITIAL_RETRY_DELAY", 0.001)


def claude(api, **cfg):
    return ClaudeAgent({"model": "claude-sonnet-4-5", "prices": PRICES, "max_retries": 4, **cfg},
                       0, http_client=api.client())


def test_claude_full_proposal(tree, fast_retries, caplog, capfd):
    for name in ("anthropic", "httpx2", "harness"):
        caplog.set_level(logging.DEBUG, logger=name)
    api = FakeAnthropic([
        tool_use("list_files", {}, "Let me look.", usage(1000, 30, cache_write=900)),
        tool_use("read_file", {"path": "train.py"}, use=usage(50, 20, cache_read=900)),
        error(429, {"retry-after": "0"}),
        error(529, {"retry-after": "0.2", "x-should-retry": "true"}),
        error(500),
        tool_use("write_file", {"path": "../evil.py", "content": "x"}, use=usage(60, 40)),
        tool_use("replace_in_file", {"path": "train.py", "old": "MATRIX_LR = 0.04",
                                     "new": "MATRIX_LR = 0.05"}, use=usage(70, 50)),
        tool_use("run_experiment", {"description": "raise MATRIX_LR to 0.05"}, use=usage(80, 60)),
    ])
    agent = claude(api)
    last = {"status": "crash", "val_bpb": None, "description": "deeper",
            "error_tail": "Traceback ...\nRuntimeError: out of memory"}
    ctx = ctx_for(tree, last=last, lines=["seq  status   val_bpb   description",
                                          "0    keep     1.234567  baseline"])
    p = agent.propose(ctx)
    assert p.description == "raise MATRIX_LR to 0.05"
    assert "MATRIX_LR = 0.05  # Muon LR" in (tree / "train.py").read_text()
    assert not (tree.parent / "evil.py").exists()
    assert (p.tokens_in, p.tokens_out, p.cache_write, p.cache_read) == (1260, 200, 900, 900)
    want = (1260 * 3.0 + 200 * 15.0 + 900 * 3.75 + 900 * 0.30) / 1e6
    assert p.cost_usd == pytest.approx(want) and agent.spent_usd == pytest.approx(want)
    # 5 answered requests plus 3 retried failures, retried by the SDK itself.
    reqs = api.requests
    assert len(reqs) == 8 and all(r["path"] == "/v1/messages" for r in reqs)
    assert [r["headers"].get("x-stainless-retry-count") for r in reqs[2:6]] == ["0", "1", "2", "3"]
    assert reqs[2]["body"] == reqs[5]["body"]
    assert reqs[4]["t"] - reqs[3]["t"] >= 0.18  # retry-after: 0.2 on the 529 was honoured
    body = reqs[0]["body"]
    assert body["model"] == "claude-sonnet-4-5"
    system = body["system"][0]
    assert system["cache_control"] == {"type": "ephemeral"}
    assert system["text"].startswith("# program") and "train.py" in system["text"]
    assert body["tools"][-1]["cache_control"] == {"type": "ephemeral"}
    assert {t["name"] for t in body["tools"]} == {"list_files", "read_file", "replace_in_file",
                                                  "write_file", "read_ledger", "run_experiment"}
    first = body["messages"][0]["content"][0]["text"]
    assert "1.234567  baseline" in first and "RuntimeError: out of memory" in first
    # The refused write came back to the model as an error result, not an exception.
    refused = reqs[6]["body"]["messages"][-1]["content"][0]
    assert refused["type"] == "tool_result" and refused["is_error"] is True
    assert refused["content"].startswith("refused:") and "traversal" in refused["content"]
    assert ctx.workspace.refusals
    read = reqs[2]["body"]["messages"][-1]["content"][0]
    assert read["content"] == TRAIN and "is_error" not in read
    # Only the newest message carries the conversation's cache breakpoint.
    marks = [b for m in reqs[6]["body"]["messages"] if isinstance(m["content"], list)
             for b in m["content"] if "cache_control" in b]
    assert marks == [reqs[6]["body"]["messages"][-1]["content"][-1]]
    # The key went to the API from the environment, and nowhere else.
    # (this SDK sends it as "Authorization: Bearer"; older ones used x-api-key)
    assert all(SECRET in (r["headers"].get("x-api-key", "") + r["headers"].get("authorization", ""))
               for r in reqs)
    assert "Retrying request" in caplog.text and "claude: 5 turns" in caplog.text
    out, err = capfd.readouterr()
    bodies = json.dumps([r["body"] for r in reqs])
    assert all(SECRET not in t for t in (caplog.text, out, err, repr(agent), repr(p), bodies))
    # A new proposal starts a fresh, bounded conversation.
    api.script = [tool_use("run_experiment", {"description": "again"})]
    assert agent.propose(ctx).description == "again"
    assert len(api.requests[-1]["body"]["messages"]) == 1


def test_claude_cost_cap(tree, fast_retries):
    pricey = {"claude-sonnet-4-5": {"input": 1000.0, "output": 1000.0, "cache_write": 0,
                                    "cache_read": 0}}
    api = FakeAnthropic([tool_use("run_experiment", {"description": "one"}, use=usage(100, 0))])
    agent = claude(api, prices=pricey, max_cost_usd=0.1)
    assert agent.propose(ctx_for(tree)).cost_usd == pytest.approx(0.1)
    with pytest.raises(CostCapReached) as e:
        agent.propose(ctx_for(tree))
    assert len(api.requests) == 1  # refused before sending another request
    assert isinstance(e.value, StopCampaign) and e.value.spent_usd == pytest.approx(0.1)
    # Mid-proposal: the cap is checked before every request, the partial usage is kept.
    api = FakeAnthropic([tool_use("read_ledger", {}, use=usage(60, 0)),
                         tool_use("read_ledger", {}, use=usage(60, 0))])
    agent = claude(api, prices=pricey, max_cost_usd=0.1)
    with pytest.raises(CostCapReached) as e:
        agent.propose(ctx_for(tree))
    assert len(api.requests) == 2 and e.value.partial.tokens_in == 120


def test_claude_stopped_by_the_api_mid_proposal_says_what_was_billed(tree, fast_retries):
    api = FakeAnthropic([tool_use("read_ledger", {}, use=usage(70, 5)), *[error(529)] * 5])
    with pytest.raises(StopCampaign, match="529") as e:
        claude(api).propose(ctx_for(tree))
    assert e.value.code == 7 and e.value.partial.tokens_in == 70 and e.value.partial.cost_usd > 0


def test_claude_nudge_turn_limit_and_errors(tree, fast_retries):
    api = FakeAnthropic([end_turn("I think we should raise the LR."),
                         tool_use("run_experiment", {"description": "x"})])
    assert claude(api).propose(ctx_for(tree)).description == "x"
    assert "run_experiment" in api.requests[1]["body"]["messages"][-1]["content"][0]["text"]
    api = FakeAnthropic([tool_use("list_files", {})] * 2)
    with pytest.raises(StopCampaign, match="no edit in 2 turns") as e:  # a clean end that carries its spend
        claude(api, max_turns=2).propose(ctx_for(tree))
    assert e.value.code == 0 and e.value.partial.cost_usd > 0 and e.value.partial.tokens_in > 0
    api = FakeAnthropic([tool_use("replace_in_file", {"path": "train.py", "old": "DEPTH = 4",
                                                      "new": "DEPTH = 5"})])
    p = claude(api, max_turns=1).propose(ctx_for(tree))
    assert p.description.startswith("(turn limit reached)")
    with pytest.raises(StopCampaign, match="credentials") as e:
        claude(FakeAnthropic([error(401)])).propose(ctx_for(tree))
    assert SECRET not in str(e.value)
    api = FakeAnthropic([error(529)] * 5)
    with pytest.raises(StopCampaign, match="529"):
        claude(api).propose(ctx_for(tree))
    assert len(api.requests) == 5  # the first try and max_retries=4 retries


def test_claude_construction(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(StopCampaign, match="ANTHROPIC_API_KEY"):
        make_agent({"name": "claude"}, 0)
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    agent = make_agent({"name": "claude"}, 0)
    from harness.agent_config import ClaudeAgentConf
    from harness.config import compose_dict

    # one default model: what the config gives agent=claude is what the agent uses alone
    assert agent.model == compose_dict("run", ["agent=claude"])["agent"]["model"] == ClaudeAgentConf.model
    assert agent.max_turns == 30
    assert SECRET not in repr(agent) and SECRET not in str(vars(agent).keys())
    with pytest.raises(ValueError, match="no price"):
        make_agent({"name": "claude", "model": "claude-unknown-9"}, 0)
    assert price_for("claude-sonnet-4-5-20250929")["input"] == 3.0
    with pytest.raises(KeyError):
        price_for("claude-sonnet-4-5-turbo")
