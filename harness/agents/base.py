"""The agent interface: a context in, an edited workspace and a Proposal out.

The loop (harness's campaign) owns everything around a proposal: committing, running the
experiment, keep/discard, the ledger. An agent only edits files through the Workspace it is
handed and says what it did. Stop conditions are exceptions that carry a message
(`StopCampaign`, `CostCapReached`), so the loop can end cleanly and save its state.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.workspace import Workspace


@dataclass
class Proposal:
    """What the agent changed (the ledger's description) and what asking for it cost."""
    description: str
    tokens_in: int = 0  # uncached input tokens
    tokens_out: int = 0
    cache_read: int = 0  # input tokens served from the prompt cache
    cache_write: int = 0  # input tokens written to the prompt cache
    cost_usd: float = 0.0

    def as_record(self) -> dict:
        """Ledger fields, prefixed so they never collide with the experiment's own."""
        return {"agent_tokens_in": self.tokens_in, "agent_tokens_out": self.tokens_out,
                "agent_cache_read": self.cache_read, "agent_cache_write": self.cache_write,
                "agent_cost_usd": round(self.cost_usd, 6)}


@dataclass
class Context:
    """What an agent sees for one proposal; rebuilt by the loop before every proposal."""
    workspace: Workspace
    program: str  # program.md: the standing instructions
    ledger_lines: list[str]  # Ledger.summary_lines(): the campaign so far, compact
    last: dict | None  # the previous experiment's record (status, val_bpb, description,
    #                    error_tail), None before the first proposal
    seq: int | None = None  # the experiment number this proposal will get, when known
    # What train.py's reads of `prepare` give in this campaign's runs: {"MODEL": the model
    # preset, "MAX_SEQ_LEN": ...}, so an agent knows the values behind `prepare.MODEL[...]`
    # (not agent config: the campaign's model and data decide them). None when unknown.
    prepare_values: dict | None = None


class StopCampaign(Exception):
    """End the campaign cleanly (the loop saves state and exits); `message` says why and
    `code` is the command's exit code: 7 (the campaign cannot go on: the agent cannot
    work) unless the raiser knows better (2: a setting the user must fix; 0: a limit the
    user set was reached). `partial`: the usage of a proposal stopped half-way (requests
    already billed), which the loop records in the ledger so no dollar goes uncounted."""

    def __init__(self, message: str, code: int = 7, partial: Proposal | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.partial = partial


class CostCapReached(StopCampaign):
    """The agent's spend reached `agent.max_cost_usd`; `partial` holds the unfinished
    proposal's usage so the loop can still account for it."""

    def __init__(self, message: str, spent_usd: float = 0.0, cap_usd: float = 0.0,
                 partial: Proposal | None = None):
        super().__init__(message, code=0, partial=partial)  # a limit the user set, reached: a clean end
        self.spent_usd = spent_usd
        self.cap_usd = cap_usd


class Agent:
    """Base class: `propose` edits ctx.workspace and returns a Proposal, or None when it has
    nothing more to try (the campaign then ends)."""
    name = "agent"
    spent_usd: float = 0.0  # dollars spent so far this campaign (LLM agents)

    def propose(self, ctx: Context) -> Proposal | None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def plain(cfg: Any) -> dict:
    """A plain dict from a dict or an OmegaConf node, so agents never hold config objects."""
    if cfg is None:
        return {}
    if isinstance(cfg, dict):
        return dict(cfg)
    from omegaconf import OmegaConf  # only when handed a Hydra config
    return OmegaConf.to_container(cfg, resolve=True)

