"""Each agent has its own config schema: its keys compose, another agent's keys do not.

All in this process (the compose API, and the CLI's main): no experiment runs.
"""
from dataclasses import fields

import pytest
from hydra.errors import ConfigCompositionException

from harness import checks
from harness.agent_config import SCHEMAS, ClaudeAgentConf, agent_keys, keys_of
from harness.agents.registry import AGENTS
from harness.campaign import resolve_agent_name
from harness.checks import ConfigError
from harness.config import compose_dict
from tests.inproc import in_process

COMMON = {"name", "seed"}
# one override per key each agent has, with a value of the key's type
VALID = {
    "random": ["agent.mutations_per_step=2", "agent.log_step=0.25", "agent.exclude=[SEED]",
               "agent.include=[MATRIX_LR]", "+agent.choices.ACT=[relu,gelu]", "+agent.bounds.LR=[0.1,1]",
               "agent.path=trainer/train.py"],
    "scripted": ["agent.edits=[]", "agent.script=edits.yaml"],
    "claude": ["agent.model=claude-opus-4-1", "agent.max_cost_usd=1.5", "agent.max_turns=3", "agent.max_tokens=100",
               "agent.max_retries=0", "agent.timeout_s=30", "agent.temperature=0.2", "agent.base_url=http://x",
               "+agent.prices.claude-x={input:1,output:5}"],
    "external": [],
}
VALID["auto"] = VALID["random"] + VALID["claude"]  # either may be picked: either's keys


def test_every_agent_has_a_schema_and_every_made_agent_a_name():
    assert set(SCHEMAS) == {"auto", "random", "scripted", "claude", "external"}
    assert set(AGENTS) == set(SCHEMAS) - {"auto", "external"}  # auto resolves, external is outside
    for name, schema in SCHEMAS.items():
        assert COMMON <= set(keys_of(name)) and schema.name == name
    assert set(keys_of("external")) == COMMON
    assert set(keys_of("auto")) == set(keys_of("random")) | set(keys_of("claude"))


@pytest.mark.parametrize("name", sorted(VALID))
def test_each_agents_keys_compose_and_validate(name):
    cfg = compose_dict("run", [f"agent={name}", "agent.seed=7", *VALID[name]])
    assert cfg["agent"]["name"] == name and cfg["agent"]["seed"] == 7
    assert set(cfg["agent"]) == set(keys_of(name))
    checks.validate(cfg, log=lambda m: None)


@pytest.mark.parametrize("name,key", [
    ("random", "max_turns"), ("random", "edits"), ("scripted", "model"), ("scripted", "log_step"),
    ("claude", "mutations_per_step"), ("claude", "script"), ("external", "max_turns"), ("external", "choices"),
    ("auto", "edits"),
])
def test_another_agents_key_fails_at_composition(name, key):
    with pytest.raises(ConfigCompositionException, match=f"Could not override 'agent.{key}'"):
        compose_dict("run", [f"agent={name}", f"agent.{key}=3"])


def test_a_key_that_got_past_hydra_fails_validation_naming_the_agent_and_its_keys():
    cfg = compose_dict("run", ["agent=random", "+agent.max_turns=3"])  # `+` adds it without a word
    with pytest.raises(ConfigError, match=r"^agent.max_turns: agent random has no key 'max_turns'; its keys: "
                                          r"name, seed, mutations_per_step"):
        checks.validate(cfg, log=lambda m: None)
    with pytest.raises(ConfigError, match="agent claude has no key 'mutations_per_step'"):
        checks.validate(compose_dict("run", ["agent=random", "agent.name=claude"]), log=lambda m: None)
    with pytest.raises(ConfigError, match="agent.name='gpt': must be one of auto, random"):
        checks.validate(compose_dict("run", ["agent.name=gpt"]), log=lambda m: None)


def test_plus_overrides_of_any_agents_key_pass_check_overrides():
    for arg in ("+agent.max_turns=3", "+agent.bounds.LR=[0.1,1]", "+agent.edits=[]"):
        checks.check_overrides(["run", arg])
    with pytest.raises(ConfigError, match="unknown config key 'agent.max_turn'"):
        checks.check_overrides(["run", "+agent.max_turn=3"])


def test_cli_refuses_another_agents_key(tmp_path, capsys, monkeypatch):
    root = tmp_path / "campaigns"
    res = in_process(capsys, monkeypatch, "run", "agent=random", "agent.max_turns=3", "backend=cpu",
                     f"campaign.root={root}")
    assert res.returncode == 1, res.stderr
    assert "Key 'max_turns' not in 'RandomAgentConf'" in res.stderr and "Traceback" not in res.stderr
    res = in_process(capsys, monkeypatch, "run", "agent=random", "+agent.max_turns=3", "backend=cpu",
                     f"campaign.root={root}")
    assert res.returncode == 2 and "agent random has no key 'max_turns'" in res.stderr.strip().splitlines()[-1]
    assert not root.exists()


@pytest.mark.parametrize("key,picked", [(None, "random"), ("sk-test", "claude")])
def test_auto_hands_the_picked_agent_only_its_own_keys(monkeypatch, key, picked):
    if key:
        monkeypatch.setenv("ANTHROPIC_API_KEY", key)
    else:
        monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    cfg = compose_dict("run", ["agent.max_turns=3", "agent.log_step=0.25"])
    name = resolve_agent_name(cfg)
    assert name == picked
    own = agent_keys(cfg["agent"], name)
    assert set(own) == set(keys_of(picked)) and own["name"] == picked
    assert own.get("max_turns", 3) == 3 and own.get("log_step", 0.25) == 0.25


def test_the_random_agent_takes_an_auto_config(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    from harness.agents.registry import make_agent

    cfg = compose_dict("run", ["agent.max_turns=3", "agent.mutations_per_step=2"])
    agent = make_agent(agent_keys(cfg["agent"], resolve_agent_name(cfg)), seed=1)
    assert agent.name == "random" and agent.per_step == 2


def test_claude_defaults_are_the_schemas():
    from harness.agents import claude

    defaults = {f.name: f.default for f in fields(ClaudeAgentConf)}
    assert claude.DEFAULT_MODEL == defaults["model"] == compose_dict("run", ["agent=claude"])["agent"]["model"]
    assert defaults["model"] == "claude-sonnet-5"
