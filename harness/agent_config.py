"""One config schema per agent: the keys `agent.*` may hold depend on `agent=NAME`.

Each schema is registered in Hydra's ConfigStore as `agent_<name>_schema`, and
conf/agent/<name>.yaml lists it first in its defaults (`/agent_<name>_schema`, which lands
in the yaml's own `agent` package), so composition checks the chosen agent's keys and
types: `agent=random agent.max_turns=3` stops with Hydra's own "Key 'max_turns' not in
'RandomAgentConf'" (exit code 1), as any unknown key does.

`agent=auto` becomes claude when ANTHROPIC_API_KEY is set, else random, and which one is
only known when the campaign opens; so it takes the keys of both (`AutoAgentConf`), and
the campaign hands the agent it picked only that agent's own keys (`agent_keys`).

Kept apart from the agents themselves: composing a config must not import the agents'
code (the claude agent's SDK, torch).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Optional


# knobs the random agent never touches: they change what is measured, not the model
DEFAULT_EXCLUDE = ("SEED", "PRINT_EVERY", "WARMUP_STEPS_UNTIMED", "USE_COMPILE")


@dataclass
class AgentConf:
    """The keys every agent has."""
    name: str = "random"  # auto | random | scripted | claude | external
    seed: int = 0  # the random agent's draws (the same seed, the same campaign)


@dataclass
class RandomAgentConf(AgentConf):
    name: str = "random"
    mutations_per_step: int = 1  # knobs changed per experiment
    log_step: float = 0.5  # numeric knobs move by a factor exp(U[-log_step, log_step])
    exclude: List[str] = field(default_factory=lambda: list(DEFAULT_EXCLUDE))
    include: Optional[List[str]] = None  # when set, only these knobs are searched
    choices: Dict[str, Any] = field(default_factory=lambda: {"WINDOW_PATTERN": ["L", "SL", "SSL", "SSSL"]})
    bounds: Dict[str, Any] = field(default_factory=dict)  # NAME: [lo, hi] clamps a knob
    path: Optional[str] = None  # the file mutated; None = the editable train.py


@dataclass
class ScriptedAgentConf(AgentConf):
    name: str = "scripted"
    edits: List[Any] = field(default_factory=list)  # {description, path, old, new} or {description, path, content}
    script: Optional[str] = None  # a JSON/YAML file of edits (instead of `edits`)


@dataclass
class ClaudeAgentConf(AgentConf):
    name: str = "claude"
    model: str = "claude-sonnet-5"  # the claude agent's default model: read from here
    max_cost_usd: Optional[float] = 5.0  # hard cap across the campaign; ends it cleanly
    max_turns: int = 30  # tool turns per proposal
    max_tokens: int = 4096
    max_retries: int = 6  # the SDK's retries with backoff (429, 529, 5xx)
    timeout_s: float = 600.0
    temperature: Optional[float] = None
    base_url: Optional[str] = None  # None: the SDK's default (or ANTHROPIC_BASE_URL)
    prices: Dict[str, Any] = field(default_factory=dict)  # USD per MTok; overrides harness/agents/prices.py


@dataclass
class ExternalAgentConf(AgentConf):
    """An outside coding agent drives the campaign through `record`: nothing to set."""
    name: str = "external"


@dataclass
class AutoAgentConf(RandomAgentConf, ClaudeAgentConf):
    """Either agent may be picked, so either's keys are accepted; the other's are unused."""
    name: str = "auto"


# name -> schema: Hydra's agent options, and the keys each agent is handed
SCHEMAS: dict[str, type[AgentConf]] = {
    "auto": AutoAgentConf,
    "random": RandomAgentConf,
    "scripted": ScriptedAgentConf,
    "claude": ClaudeAgentConf,
    "external": ExternalAgentConf,
}


def keys_of(name: str) -> list[str]:
    """The keys agent `name` takes, in schema order."""
    return [f.name for f in fields(SCHEMAS[name])]


def agent_keys(agent_cfg: dict, name: str) -> dict:
    """The part of a composed `agent` node that agent `name` reads, named `name`: what an
    `auto` config (or a resumed campaign's agent) hands the agent actually picked."""
    own = set(keys_of(name)) if name in SCHEMAS else set(agent_cfg)  # an unknown name: make_agent says so
    return {**{k: v for k, v in agent_cfg.items() if k in own}, "name": name}


def key_problem(agent_cfg: dict) -> str:
    """'' or one line naming a key that the agent in `agent_cfg["name"]` does not have
    (Hydra refuses `agent.KEY=`, but `+agent.KEY=` and `agent.name=` get past it)."""
    name = agent_cfg.get("name")
    if name not in SCHEMAS:
        return f"agent.name={name!r}: must be one of {', '.join(SCHEMAS)}"
    own = keys_of(name)
    extra = [k for k in agent_cfg if k not in own]
    if extra:
        return (f"agent.{extra[0]}: agent {name} has no key {extra[0]!r}; "
                f"its keys: {', '.join(own)}")
    return ""


def register(store) -> None:
    """Each schema as the config `agent_<name>_schema` of a Hydra ConfigStore: at the top,
    not in the `agent` group, so `agent=` and `--help` offer only the agents themselves."""
    for name, schema in SCHEMAS.items():
        store.store(name=f"agent_{name}_schema", node=schema)
