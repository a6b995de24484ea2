"""Agents: what proposes the next experiment (`agent=`; docs/architecture.md, "One campaign").

One small interface (`base.Agent.propose(ctx) -> Proposal | None`) and the agents behind it:
`random` (seeded hyperparameter mutation, no LLM), `scripted` (replays a list of edits) and
`claude` (the Anthropic Messages API with tools). `registry.make_agent(cfg, seed)` picks one
by cfg["name"]; each agent's keys are its schema in harness/agent_config.py. The `external`
agent is driven through the CLI and lives with the loop.

Only the interface is imported here, not the registry: importing the package (for
StopCampaign, say) must not load every agent.
"""
from harness.agents.base import Agent, Context, CostCapReached, Proposal, StopCampaign

__all__ = ["Agent", "Context", "CostCapReached", "Proposal", "StopCampaign"]
