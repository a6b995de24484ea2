"""`autoresearch run`: a research campaign — agent edits, experiment, keep or revert, repeat.

    autoresearch run backend=cpu model=tiny agent=random campaign.max_experiments=4
    autoresearch run campaign.tag=nov30          (the same tag resumes, after any crash)

A campaign lives in campaign.root/<tag>/<slot>/ (the slot: the backend's name, with
`-t<N>` for backend.threads and `-dev<K>` for backend.device, harness/slot.py): its git
work tree (branch `autoresearch/<tag>/<slot>`, never the project's own checkout), its
ledger (results.tsv, results.jsonl), the experiments' run directories and campaign.json
(state).
The first experiment is the unmodified baseline. A candidate is committed, and the commit
is noted as `pending` before it runs: a campaign killed at any instant resumes with the
work tree reset to the last kept commit and the interrupted candidate re-run.

This module is the campaign's interface (open, run, record, report and what they read);
one experiment's cycle is harness/cycle.py, the keep decision harness/decision.py, the
ledger rows' fields harness/ledger_rows.py and the state harness/campaign_state.py.
"""
from __future__ import annotations

import dataclasses
import os
import time
from datetime import datetime
from pathlib import Path

import backends
from harness import budgeting, fixed, gitwork, kernel_check, locks, workdir
from harness.agent_config import agent_keys
from harness.agents import StopCampaign
from harness.agents.registry import make_agent
from harness.campaign_state import CampaignState
from harness.cycle import cycle
from harness.decision import KeepDecision
from harness.display import Display
from harness.guard import ROOT
from harness.ledger import Ledger
from harness.ledger_rows import RowContext, is_experiment, kept_value
from harness.slot import slot
from harness.workspace import Workspace

SCOPES = {"train": ["trainer/train.py"], "kernels": ["kernels/*.py"], "all": ["trainer/train.py", "kernels/*.py"]}
# The references and the dispatch stay immutable in every scope: they define correct.
IMMUTABLE = ["trainer/prepare.py", *(f"kernels/{name}" for name in sorted(kernel_check.FIXED_FILES))]


def resolve_agent_name(cfg: dict) -> str:
    name = cfg["agent"]["name"]
    if name == "auto":
        return "claude" if os.environ.get("ANTHROPIC_API_KEY") else "random"
    return name


def campaign_root(cfg: dict) -> Path:
    """campaign.root as a path (relative: to the project)."""
    root = Path(os.path.expanduser(cfg["campaign"]["root"]))
    return root if root.is_absolute() else ROOT / root


class Campaign:
    def __init__(self, cfg: dict, explicit: set[str] | None = None, agent: str | None = None):
        """`explicit`: the config keys the command line named (fixed settings it did not
        name are taken from the campaign's state; None: every difference is an error).
        `agent`: the agent this call is for, whatever the config says (`record`: external)."""
        self.cfg, self.explicit = cfg, explicit
        self.bk = backends.activate(cfg["backend"]["name"], cfg["backend"].get("threads"),
                                    cfg["backend"].get("device"))
        self.root = campaign_root(cfg)
        self.slot = slot(self.bk.NAME, cfg["backend"])
        self.dir = self.root / cfg["campaign"]["tag"] / self.slot
        self.tree = self.dir / "worktree"
        self.branch = gitwork.branch_name(cfg["campaign"]["tag"], self.slot)
        self.state_path = self.dir / "campaign.json"
        self.agent_name = agent or resolve_agent_name(cfg)
        self.calibration, self.budget = None, None
        self.notes: list[str] = []  # what opening the campaign did that the user must hear
        self._lock_fd: int | None = None  # campaign.lock, held while the campaign is open
        self.row_marks: dict = {}  # fields every ledger row of this call carries (a replay's marks)

    @classmethod
    def report_only(cls, cfg: dict) -> "Campaign":
        """The campaign with its ledger, to read and report (`autoresearch ledger`): no lock,
        no work tree, no state change, no agent."""
        c = cls(cfg)
        if not (c.dir / "results.jsonl").exists():
            raise FileNotFoundError(f"no campaign at {c.dir} (campaign.tag={c.cfg['campaign']['tag']}, "
                                    f"slot {c.slot})")
        c.ledger = Ledger(c.dir)
        return c

    def exists(self) -> bool:
        """Whether the campaign was started (it has a state)."""
        return self.state_path.exists()

    @property
    def budget_seconds(self) -> float | None:
        return self.budget.seconds if self.budget else None

    # ------------------------------------------------------------------ state
    def open(self, reset: bool = True) -> None:
        """Lock, work tree, ledger, state. `reset`: put the work tree back to the last kept
        commit (a kill may have left edits behind); `record` keeps the external agent's."""
        self._remember_agent()
        self.agent = None
        if self.agent_name != "external":  # before anything is made: an agent that cannot work says so at once
            # only the picked agent's own keys: `auto` (or a resumed campaign's agent) may
            # carry another agent's, which this one must neither see nor trip over
            self.agent = make_agent(agent_keys(self.cfg["agent"], self.agent_name), seed=self.cfg["agent"]["seed"])
        repo = gitwork.project_repo(ROOT)
        self._make_dir()
        self._lock()
        try:
            self._open_locked(repo, reset)
        except BaseException:
            self.unlock()  # a later open in this process (a multirun's next job) must not find it held
            raise

    def _open_locked(self, repo: Path, reset: bool, start: str = "HEAD", replay: bool = False) -> None:
        gitwork.open_worktree(repo, self.tree, self.branch, start)
        gitwork.clear_stale_lock(self.tree)
        self.ledger = Ledger(self.dir)
        self.state = CampaignState.load(self.state_path) if self.state_path.exists() else CampaignState.create(
            self.state_path, self.cfg["campaign"]["tag"], self.bk.NAME, self.branch, gitwork.head(self.tree),
            self.slot)
        self._fix_settings()
        if not replay:  # a replay has no agent: the campaign's stays whatever it is
            self.state.set_agent(self.agent_name)  # saved on every open: a new campaign's state is written here
        if reset or (replay and self.ledger.next_seq() == 0):  # a replay records a new campaign's baseline next
            self._save_stray_work()
            gitwork.reset_to(self.tree, self.kept_commit())
        self.workspace = Workspace(self.tree, SCOPES[self.cfg["scope"]], IMMUTABLE)

    def open_for_replay(self, start: str) -> None:
        """Lock, work tree, ledger and state for `autoresearch replay` (harness/replay.py),
        which records rows but has no agent and never moves the branch: a new campaign's
        branch and work tree are made at `start` (the commit the replayed campaign started
        from); an existing one's are left exactly as they are (once it has a baseline)."""
        repo = gitwork.project_repo(ROOT)
        self._make_dir()
        self._lock()
        try:
            self._open_locked(repo, reset=False, start=start, replay=True)
        except BaseException:
            self.unlock()
            raise

    def _remember_agent(self) -> None:
        """A call that names no agent goes on with the campaign's (an external agent's
        campaign resumed with a bare `run` must not get the random agent)."""
        named = self.explicit is None or any(k == "agent" or k.startswith("agent.") for k in self.explicit)
        if named or not self.state_path.is_file():
            return
        before = CampaignState.agent_of(self.state_path)  # opening the state under the lock says what is wrong
        if before and before != self.agent_name:
            self.agent_name = before
            self.notes.append(f"campaign: going on with its agent, {before} (agent=NAME to change it)")

    def _make_dir(self) -> None:
        for p in [self.dir, *self.dir.parents]:
            if p.exists() and not p.is_dir():
                raise NotADirectoryError(f"campaign.root={self.cfg['campaign']['root']}: {p} is a file, not a "
                                         f"directory: point campaign.root at a directory")
            if p == self.root:
                break
        self.dir.mkdir(parents=True, exist_ok=True)

    def _fix_settings(self) -> None:
        """The budget, model, data and scope are the campaign's from its start (harness/fixed.py)."""
        saved, now = self.state.settings, fixed.settings(self.cfg)
        if saved is None or (self.ledger.next_seq() == 0 and saved != now):
            # nothing recorded yet (a first call, or a baseline that failed): this call decides
            if self.state.set_settings(now, drop_pending=saved is not None):
                self.notes.append("campaign: the settings changed before the baseline was recorded: "
                                  "its interrupted runs are dropped and it runs afresh")
            return
        self.cfg, taken = fixed.reconcile(self.cfg, saved, self.explicit, self.cfg["campaign"]["tag"])
        if taken:
            self.notes.append("campaign: using the settings it was started with: "
                              + ", ".join(f"{k}={saved[k]}" for k in taken[:8]))

    def _save_stray_work(self) -> None:
        """Work in the tree that the campaign does not know (commits made by hand, edits
        not recorded) is kept on a branch of its own before the tree is reset, and said."""
        known = {self.kept_commit()}
        pending = self.state.pending
        if pending:
            known |= {pending.commit, pending.parent}
        current = gitwork.head(self.tree)
        author, subject = gitwork.git(self.tree, "log", "-1", "--format=%ae%x00%s", current).split("\x00", 1)
        if author == "autoresearch@localhost" and subject.startswith(f"exp {self.ledger.next_seq()}: "):
            known.add(current)  # the harness's own candidate, committed just before a kill
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        branch = f"autoresearch-saved/{self.cfg['campaign']['tag']}/{self.slot}/{stamp}"
        what = gitwork.save_work(self.tree, known, branch)
        if what:
            self.notes.append(f"campaign: the work tree held work the campaign had not recorded ({what}): kept on "
                              f"branch {branch} (`git diff {self.kept_commit()[:12]} {branch}` shows it); the work "
                              f"tree is back at the last kept commit")

    def _lock(self) -> None:
        """One process per campaign: two jobs of a multirun that land on the same slot, or a
        second terminal, are stopped here (a flock: a killed holder leaves no stale lock)."""
        if self._lock_fd is not None:
            return
        lock = self.dir / "campaign.lock"
        fd = locks.take(lock)
        if fd is None:
            who = locks.owner(lock)
            raise RuntimeError(f"campaign {self.dir} is already running ({who or 'another process holds its lock'})")
        locks.write_owner(fd)
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _kept(self) -> list[dict]:
        return [r for r in self.ledger.records() if r["status"] == "keep"]

    def kept_commit(self) -> str:
        kept = self._kept()
        return kept[-1]["full_commit"] if kept else self.state.base_commit

    def best_val(self) -> float | None:
        """val_bpb of the branch head (the last kept experiment; the mean of its runs)."""
        kept = self._kept()
        return kept_value(kept[-1]) if kept else None

    def agent_spent(self) -> float:
        """Dollars the agent has spent in this campaign (from the ledger: survives resumes;
        a proposal stopped half-way has a `stopped` row with what it was billed)."""
        return sum(r.get("agent_cost_usd") or 0.0 for r in self.ledger.records())

    def experiments_done(self) -> int:
        """Proposals recorded after the baseline (confirmation re-runs and stopped proposals don't count)."""
        return sum(1 for r in self.ledger.records() if is_experiment(r))

    def keep_decision(self) -> KeepDecision:
        """The keep decision against the ledger as it is now (harness/decision.py)."""
        return KeepDecision(self.cfg["keep"], self.ledger.records(), self.calibration,
                            speed=self.cfg["scope"] == "kernels")

    def row_context(self) -> RowContext:
        """What every ledger row of this call shares (harness/ledger_rows.py)."""
        return RowContext(self.bk.NAME, self.agent_name, self.calibration, self.slot, dict(self.row_marks))

    # ------------------------------------------------------------------ the loop
    def prepare_budget(self) -> None:
        """Calibrate once per invocation (cached across them) and fix the budget's length."""
        from harness import isolation

        workdir.ensure_prepared(self.cfg["data"])
        iso = isolation.choose(self.cfg, self.bk, log=lambda m: print(m, flush=True))
        if not iso.sandboxed:
            print("campaign: WARNING: the agent's code runs without a sandbox (isolation: none): this "
                  "campaign's results are not tamper-proof", flush=True)
        now, self.calibration = budgeting.decide(self.cfg)  # calibrates first when the budget needs it
        saved = self.state.budget
        if saved is None:  # the campaign's budget from now on
            self.state.set_budget(now)
            saved = now
        elif abs(now.seconds - saved.seconds) > 0.01 * saved.seconds:
            print(f"campaign: this device's calibration now gives {now.seconds:.1f} s; the campaign keeps the "
                  f"budget it started with, {saved.seconds:.1f} s", flush=True)
        self.budget = dataclasses.replace(saved, reason=saved.reason.split(" [")[0] + " [fixed when the campaign started]")
        left = max(0, int(self.cfg["campaign"]["max_experiments"]) - self.experiments_done()) \
            + (max(1, int(self.cfg["keep"]["baseline_runs"])) if self.ledger.next_seq() == 0 else 0)  # baseline runs
        print(f"campaign: {budgeting.cost_line(self.budget, self.calibration, left)}", flush=True)

    def run(self, display: Display) -> tuple[str, int]:
        """Cycle until a limit or the agent stops; returns why it stopped and the exit code
        (0: a limit was reached or the agent is done; else StopCampaign's code)."""
        limits, agent = self.cfg["campaign"], self.agent
        try:
            if agent is not None:
                agent.spent_usd = self.agent_spent()
            self.prepare_budget()
            t0, program = time.time(), (ROOT / "program.md").read_text()
            while True:
                started = self.ledger.next_seq() > 0
                if started and self.experiments_done() >= limits["max_experiments"]:
                    return f"campaign.max_experiments={limits['max_experiments']} reached", 0
                if limits["max_hours"] is not None and time.time() - t0 > 3600 * limits["max_hours"]:
                    return f"campaign.max_hours={limits['max_hours']} reached", 0
                if started and agent is None:
                    return ("the baseline is recorded; the external agent records each experiment with "
                            "`autoresearch record`"), 0
                if not cycle(self, agent, program, display):
                    return "the agent has nothing more to try", 0
        except StopCampaign as e:
            gitwork.reset_to(self.tree, self.kept_commit())
            return e.message, e.code

    def record(self, description: str, display: Display) -> str:
        """The external agent's step: commit the work tree's edits in scope, run them as one
        experiment, keep or revert, record it. Edits outside the scope are refused and set
        aside in a patch file; the edits in scope stay in the work tree."""
        tag = self.cfg["campaign"]["tag"]
        if self.state.pending:
            raise StopCampaign(f"an interrupted experiment is pending: finish it first with `autoresearch run "
                               f"agent=external campaign.tag={tag} campaign.root={self.root}` (it re-runs it; "
                               f"your edits are kept on a branch of their own and the command says which)", code=2)
        if self.ledger.next_seq() == 0:
            raise StopCampaign(f"no baseline yet: start with `autoresearch run agent=external campaign.tag={tag} "
                               f"campaign.root={self.root}`", code=2)
        self.prepare_budget()
        cycle(self, None, "", display, description=description or "(no description)")
        return "recorded"

    def report(self) -> str:
        """The ledger and where everything is, for the end of a command."""
        best = self.ledger.best()
        lines = [*self.ledger.summary_lines(last=50), ""]
        if best:
            runs = best.get("runs") or 1
            val = kept_value(best)  # the mean of its runs, as the keep rule saw it
            lines.append(f"best kept: val_bpb {val:.6f}" + (f" (mean of {runs} runs)" if runs > 1 else "")
                         + f" at {best['commit']} ({best['description']})")
        bare = sum(1 for r in self.ledger.records() if r.get("isolation") == "none")
        if bare:
            lines.append(f"WARNING:   {bare} experiment(s) ran without a sandbox (isolation: none): "
                         f"their results are not tamper-proof")
        replays = sum(1 for r in self.ledger.records() if r.get("status") == "replay")
        if replays:
            lines.append(f"replays:   {replays} run(s) of other campaigns' commits (status replay; not experiments "
                         f"of this campaign); transfer matrices in {self.dir / 'transfer'}")
        lines += [f"ledger:    {self.dir / 'results.tsv'} (everything: results.jsonl)",
                  f"work tree: {self.tree} (branch {self.branch}, head = the last kept commit)",
                  f"runs:      {self.dir / 'runs'}"]
        return "\n".join(lines)

