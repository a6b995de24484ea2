"""`autoresearch run`: a research campaign — agent edits, experiment, keep or revert, repeat.

    autoresearch run backend=cpu model=tiny agent=random campaign.max_experiments=4
    autoresearch run campaign.tag=nov30          (the same tag resumes, after any crash)

A campaign lives in campaign.root/<tag>/<backend>/: its git work tree (branch
`autoresearch/<tag>/<backend>`, never the project's own checkout), its ledger
(results.tsv, results.jsonl), the experiments' run directories and campaign.json (state).
The first experiment is the unmodified baseline. A candidate is committed, and the commit
is noted as `pending` before it runs: a campaign killed at any instant resumes with the
work tree reset to the last kept commit and the interrupted candidate re-run.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import backends
from harness import budgeting, experiment, fixed, gitwork, workdir
from harness.agent_config import agent_keys
from harness.agents import Context, Proposal, StopCampaign
from harness.agents.registry import make_agent
from harness.display import Display
from harness.guard import ROOT
from harness.keep import KeepRule
from harness.ledger import Ledger, metric
from harness.workspace import EditError, ScopeError, Workspace
from trainer import atomic

SCOPES = {"train": ["trainer/train.py"], "kernels": ["kernels/*.py"], "all": ["trainer/train.py", "kernels/*.py"]}
# The references and the dispatch stay immutable in every scope: they define correct.
IMMUTABLE = ["trainer/prepare.py", "kernels/reference.py", "kernels/registry.py", "kernels/__init__.py",
             "kernels/hub.py"]


class ScopeViolation(StopCampaign):
    def __init__(self, message: str):
        super().__init__(message, code=2)  # the edit broke a rule: the user (or their agent) must fix it


class BaselineFailed(StopCampaign):
    """The unmodified baseline did not score: nothing can be compared. Nothing is recorded
    in the ledger, so the next call (after a fix) runs the baseline again and goes on.
    The exit code is the experiment's (3 crash, 4 nan, 5 timeout, 6 refused)."""

    def __init__(self, out: dict):
        reason = str(out.get("reason", "")).splitlines()[0] if out.get("reason") else ""
        super().__init__(f"the baseline failed ({out['status']}): {reason} (its run: {out.get('run_dir')}); "
                         f"fix the cause and run the same command again",
                         code=experiment.EXIT_CODES.get(out["status"], 3))


def resolve_agent_name(cfg: dict) -> str:
    name = cfg["agent"]["name"]
    if name == "auto":
        return "claude" if os.environ.get("ANTHROPIC_API_KEY") else "random"
    return name


class Campaign:
    def __init__(self, cfg: dict, explicit: set[str] | None = None):
        """`explicit`: the config keys the command line named (fixed settings it did not
        name are taken from the campaign's state; None: every difference is an error)."""
        self.cfg, self.explicit = cfg, explicit
        self.bk = backends.activate(cfg["backend"]["name"], cfg["backend"].get("threads"))
        root = Path(os.path.expanduser(cfg["campaign"]["root"]))
        self.root = root if root.is_absolute() else ROOT / root
        self.dir = self.root / cfg["campaign"]["tag"] / self.bk.NAME
        self.tree = self.dir / "worktree"
        self.branch = gitwork.branch_name(cfg["campaign"]["tag"], self.bk.NAME)
        self.state_path = self.dir / "campaign.json"
        self.agent_name = resolve_agent_name(cfg)
        self.calibration, self.budget = None, None
        self.notes: list[str] = []  # what opening the campaign did that the user must hear

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
        gitwork.open_worktree(repo, self.tree, self.branch)
        gitwork.clear_stale_lock(self.tree)
        self.ledger = Ledger(self.dir)
        self.state = self._load_state() if self.state_path.exists() else {
            "tag": self.cfg["campaign"]["tag"], "backend": self.bk.NAME, "branch": self.branch,
            "base_commit": gitwork.head(self.tree), "created": _now()}
        self._fix_settings()
        self.state["agent"] = self.agent_name
        self._save_state()
        if reset:
            self._save_stray_work()
            gitwork.reset_to(self.tree, self.kept_commit())
        self.workspace = Workspace(self.tree, SCOPES[self.cfg["scope"]], IMMUTABLE)

    def _remember_agent(self) -> None:
        """A call that names no agent goes on with the campaign's (an external agent's
        campaign resumed with a bare `run` must not get the random agent)."""
        named = self.explicit is None or any(k == "agent" or k.startswith("agent.") for k in self.explicit)
        if named or not self.state_path.is_file():
            return
        try:
            before = json.loads(self.state_path.read_text()).get("agent")
        except (OSError, ValueError, AttributeError):
            return  # opening the state under the lock says what is wrong with it
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

    def _load_state(self) -> dict:
        try:
            state = json.loads(self.state_path.read_text())
        except ValueError as e:
            raise ValueError(f"{self.state_path} is not valid JSON ({e}): restore it, or move the campaign "
                             f"folder away to start afresh") from None
        if not isinstance(state, dict) or not isinstance(state.get("base_commit"), str):
            raise ValueError(f"{self.state_path} is not a campaign state (no base_commit)")
        return state

    def _fix_settings(self) -> None:
        """The budget, model, data and scope are the campaign's from its start (harness/fixed.py)."""
        saved, now = self.state.get("settings"), fixed.settings(self.cfg)
        if saved is None or (self.ledger.next_seq() == 0 and saved != now):
            # nothing recorded yet (a first call, or a baseline that failed): this call decides
            if saved is not None and self.state.pop("pending", None):
                self.notes.append("campaign: the settings changed before the baseline was recorded: "
                                  "its interrupted runs are dropped and it runs afresh")
            self.state["settings"] = now
            self.state.pop("budget", None)
            return
        self.cfg, taken = fixed.reconcile(self.cfg, saved, self.explicit, self.cfg["campaign"]["tag"])
        if taken:
            self.notes.append("campaign: using the settings it was started with: "
                              + ", ".join(f"{k}={saved[k]}" for k in taken[:8]))

    def _save_stray_work(self) -> None:
        """Work in the tree that the campaign does not know (commits made by hand, edits
        not recorded) is kept on a branch of its own before the tree is reset, and said."""
        known = {self.kept_commit()}
        pending = self.state.get("pending")
        if pending:
            known |= {pending["commit"], pending["parent"]}
        current = gitwork.head(self.tree)
        author, subject = gitwork.git(self.tree, "log", "-1", "--format=%ae%x00%s", current).split("\x00", 1)
        if author == "autoresearch@localhost" and subject.startswith(f"exp {self.ledger.next_seq()}: "):
            known.add(current)  # the harness's own candidate, committed just before a kill
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        branch = f"autoresearch-saved/{self.cfg['campaign']['tag']}/{self.bk.NAME}/{stamp}"
        what = gitwork.save_work(self.tree, known, branch)
        if what:
            self.notes.append(f"campaign: the work tree held work the campaign had not recorded ({what}): kept on "
                              f"branch {branch} (`git diff {self.kept_commit()[:12]} {branch}` shows it); the work "
                              f"tree is back at the last kept commit")

    def _lock(self) -> None:
        lock = self.dir / "campaign.lock"
        if lock.exists():
            pid = int(lock.read_text().strip() or 0)
            if pid and pid != os.getpid() and _alive(pid):
                raise RuntimeError(f"campaign {self.dir} is already running (pid {pid})")
        lock.write_text(str(os.getpid()))

    def unlock(self) -> None:
        (self.dir / "campaign.lock").unlink(missing_ok=True)

    def _save_state(self) -> None:
        atomic.write_json(self.state_path, self.state)

    def _kept(self) -> list[dict]:
        return [r for r in self.ledger.records() if r["status"] == "keep"]

    def kept_commit(self) -> str:
        kept = self._kept()
        return kept[-1]["full_commit"] if kept else self.state["base_commit"]

    def best_val(self) -> float | None:
        """val_bpb of the branch head (the last kept experiment; the mean of its runs)."""
        kept = self._kept()
        return (kept[-1].get("mean_val_bpb") or kept[-1]["val_bpb"]) if kept else None

    def agent_spent(self) -> float:
        """Dollars the agent has spent in this campaign (from the ledger: survives resumes)."""
        return sum(r.get("agent_cost_usd") or 0.0 for r in self.ledger.records())

    def experiments_done(self) -> int:
        """Proposals recorded after the baseline (confirmation re-runs don't count)."""
        return sum(1 for r in self.ledger.records() if r["seq"] > 0 and r["status"] != "confirm")

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
        saved = fixed.budget_of(self.state)
        if saved is None:  # the campaign's budget from now on
            self.state["budget"] = dataclasses.asdict(now)
            self._save_state()
            saved = now
        elif abs(now.seconds - saved.seconds) > 0.01 * saved.seconds:
            print(f"campaign: this device's calibration now gives {now.seconds:.1f} s; the campaign keeps the "
                  f"budget it started with, {saved.seconds:.1f} s", flush=True)
        self.budget = dataclasses.replace(saved, reason=saved.reason.split(" [")[0] + " [fixed when the campaign started]")

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
                if not self.cycle(agent, program, display):
                    return "the agent has nothing more to try", 0
        except StopCampaign as e:
            gitwork.reset_to(self.tree, self.kept_commit())
            return e.message, e.code

    def record(self, description: str, display: Display) -> str:
        """The external agent's step: commit the work tree's edits in scope, run them as one
        experiment, keep or revert, record it. Edits outside the scope are refused and set
        aside in a patch file; the edits in scope stay in the work tree."""
        tag = self.cfg["campaign"]["tag"]
        if self.state.get("pending"):
            raise StopCampaign(f"an interrupted experiment is pending: finish it first with `autoresearch run "
                               f"agent=external campaign.tag={tag} campaign.root={self.root}` (it re-runs it; "
                               f"your edits are kept on a branch of their own and the command says which)", code=2)
        if self.ledger.next_seq() == 0:
            raise StopCampaign(f"no baseline yet: start with `autoresearch run agent=external campaign.tag={tag} "
                               f"campaign.root={self.root}`", code=2)
        self.prepare_budget()
        self.cycle(None, "", display, description=description or "(no description)")
        return "recorded"

    def cycle(self, agent, program: str, display: Display, description: str | None = None) -> bool:
        """One experiment: propose (or take the pending one), commit, run, decide, record."""
        seq, pending = self.ledger.next_seq(), self.state.get("pending")
        t_cycle = time.time()
        if pending and pending["seq"] == seq:
            gitwork.reset_to(self.tree, pending["commit"])
            display.note(f"resuming: re-running the interrupted experiment {seq} ({pending['description']})")
        else:
            pending = self._propose(seq, agent, program, description)
            if pending is None:
                return False
        runs = list(pending.get("runs", []))
        if pending.get("known"):  # nothing to run: no change, or the edit itself failed
            self._record(seq, pending, [{**pending["known"], "val_bpb": None}], time.time() - t_cycle, display)
            return True
        while True:
            out = self._run(seq, pending, len(runs), display)
            if out["status"] == "interrupted":
                raise KeyboardInterrupt
            runs.append(out)
            pending["runs"] = runs
            self._save_state()
            if not self._needs_confirmation(seq, runs):
                break
        self._record(seq, pending, runs, time.time() - t_cycle, display)
        return True

    def _propose(self, seq: int, agent, program: str, description: str | None) -> dict | None:
        parent, t0 = self.kept_commit(), time.time()
        if seq == 0:
            proposal = Proposal("baseline")
        elif agent is not None:
            last = self.ledger.records()[-1] if len(self.ledger) else None
            try:
                run = {"MODEL": dict(self.cfg["model"]), "MAX_SEQ_LEN": self.cfg["data"]["max_seq_len"]}
                proposal = agent.propose(Context(self.workspace, program, self.ledger.summary_lines(), last, seq,
                                                 prepare_values=run))
            except (ScopeError, EditError) as e:  # refused or failed edit: recorded, nothing run
                gitwork.reset_to(self.tree, parent)
                status = "refused" if isinstance(e, ScopeError) else "crash"
                proposal = Proposal(f"({status} edit) {e}")
                return self._pending(seq, parent, parent, proposal, t0, reason=f"the agent's edit failed: {e}",
                                     status=status)
            if proposal is None:
                return None
        else:
            proposal = Proposal(description or "(no description)")
        outside = [f for f in gitwork.changed_files(self.tree) if not self.workspace.allowed(f)]
        if outside:
            patch = self.dir / "refused" / f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-exp{seq}.patch"
            gitwork.set_aside(self.tree, outside, patch)
            msg = (f"changes outside scope={self.cfg['scope']} were refused: {', '.join(outside)}; they are out "
                   f"of the work tree, saved in {patch} (`git apply {patch}` in the work tree brings them back)")
            left = gitwork.changed_files(self.tree)
            if agent is None and left:
                msg += (f". Your changes in scope ({', '.join(left)}) are still in the work tree, uncommitted: "
                        f"run `autoresearch record` again to record them")
            elif agent is not None:
                gitwork.reset_to(self.tree, parent)
            raise ScopeViolation(msg)
        commit = parent
        if seq > 0 and gitwork.changed_files(self.tree):
            commit = gitwork.commit_all(self.tree, f"exp {seq}: {proposal.description}")
        elif seq > 0:
            proposal.description = f"(no change) {proposal.description}"
            return self._pending(seq, parent, parent, proposal, t0, reason="no change", status="discard")
        return self._pending(seq, commit, parent, proposal, t0)

    def _pending(self, seq, commit, parent, proposal, t0, reason=None, status=None) -> dict:
        """Note the candidate before it runs (the resume point). `status` set: nothing to
        run, the outcome is already known (no change, a refused or failed edit)."""
        self.state["pending"] = {"seq": seq, "commit": commit, "parent": parent, "description": proposal.description,
                                 "agent_seconds": time.time() - t0, **proposal.as_record(), "runs": []}
        if status:
            self.state["pending"]["known"] = {"status": status, "reason": reason}
        self._save_state()
        return self.state["pending"]

    def _run(self, seq: int, pending: dict, attempt: int, display: Display) -> dict:
        cfg = copy.deepcopy(self.cfg)
        cfg.update(train_file=str(self.tree / "trainer" / "train.py"), quiet=True)
        run_dir = self.dir / "runs" / f"{seq:04d}-{pending['commit'][:8]}-{attempt}-{int(time.time())}"
        kernels_dir = self.tree / "kernels" if self.cfg["scope"] in ("kernels", "all") else None
        display.start(seq, pending["description"], attempt, self)
        try:
            return experiment.run(cfg, run_dir, self.budget, own_calibration=self.calibration,
                                  kernels_dir=kernels_dir, announce=False)
        finally:
            display.stop()

    def keep_rule(self, current: list[float] = ()) -> KeepRule:
        """The keep rule with the noise measured so far, the runs of the experiment being
        decided (`current`) included (harness/keep.py)."""
        return KeepRule.from_config(self.cfg["keep"], self.ledger.records(), self.calibration, current)

    def _head(self) -> tuple[float | None, int]:
        """The head's mean val_bpb and how many runs it is the mean of."""
        kept = self._kept()
        return (self.best_val(), int(kept[-1].get("runs") or 1)) if kept else (None, 0)

    def _needs_confirmation(self, seq: int, runs: list[dict]) -> bool:
        """Run the candidate again? The baseline runs keep.baseline_runs times (its spread
        is the campaign's first noise measurement); a candidate whose gain is within the
        noise margin is re-run up to keep.confirm_runs times."""
        if runs[-1]["status"] != "ok":
            return False
        if seq == 0:
            return len(runs) < max(1, int(self.cfg["keep"]["baseline_runs"]))
        head, n_head = self._head()
        vals = [r["val_bpb"] for r in runs]
        return head is not None and self.keep_rule(vals).decide(vals, head, n_head) == "again"

    def _record(self, seq: int, pending: dict, runs: list[dict], cycle_seconds: float, display: Display) -> None:
        first, (best, n_head) = runs[0], self._head()
        vals = [r["val_bpb"] for r in runs if r["status"] == "ok" and r["val_bpb"] is not None]
        mean = statistics.mean(vals) if vals and len(vals) == len(runs) else None
        rule = self.keep_rule(vals if mean is not None else [])
        if pending.get("known"):
            status = pending["known"]["status"]
        elif first["status"] == "refused":
            status = "refused"
        elif first["status"] != "ok" or mean is None:
            status = "crash"
        elif seq == 0 or rule.decide(vals, best, n_head) == "keep":
            status = "keep"
        else:
            status = "discard"
        if seq == 0 and status != "keep":
            failed = next((r for r in runs if r["status"] != "ok"), first)
            self.state.pop("pending", None)  # nothing recorded: the next call runs the baseline afresh
            self.state.setdefault("baseline_failures", []).append(
                {"time": _now(), "status": failed["status"], "reason": failed.get("reason", ""),
                 "run_dir": failed.get("run_dir")})
            self._save_state()
            raise BaselineFailed(failed)
        row = self._row(seq, pending, first, status, cycle_seconds)
        row.update(mean_val_bpb=mean, runs=len(runs), keep_rule={
            **rule.describe(), "best_before": best, "head_runs": n_head,
            "gain": None if best is None or mean is None else best - mean,
            "margin": None if best is None else rule.margin(len(runs), n_head)})
        self.ledger.append(row)
        display.result(row)
        for i, extra in enumerate(runs[1:], 1):
            self.ledger.append({**self._row(seq + i, pending, extra, "confirm", 0.0), "confirms": seq,
                                "description": f"confirm {i} of exp {seq}: {pending['description']}"})
        if status != "keep":
            gitwork.reset_to(self.tree, pending["parent"])
        self.state.pop("pending", None)
        self._save_state()

    def _row(self, seq: int, pending: dict, out: dict, status: str, cycle_seconds: float) -> dict:
        mem = out.get("peak_memory_mb")
        row = {"seq": seq, "commit": pending["commit"][:12], "full_commit": pending["commit"],
               "parent": pending["parent"], "val_bpb": metric(out.get("val_bpb")),
               "memory_gb": mem / 1024 if isinstance(mem, (int, float)) else None, "status": status,
               "description": pending["description"], "backend": self.bk.NAME, "device": out.get("device"),
               "budget_s": out.get("budget_seconds"), "time": _now(), "experiment_status": out["status"],
               "reason": out.get("reason", ""), "error_tail": (out.get("log_tail") or "")[-3000:],
               "steps": out.get("num_steps"), "tokens": out.get("total_tokens"), "isolation": out.get("isolation"),
               "mfu_percent": out.get("mfu_percent"), "training_seconds": out.get("training_seconds"),
               "total_seconds": out.get("total_seconds"), "eval_seconds": out.get("eval_seconds"),
               "budget_mode": out.get("budget_mode"), "calibration_id": (self.calibration or {}).get("id"),
               "calibration_quality": (self.calibration or {}).get("quality"),
               "calibration_cv": (self.calibration or {}).get("cv"),
               "diff": gitwork.diff_stats(self.tree, pending["parent"], pending["commit"]),
               "cycle_seconds": cycle_seconds, "agent": self.agent_name,
               "agent_seconds": pending.get("agent_seconds"), "run_dir": out.get("run_dir")}
        if status != "confirm":
            row.update({k: v for k, v in pending.items() if k.startswith("agent_") and k != "agent_seconds"})
        return row

    def report(self) -> str:
        """The ledger and where everything is, for the end of a command."""
        best = self.ledger.best()
        lines = [*self.ledger.summary_lines(last=50), ""]
        if best:
            runs = best.get("runs") or 1
            val = best.get("mean_val_bpb") or best["val_bpb"]  # the mean of its runs, as the keep rule saw it
            lines.append(f"best kept: val_bpb {val:.6f}" + (f" (mean of {runs} runs)" if runs > 1 else "")
                         + f" at {best['commit']} ({best['description']})")
        bare = sum(1 for r in self.ledger.records() if r.get("isolation") == "none")
        if bare:
            lines.append(f"WARNING:   {bare} experiment(s) ran without a sandbox (isolation: none): "
                         f"their results are not tamper-proof")
        lines += [f"ledger:    {self.dir / 'results.tsv'} (everything: results.jsonl)",
                  f"work tree: {self.tree} (branch {self.branch}, head = the last kept commit)",
                  f"runs:      {self.dir / 'runs'}"]
        return "\n".join(lines)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
