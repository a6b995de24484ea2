"""Agents: what proposes the next experiment (`agent=`; docs/architecture.md, "One campaign").

One small interface (`base.Agent.propose(ctx) -> Proposal | None`) and the agents behind it:
`random` (seeded hyperparameter mutation, no LLM), `scripted` (replays a list of edits) and
`claude` (the Anthropic Messages API with tools). `make_agent(cfg, seed)` picks one by
cfg["name"]. The `external` agent is driven through the CLI and lives with the loop.
"""
from harness.agents.base import (Agent, Context, CostCapReached, Proposal, StopCampaign,
                                  make_agent)

__all__ = ["Agent", "Context", "CostCapReached", "Proposal", "StopCampaign", "make_agent"]
