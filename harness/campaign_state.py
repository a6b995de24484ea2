"""A campaign's state, campaign.json, and its one owner.

    state = CampaignState.load(path)          (or CampaignState.create(path, ...) for a new campaign)
    state.note_pending(Pending.of(seq, commit, parent, proposal, agent_seconds))
    state.add_run(out); state.clear_pending()

The ledger holds what was decided; the state holds the rest: where the campaign started
(base_commit), its agent, its fixed settings and budget (harness/fixed.py), the baselines
that failed, and the candidate being run (`pending`, the resume point). Every change goes
through a CampaignState method and each one ends in `save()`, the only writer, which
replaces the file atomically: a kill at any instant leaves the state before the change or
after it, and a change cannot be made without being saved.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness import fixed
from harness.agents import Proposal
from harness.budget import Budget
from trainer import atomic


def stamp() -> str:
    """The time a state entry (or a ledger row) is written, as every campaign file has it."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Known:
    """The outcome of a candidate that needs no run: no change (discard), an edit refused
    (refused) or one that did not apply (crash)."""
    status: str
    reason: str


@dataclass
class Pending:
    """The candidate noted before it runs: the resume point (a campaign killed while it
    runs re-runs it). In campaign.json it is one flat object, the shape every version has
    written: seq, commit, parent, description, agent_seconds, the proposal's agent_* ledger
    fields, runs, and known and gates when set."""
    seq: int
    commit: str  # the candidate's commit (its parent for a candidate with nothing to run)
    parent: str  # the kept commit it was made from: what a discard resets to
    description: str
    agent_seconds: float | None = None  # how long proposing took
    usage: dict[str, Any] = field(default_factory=dict)  # agent_tokens_in, ..., agent_cost_usd
    runs: list[dict] = field(default_factory=list)  # experiment.run summaries so far
    known: Known | None = None  # set: nothing to run, the outcome is already known
    gates: dict | None = None  # a kernel candidate's checks before it is timed (None: not yet passed through)

    @classmethod
    def of(cls, seq: int, commit: str, parent: str, proposal: Proposal, agent_seconds: float,
           known: Known | None = None) -> "Pending":
        return cls(seq, commit, parent, proposal.description, agent_seconds, proposal.as_record(), [], known)

    def to_json(self) -> dict:
        out = {"seq": self.seq, "commit": self.commit, "parent": self.parent, "description": self.description,
               "agent_seconds": self.agent_seconds, **self.usage, "runs": list(self.runs)}
        if self.known is not None:
            out["known"] = {"status": self.known.status, "reason": self.known.reason}
        if self.gates is not None:
            out["gates"] = self.gates
        return out

    @classmethod
    def from_json(cls, d: Any) -> "Pending":
        ok = (isinstance(d, dict) and isinstance(d.get("seq"), int) and isinstance(d.get("commit"), str)
              and isinstance(d.get("parent"), str) and isinstance(d.get("runs", []), list))
        if not ok:
            raise ValueError(f"its pending experiment is not one (seq, commit, parent): {str(d)[:200]}")
        known = d.get("known")
        return cls(d["seq"], d["commit"], d["parent"], str(d.get("description", "")), d.get("agent_seconds"),
                   {k: v for k, v in d.items() if k.startswith("agent_") and k != "agent_seconds"},
                   list(d.get("runs", [])),
                   Known(known["status"], known.get("reason", "")) if isinstance(known, dict) else None,
                   d["gates"] if isinstance(d.get("gates"), dict) else None)


class CampaignState:
    """campaign.json: typed reads, and changes that each save."""

    def __init__(self, path: Path, data: dict):
        self.path = Path(path)
        self._data = {k: v for k, v in data.items() if k != "pending"}  # kept whole: keys newer versions add
        self._pending = Pending.from_json(data["pending"]) if data.get("pending") else None

    @classmethod
    def create(cls, path: Path, tag: str, backend: str, branch: str, base_commit: str,
               slot: str | None = None) -> "CampaignState":
        """A new campaign's state (written by its first change); `slot`: its device slot
        (harness/slot.py), the backend's name when not given."""
        return cls(path, {"tag": tag, "backend": backend, "slot": slot or backend, "branch": branch,
                          "base_commit": base_commit, "created": stamp()})

    @classmethod
    def load(cls, path: Path) -> "CampaignState":
        try:
            data = json.loads(Path(path).read_text())
        except ValueError as e:
            raise ValueError(f"{path} is not valid JSON ({e}): restore it, or move the campaign "
                             f"folder away to start afresh") from None
        if not isinstance(data, dict) or not isinstance(data.get("base_commit"), str):
            raise ValueError(f"{path} is not a campaign state (no base_commit)")
        try:
            return cls(path, data)
        except ValueError as e:
            raise ValueError(f"{path}: {e}: restore it, or move the campaign folder away to start afresh") from None

    @staticmethod
    def agent_of(path: Path) -> str | None:
        """The agent a campaign's state names, read without opening it (before the lock);
        None when there is no readable state: opening it says what is wrong."""
        try:
            return json.loads(Path(path).read_text()).get("agent")
        except (OSError, ValueError, AttributeError):
            return None

    # ------------------------------------------------------------------ reads
    @property
    def base_commit(self) -> str:
        return self._data["base_commit"]

    @property
    def settings(self) -> dict | None:
        """The fixed settings (harness/fixed.py), None before the first call decided them."""
        return self._data.get("settings")

    @property
    def budget(self) -> Budget | None:
        return fixed.budget_of(self._data)

    @property
    def pending(self) -> Pending | None:
        return self._pending

    @property
    def baseline_failures(self) -> list[dict]:
        return list(self._data.get("baseline_failures", []))

    # ------------------------------------------------------------------ changes (each one saves)
    def set_agent(self, name: str) -> None:
        self._data["agent"] = name
        self.save()

    def set_settings(self, settings: dict, drop_pending: bool) -> Pending | None:
        """The campaign's fixed settings, decided (again) before its baseline is recorded: the
        budget resolved under others goes; `drop_pending`: so do the interrupted runs made
        under them (returned)."""
        dropped = self._pending if drop_pending else None
        if drop_pending:
            self._pending = None
        self._data["settings"] = settings
        self._data.pop("budget", None)
        self.save()
        return dropped

    def set_budget(self, budget: Budget) -> None:
        self._data["budget"] = dataclasses.asdict(budget)
        self.save()

    def note_pending(self, pending: Pending) -> None:
        """The resume point, saved before the candidate runs."""
        self._pending = pending
        self.save()

    def add_run(self, out: dict) -> None:
        """One more finished run of the pending candidate (a kill re-runs only the rest)."""
        self._pending.runs.append(out)
        self.save()

    def clear_pending(self) -> None:
        """The candidate is recorded in the ledger (or dropped)."""
        self._pending = None
        self.save()

    def baseline_failed(self, status: str, reason: str, run_dir: str | None) -> None:
        """Nothing goes to the ledger: the next call runs the baseline afresh; the failure is listed."""
        self._pending = None
        self._data["baseline_failures"] = [*self.baseline_failures, {"time": stamp(), "status": status,
                                                                     "reason": reason, "run_dir": run_dir}]
        self.save()

    def save(self) -> None:
        """The one writer of campaign.json (atomic: the old file or the new, never half)."""
        data = dict(self._data)
        if self._pending is not None:
            data["pending"] = self._pending.to_json()
        atomic.write_json(self.path, data)
