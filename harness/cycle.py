"""One experiment of a campaign: propose (or take the interrupted one), commit, note it
pending, run it (again while the keep rule asks), decide, record.

    cycle(campaign, agent, program, display)    # False: the agent has nothing more to try

The order is what makes a campaign crash-safe: the candidate is committed and noted as
pending in campaign.json (harness/campaign_state.py) before it runs, each finished run is
saved with it, and the pending note goes only once the ledger holds the rows; a campaign
killed at any instant resumes by re-running what is left of it. The keep decision is
harness/decision.py's, the rows' fields harness/ledger_rows.py's. `c` is the open
campaign (harness/campaign.py, which calls this module: it is not imported back).
"""
from __future__ import annotations

import copy
import time
from datetime import datetime

from harness import experiment, gitwork, kernel_check, kernel_micro, ledger_rows, stops
from harness.agents import Context, Proposal, StopCampaign
from harness.campaign_state import Known, Pending
from harness.display import Display
from harness.workspace import EditError, ScopeError


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


def cycle(c, agent, program: str, display: Display, description: str | None = None) -> bool:
    """One experiment; False when the agent has nothing more to try."""
    seq, pending = c.ledger.next_seq(), c.state.pending
    t_cycle = time.time()
    if pending and pending.seq == seq:
        gitwork.reset_to(c.tree, pending.commit)
        display.note(f"resuming: re-running the interrupted experiment {seq} ({pending.description})")
    else:
        pending = _propose(c, seq, agent, program, description, display)
        if pending is None:
            return False
    if not pending.known and pending.gates is None and _touches_kernels(c, pending):
        _gate(c, pending, display)  # after the note: a kill during the checks re-checks on resume
    if pending.known:  # nothing to run: no change, or the edit itself failed
        known = {"status": pending.known.status, "reason": pending.known.reason, "val_bpb": None}
        _record(c, pending, [known], time.time() - t_cycle, display)
        return True
    while True:
        out = _run(c, pending, len(pending.runs), display)
        if out["status"] == "interrupted":
            raise KeyboardInterrupt
        c.state.add_run(out)
        if not c.keep_decision().again(seq, pending.runs):
            break
    _record(c, pending, pending.runs, time.time() - t_cycle, display)
    return True


def _propose(c, seq: int, agent, program: str, description: str | None,
             display: Display) -> Pending | None:
    """The candidate, committed and noted pending; None when the agent has nothing more."""
    parent, t0 = c.kept_commit(), time.time()
    if seq == 0:
        proposal = Proposal("baseline")
    elif agent is not None:
        records = c.ledger.records()
        # the last experiment the agent should learn from (a stopped proposal taught nothing, a
        # replay is another campaign's commit)
        last = next((r for r in reversed(records)
                     if r["status"] not in (ledger_rows.STOPPED, ledger_rows.REPLAY)), None)
        try:
            # what train.py's reads of prepare stand for here: the preset behind the size knobs
            run = {"MODEL": dict(c.cfg["model"]), "MAX_SEQ_LEN": c.cfg["data"]["max_seq_len"]}
            proposal = agent.propose(Context(c.workspace, program, c.ledger.summary_lines(), last, seq,
                                             prepare_values=run))
        except (ScopeError, EditError) as e:  # refused or failed edit: recorded, nothing run
            gitwork.reset_to(c.tree, parent)
            status = "refused" if isinstance(e, ScopeError) else "crash"
            return _note(c, seq, parent, parent, Proposal(f"({status} edit) {e}"), t0,
                         Known(status, f"the agent's edit failed: {e}"))
        except (StopCampaign, KeyboardInterrupt) as e:  # stopped mid-proposal (a limit, an API error,
            # Ctrl-C, SIGTERM): what it was billed for is recorded
            why = e.message if isinstance(e, StopCampaign) else f"{stops.reason(e)} during the proposal"
            _record_stopped(c, seq, parent, getattr(e, "partial", None), why, time.time() - t0, display)
            raise
        if proposal is None:
            return None
    else:
        proposal = Proposal(description or "(no description)")
    _refuse_outside_scope(c, seq, agent, parent)
    if seq > 0 and not gitwork.changed_files(c.tree):
        proposal.description = f"(no change) {proposal.description}"
        return _note(c, seq, parent, parent, proposal, t0, Known("discard", "no change"))
    commit = gitwork.commit_all(c.tree, f"exp {seq}: {proposal.description}") if seq > 0 else parent
    return _note(c, seq, commit, parent, proposal, t0)


def _touches_kernels(c, pending: Pending) -> bool:
    return pending.seq > 0 and any(f.startswith("kernels/")
                                   for f in gitwork.diff_files(c.tree, pending.parent, pending.commit))


def _gate(c, pending: Pending, display: Display) -> None:
    """Nothing is timed before a candidate's kernels pass `kernels check`
    (harness/kernel_check.py: the static rules, then each kernel against its reference in
    a sandboxed child); one that fails is refused with the check's reason. One that passes
    is micro-benchmarked (harness/kernel_micro.py: advisory figures, GPU only). Both go in
    the pending note (saved) and then in the ledger row as `gates`."""
    display.note("kernels check: the candidate's kernels against their references ...")
    report = kernel_check.run(c.cfg, kernels_dir=c.tree / "kernels", log=lambda m: None)
    if not report.ok:
        shown = report.problems[:6] + ([f"... and {len(report.problems) - 6} more"]
                                       if len(report.problems) > 6 else [])
        pending.gates = {"kernels_check": f"failed ({len(report.problems)} problem(s))"}
        pending.known = Known("refused", "kernels check failed: " + "; ".join(p.splitlines()[0] for p in shown))
        c.state.note_pending(pending)
        return
    display.note(f"kernels check: passed ({len(report.passed)} cases)")
    micro = kernel_micro.measure(c.cfg, c.tree / "kernels", log=lambda m: None)
    display.note("micro-benchmark: " + (micro.get("skipped") or micro.get("failed")
                                        or "; ".join(f"{k}: {v['fwd+bwd']:.3f} ms fwd+bwd"
                                                     for k, v in micro["ms"].items() if "fwd+bwd" in v)))
    pending.gates = {"kernels_check": f"passed ({len(report.passed)} cases)", "micro_bench": micro}
    c.state.note_pending(pending)


def _note(c, seq: int, commit: str, parent: str, proposal: Proposal, t0: float,
          known: Known | None = None) -> Pending:
    """Note the candidate before it runs (the resume point)."""
    pending = Pending.of(seq, commit, parent, proposal, time.time() - t0, known)
    c.state.note_pending(pending)
    return pending


def _record_stopped(c, seq: int, parent: str, partial: Proposal | None, why: str, agent_seconds: float,
                    display: Display) -> None:
    """A proposal stopped half-way that was billed: a `stopped` row carries its usage, so the
    campaign's spend (the ledger's sum) survives the stop and any resume."""
    if partial is None or not (partial.cost_usd or partial.tokens_in or partial.tokens_out
                               or partial.cache_read or partial.cache_write):
        return  # stopped before a request: nothing was billed, nothing to record
    gitwork.reset_to(c.tree, parent)  # its edits are not an experiment
    row = c.ledger.append(ledger_rows.stopped_row(c.row_context(), seq, parent, partial, why, agent_seconds))
    display.result(row)


def _refuse_outside_scope(c, seq: int, agent, parent: str) -> None:
    """Edits outside the scope go to a patch file and stop the campaign (code 2)."""
    outside = [f for f in gitwork.changed_files(c.tree) if not c.workspace.allowed(f)]
    if not outside:
        return
    patch = c.dir / "refused" / f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-exp{seq}.patch"
    gitwork.set_aside(c.tree, outside, patch)
    msg = (f"changes outside scope={c.cfg['scope']} were refused: {', '.join(outside)}; they are out "
           f"of the work tree, saved in {patch} (`git apply {patch}` in the work tree brings them back)")
    left = gitwork.changed_files(c.tree)
    if agent is None and left:
        msg += (f". Your changes in scope ({', '.join(left)}) are still in the work tree, uncommitted: "
                f"run `autoresearch record` again to record them")
    elif agent is not None:
        gitwork.reset_to(c.tree, parent)
    raise ScopeViolation(msg)


def _run(c, pending: Pending, attempt: int, display: Display) -> dict:
    cfg = copy.deepcopy(c.cfg)
    cfg.update(train_file=str(c.tree / "trainer" / "train.py"), quiet=True)
    run_dir = c.dir / "runs" / f"{pending.seq:04d}-{pending.commit[:8]}-{attempt}-{int(time.time())}"
    kernels_dir = c.tree / "kernels" if c.cfg["scope"] in ("kernels", "all") else None
    display.start(pending.seq, pending.description, attempt, c)
    try:
        return experiment.run(cfg, run_dir, c.budget, own_calibration=c.calibration, kernels_dir=kernels_dir,
                              announce=False)
    finally:
        display.stop()


def _record(c, pending: Pending, runs: list[dict], cycle_seconds: float, display: Display) -> None:
    """The ledger rows (the experiment's, then one per further run), the work tree back at
    the kept commit unless kept, the pending note cleared: in that order (see above)."""
    verdict = c.keep_decision().verdict(pending.seq, runs, pending.known)
    if pending.seq == 0 and verdict.status != "keep":
        failed = next((r for r in runs if r["status"] != "ok"), runs[0])
        c.state.baseline_failed(failed["status"], failed.get("reason", ""), failed.get("run_dir"))
        raise BaselineFailed(failed)
    ctx, diff = c.row_context(), gitwork.diff_stats(c.tree, pending.parent, pending.commit)
    row = ledger_rows.experiment_row(ctx, pending.seq, pending, runs[0], verdict.status, cycle_seconds, diff)
    row.update(mean_val_bpb=verdict.mean, mean_us_per_token=verdict.speed, runs=len(runs),
               keep_rule=verdict.record(len(runs)))
    if pending.gates is not None:
        row["gates"] = pending.gates
    c.ledger.append(row)
    display.result(row)
    for attempt, extra in enumerate(runs[1:], 1):
        c.ledger.append(ledger_rows.confirm_row(ctx, pending, attempt, extra, diff))
    if verdict.status != "keep":
        gitwork.reset_to(c.tree, pending.parent)
    c.state.clear_pending()
