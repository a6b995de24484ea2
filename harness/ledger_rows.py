"""What a campaign's ledger row holds: the fields of each kind of row, in one place.

harness/ledger.py stores rows and knows nothing of their fields beyond the TSV's columns;
the README's ledger section lists what the JSONL holds. Three kinds of row:
  - an experiment (status keep, discard, crash or refused): the first run's outcome, the
    proposal's agent usage, and (added by the loop) the mean of its runs and the keep rule;
  - `confirm`: each further run of the same commit (the baseline's extra runs, the
    re-runs of a gain within the noise), pointing at its experiment with `confirms`;
  - `stopped`: no experiment: the agent was stopped mid-proposal (agent.max_cost_usd, an
    API error, agent.max_turns without an edit, Ctrl-C or SIGTERM) after requests that
    were billed; the row carries that usage so the
    campaign's spend (the sum of agent_cost_usd) counts every dollar across resumes.
A fourth kind, `replay`, is another campaign's commit run here by `autoresearch replay`
(harness/replay.py), marked with `replay_of` {tag, slot, seq, commit} and `replay_mode`
(baseline, cumulative or individual): a measurement for the transfer matrix, never this
campaign's experiment (the keep decision, its noise and the best ignore it).
Every row takes a seq number of its own (the ledger's key); `confirm`, `stopped` and
`replay` rows are not experiments (campaign.max_experiments does not count them).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from harness.agents import Proposal
from harness.campaign_state import Pending, stamp
from harness.ledger import metric

CONFIRM, STOPPED, REPLAY = "confirm", "stopped", "replay"
NOT_EXPERIMENTS = (CONFIRM, STOPPED, REPLAY)


def kept_value(record: dict) -> float | None:
    """A kept row's val_bpb as the keep rule saw it: the mean of its runs (or its one run)."""
    mean = metric(record.get("mean_val_bpb"))
    return mean if mean is not None else metric(record)


def us_per_token(out: dict) -> float | None:
    """Microseconds of training per timed token, by the harness's clock and feed (lower is
    faster): what a kernel campaign's keep rule compares."""
    secs, tokens = out.get("training_seconds"), out.get("timed_tokens")
    if not isinstance(secs, (int, float)) or not isinstance(tokens, (int, float)) or tokens <= 0 or secs <= 0:
        return None
    return 1e6 * secs / tokens


def kept_speed(record: dict) -> float | None:
    """A kept row's us_per_token as the keep rule saw it: the mean of its runs."""
    mean = metric(record.get("mean_us_per_token"))
    return mean if mean is not None else metric(record.get("us_per_token"))


def is_experiment(record: dict) -> bool:
    """A proposal after the baseline (what campaign.max_experiments counts)."""
    return record["seq"] > 0 and record.get("status") not in NOT_EXPERIMENTS


@dataclass(frozen=True)
class RowContext:
    """What every row of one campaign call shares."""
    backend: str
    agent: str
    calibration: dict | None
    slot: str | None = None  # the campaign's device slot (harness/slot.py); None: the backend's name
    marks: dict = field(default_factory=dict)  # fields every row of the call carries (a replay's replay_of, replay_mode)


def _base(ctx: RowContext, seq: int, commit: str, parent: str, status: str, description: str) -> dict:
    return {"seq": seq, "commit": commit[:12], "full_commit": commit, "parent": parent, "val_bpb": None,
            "memory_gb": None, "status": status, "description": description, "backend": ctx.backend,
            "slot": ctx.slot or ctx.backend, **ctx.marks}


def experiment_row(ctx: RowContext, seq: int, pending: Pending, out: dict, status: str, cycle_seconds: float,
                   diff: dict) -> dict:
    """The row of one run of `pending` (`out`: experiment.run's summary); a `confirm` row
    carries no agent usage (the experiment's row has it, once)."""
    mem, cal = out.get("peak_memory_mb"), ctx.calibration or {}
    row = {**_base(ctx, seq, pending.commit, pending.parent, status, pending.description),
           "val_bpb": metric(out.get("val_bpb")),
           "memory_gb": mem / 1024 if isinstance(mem, (int, float)) else None,
           "device": out.get("device"), "budget_s": out.get("budget_seconds"), "time": stamp(),
           "experiment_status": out["status"], "reason": out.get("reason", ""),
           "error_tail": (out.get("log_tail") or "")[-3000:], "steps": out.get("num_steps"),
           "tokens": out.get("total_tokens"), "isolation": out.get("isolation"),
           "mfu_percent": out.get("mfu_percent"), "training_seconds": out.get("training_seconds"),
           "total_seconds": out.get("total_seconds"), "eval_seconds": out.get("eval_seconds"),
           "budget_mode": out.get("budget_mode"), "calibration_id": cal.get("id"),
           "calibration_quality": cal.get("quality"), "calibration_cv": cal.get("cv"), "diff": diff,
           "cycle_seconds": cycle_seconds, "agent": ctx.agent, "agent_seconds": pending.agent_seconds,
           "run_dir": out.get("run_dir"), "us_per_token": us_per_token(out), "telemetry": out.get("telemetry")}
    if status != CONFIRM:
        row.update(pending.usage)
    return row


def confirm_row(ctx: RowContext, pending: Pending, attempt: int, out: dict, diff: dict) -> dict:
    """Run `attempt` (1, 2...) beyond the first of the experiment `pending`."""
    row = experiment_row(ctx, pending.seq + attempt, pending, out, CONFIRM, 0.0, diff)
    return {**row, "confirms": pending.seq,
            "description": f"confirm {attempt} of exp {pending.seq}: {pending.description}"}


def replay_row(ctx: RowContext, seq: int, run: Pending, out: dict, diff: dict) -> dict:
    """One run of another campaign's commit (`run`: its commit, the parent its diff is
    against, the description); ctx.marks says which commit of which campaign, and how."""
    return experiment_row(ctx, seq, run, out, REPLAY, 0.0, diff)


def stopped_row(ctx: RowContext, seq: int, kept: str, partial: Proposal, why: str, agent_seconds: float) -> dict:
    """A proposal the agent was stopped in (nothing committed, nothing run: its commit is
    the kept one), with the usage it was billed for."""
    return {**_base(ctx, seq, kept, kept, STOPPED, f"(stopped) {why}"), "time": stamp(),
            "experiment_status": None, "reason": why, "agent": ctx.agent, "agent_seconds": agent_seconds,
            **partial.as_record()}
