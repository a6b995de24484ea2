"""The agents by name: what `agent=NAME` makes.

The one place that knows the concrete agents; the interface (harness/agents/base.py) and
the agents import nothing from here, so the agents import no one in a circle. Each name
here also has a config schema (harness/agent_config.py, SCHEMAS) and a
conf/agent/<name>.yaml. The external agent is not made here: it is an outside program
that drives the campaign through `autoresearch record`.
"""
from __future__ import annotations

from typing import Any

from harness.agents.base import Agent, plain
from harness.agents.claude import ClaudeAgent
from harness.agents.random_agent import RandomAgent
from harness.agents.scripted import ScriptedAgent

AGENTS: dict[str, type[Agent]] = {
    "random": RandomAgent,
    "scripted": ScriptedAgent,
    "claude": ClaudeAgent,
}


def make_agent(cfg: Any, seed: int = 0, **kwargs) -> Agent:
    """The agent named by cfg["name"], built from cfg (a dict or an OmegaConf node).

    Extra keyword arguments go to the agent's constructor (the claude agent takes
    `http_client` for tests and proxies).
    """
    cfg = plain(cfg)
    name = cfg.get("name")
    if name not in AGENTS:
        raise ValueError(f"unknown agent {name!r}: expected {', '.join(AGENTS)} "
                         f"(the external agent is driven through the CLI)")
    return AGENTS[name](cfg, seed, **kwargs)
