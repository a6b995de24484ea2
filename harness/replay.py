"""`autoresearch replay`: another campaign's kept discoveries, measured on this device.

    autoresearch replay replay.source=nov30/cpu-t1 backend=cpu backend.threads=2
    autoresearch replay replay.source=nov30/cpu backend=cpu model=tiny campaign.tag=nov30-b   (CPU-sized)

The source A is campaign.root/<tag>/<slot>; the target B is the campaign of this call's
config (campaign.tag defaults to A's tag, so B is A's tag on this device's slot). B runs
under A's fixed settings (budget mode and reference, model, data, scope: harness/fixed.py)
with its own calibration giving its seconds. A new B is made the way `run` makes one, its
branch starting where A started, and its baseline recorded as `run` records it (those are
the replay's baseline runs); in an existing B the baseline runs are added, when B started
elsewhere, as `replay` rows. Then, for each discovery of A in order:
  - cumulative: A's branch at that commit, as a whole;
  - individual: the commit's own diff applied alone on the baseline (`not applied` when
    it does not apply cleanly; the first discovery's is its cumulative tree, run once).
Each runs replay.repeats times, each run a `replay` row in B's ledger (harness/ledger_rows.py)
appended when it ends: a replay killed half-way and run again re-uses them. The verdicts
(harness/transfer.py) go to B/transfer/<A tag>__<A slot>.json and a printed table. B's
lock is held throughout; B's branch and its kept head never move.
"""
from __future__ import annotations

import copy
import shutil
import time
from datetime import datetime
from pathlib import Path

from harness import experiment, fixed, gitwork, kernel_check
from harness.campaign import Campaign, campaign_root
from harness.campaign_state import CampaignState, Pending
from harness.cycle import BaselineFailed, cycle
from harness.display import Display
from harness.guard import ROOT
from harness.ledger_rows import REPLAY, RowContext, replay_row
from harness.replay_source import Code, Discovery, ReplayError, Source
from harness.transfer import Judge, Runs, table
from trainer import atomic

def main(cfg: dict, explicit: set[str] | None, display: Display | None = None) -> Path | None:
    """Replay cfg's replay.source on cfg's campaign; print the table; return the matrix's path
    (None: the source kept nothing to replay)."""
    src = Source.find(campaign_root(cfg), cfg["replay"]["source"])
    if not src.discoveries():
        print(f"replay: {src.name} kept nothing after its baseline: nothing to replay (no matrix written)", flush=True)
        return None
    c = Campaign(target_config(cfg, src, explicit), agent=REPLAY)
    _check_target(c, src)
    display = display or Display()
    c.open_for_replay(src.base)
    try:
        for note in c.notes:
            display.note(note)
        pending = c.state.pending
        if pending is not None and pending.seq > 0:
            raise ReplayError(f"the target campaign {c.dir} has an interrupted experiment pending (exp {pending.seq}): "
                              f"resume it first with `autoresearch run campaign.tag={c.cfg['campaign']['tag']} "
                              f"campaign.root={c.root}`, or "
                              f"replay into another campaign.tag")
        matrix = Replay(c, src, display).run()
    finally:
        c.unlock()
    path = c.dir / "transfer" / f"{src.tag}__{src.slot}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_json(path, matrix)
    print(table(matrix), flush=True)
    print(f"transfer matrix: {path}\ntarget ledger:   {c.dir / 'results.tsv'} (replay rows: status replay)",
          flush=True)
    return path


def target_config(cfg: dict, src: Source, explicit: set[str] | None) -> dict:
    """This call's config with the source's fixed settings, and the source's tag unless named."""
    out = copy.deepcopy(cfg)
    if explicit is None or "campaign.tag" not in explicit:
        out["campaign"]["tag"] = src.tag
    if not src.settings:
        return out
    _, asked = fixed.differences(out, src.settings, explicit)
    if asked:
        theirs = ", ".join(f"{k}={src.settings[k]}" for k in asked[:6])
        raise ReplayError(f"the source {src.name} ran with {theirs}; a replay runs under the source's budget "
                          f"settings, model, data and scope (this device's calibration gives its seconds): drop "
                          f"these overrides")
    return fixed.reconcile(out, src.settings, explicit, src.tag)[0]


def _check_target(c: Campaign, src: Source) -> None:
    if c.dir.resolve() == src.dir:
        raise ReplayError(f"replay.source={src.name} is the target campaign itself ({c.dir}): replay it on another "
                          f"device slot, or name another campaign.tag")
    if not (c.state_path.is_file() and (c.dir / "results.jsonl").is_file()
            and (c.dir / "results.jsonl").stat().st_size > 0):
        return  # new, or nothing recorded yet: this call decides its settings
    saved = CampaignState.load(c.state_path).settings
    differ, _ = fixed.differences(c.cfg, saved or {}, None)
    if differ:
        mine = ", ".join(f"{k}={saved[k]}" for k in differ[:6])
        theirs = ", ".join(f"{k}={fixed.settings(c.cfg).get(k)}" for k in differ[:6])
        raise ReplayError(f"the target campaign {c.dir} was started with {mine}, the source {src.name} with "
                          f"{theirs}: a replay needs the source's settings: name another campaign.tag")


class Replay:
    """One replay of `src` on the open campaign `c`."""

    def __init__(self, c: Campaign, src: Source, display: Display):
        self.c, self.src, self.display = c, src, display
        self.repeats = int(c.cfg["replay"]["repeats"])
        self.scratch = c.dir / "replay" / f"{src.tag}__{src.slot}"  # trees written out for their runs
        self.done, self.total = 0, 0  # runs made by this call, and how many it has to make
        self.shared: set[tuple[int, str]] = set()  # individual cells that are their cumulative tree

    def marks(self, mode: str, seq: int, commit: str) -> dict:
        return {"replay_of": {"tag": self.src.tag, "slot": self.src.slot, "seq": seq, "commit": commit},
                "replay_mode": mode}

    def rows(self, mode: str, commit: str) -> list[dict]:
        """The target's replay rows of `commit` in `mode` so far: what a resumed replay re-uses."""
        return [r for r in self.c.ledger.records() if r.get("status") == REPLAY and r.get("replay_mode") == mode
                and (r.get("replay_of") or {}).get("commit") == commit]

    def baseline_rows(self) -> list[dict]:
        """The target's runs of the source's baseline: its own baseline's, when it started from
        the same commit, and the replay's."""
        own = [r for r in self.c.ledger.records() if r.get("full_commit") == self.src.base
               and ((r.get("seq") == 0 and r.get("status") == "keep")
                    or (r.get("status") == "confirm" and r.get("confirms") == 0))]
        return own + self.rows("baseline", self.src.base)

    # ------------------------------------------------------------------ the replay
    def run(self) -> dict:
        c, src = self.c, self.src
        c.prepare_budget()
        discoveries = src.discoveries()
        self.display.note(f"replay: {len(discoveries)} kept discover{'y' if len(discoveries) == 1 else 'ies'} of "
                          f"{src.name} ({src.dir}) on {c.dir}, budget {c.budget.seconds:.1f} s ({c.budget.mode}), "
                          f"{self.repeats} run(s) each")
        try:
            self.scratch.mkdir(parents=True, exist_ok=True)
            codes = {(d.seq, mode): src.code(d, mode, self.scratch / "index")
                     for d in discoveries for mode in ("cumulative", "individual")}
            base_runs = self.baseline()
            cells = {}
            self.total = sum(self._missing(d, mode, codes) for d in discoveries for mode in ("cumulative", "individual"))
            for d in discoveries:
                for mode in ("cumulative", "individual"):
                    cells[(d.seq, mode)] = self.cell(d, mode, codes)
        finally:
            shutil.rmtree(self.scratch, ignore_errors=True)
        return self.matrix(discoveries, base_runs, cells)

    def baseline(self) -> Runs:
        """The source's baseline on the target, keep.baseline_runs times (its spread is the
        replay's first noise measurement, as a campaign's baseline's is)."""
        c = self.c
        if c.ledger.next_seq() == 0:  # a new target: its baseline, recorded as `run` records it
            c.row_marks = self.marks("baseline", 0, self.src.base)
            try:
                cycle(c, None, "", self.display, description="baseline")
            finally:
                c.row_marks = {}
        want = max(1, int(c.cfg["keep"]["baseline_runs"]))
        tree = gitwork.tree_of(ROOT, self.src.base)
        while len(self.baseline_rows()) < want:
            attempt = len(self.baseline_rows()) + 1
            out = self._experiment(tree, "baseline", f"baseline of {self.src.name}, run {attempt} of {want}")
            if out["status"] != "ok" or out.get("val_bpb") is None:
                raise BaselineFailed(out)  # nothing to compare with: not recorded, the next call runs it again
            self._record(out, "baseline", 0, self.src.base, self.src.base, tree, f"replay baseline of {self.src.name}")
        return Runs.of_rows(self.baseline_rows())

    def _missing(self, d: Discovery, mode: str, codes: dict) -> int:
        code = codes[(d.seq, mode)]
        if code.tree is None or self._same_as_cumulative(d, mode, codes):
            return 0
        runs = Runs.of_rows(self.rows(mode, d.commit))
        return 0 if runs.failure else max(0, self.repeats - len(runs))

    @staticmethod
    def _same_as_cumulative(d: Discovery, mode: str, codes: dict) -> bool:
        return mode == "individual" and codes[(d.seq, mode)].tree == codes[(d.seq, "cumulative")].tree

    def cell(self, d: Discovery, mode: str, codes: dict) -> tuple[Runs | None, str]:
        """The runs of one discovery in one mode (run now where missing), or None and why not."""
        code: Code = codes[(d.seq, mode)]
        if code.tree is None:
            return None, code.why
        if self._same_as_cumulative(d, mode, codes):
            self.shared.add((d.seq, mode))
            return Runs.of_rows(self.rows("cumulative", d.commit)), ""
        parent = self.src.base if mode == "cumulative" else d.parent
        missing = self._missing(d, mode, codes)
        if missing and self.c.cfg["scope"] in ("kernels", "all"):
            refused = self._kernels_refused(code.tree)
            if refused:
                return None, refused
        for _ in range(missing):
            out = self._experiment(code.tree, mode, f"{mode} of exp {d.seq} ({d.description[:50]})")
            self._record(out, mode, d.seq, d.commit, parent, code.tree,
                         f"replay {mode} of {self.src.name} exp {d.seq}: {d.description}")
            if out["status"] != "ok" or out.get("val_bpb") is None:
                break  # a run that did not score decides the cell
        return Runs.of_rows(self.rows(mode, d.commit)), ""

    def _kernels_refused(self, tree: str) -> str:
        """'' when the tree's kernels pass `kernels check` here (harness/kernel_check.py),
        else why not: a kernel correct on the source's device may not be on this one."""
        if not any(f.startswith("kernels/") for f in gitwork.changed_between(ROOT, self.src.base, tree)):
            return ""
        where = self.src.export(tree, self.scratch / tree[:12])
        self.display.note("kernels check: the discovery's kernels against their references, on this device ...")
        report = kernel_check.run(self.c.cfg, kernels_dir=where / "kernels", log=lambda m: None)
        if report.ok:
            return ""
        return "kernels check failed on the target: " + "; ".join(p.splitlines()[0] for p in report.problems[:4])

    def _experiment(self, tree: str, mode: str, what: str) -> dict:
        """One run of `tree` under the target's budget, sandboxed as a campaign's experiment is."""
        c = self.c
        where = self.scratch / tree[:12]
        if not (where / "trainer" / "train.py").is_file():
            self.src.export(tree, where)
        cfg = copy.deepcopy(c.cfg)
        cfg.update(train_file=str(where / "trainer" / "train.py"), quiet=True)
        seq = c.ledger.next_seq()
        run_dir = c.dir / "runs" / f"{seq:04d}-replay-{mode}-{tree[:8]}-{int(time.time())}"
        kernels_dir = where / "kernels" if c.cfg["scope"] in ("kernels", "all") else None
        if mode != "baseline":
            self.done += 1
        count = f"{self.done} of {self.total}" if mode != "baseline" else "baseline"
        self.display.note(f"replay: [{count}] {what}")
        self.display.start(seq, f"replay {what}", 0, c)
        try:
            out = experiment.run(cfg, run_dir, c.budget, own_calibration=c.calibration, kernels_dir=kernels_dir,
                                 announce=False)
        finally:
            self.display.stop()
        if out["status"] == "interrupted":
            raise KeyboardInterrupt
        return out

    def _record(self, out: dict, mode: str, seq: int, commit: str, parent: str, tree: str, description: str) -> None:
        """The run's `replay` row in the target's ledger, appended at once (a resume re-uses it)."""
        c = self.c
        at = c.ledger.next_seq()
        ctx = RowContext(c.bk.NAME, REPLAY, c.calibration, slot=c.slot, marks=self.marks(mode, seq, commit))
        row = replay_row(ctx, at, Pending(at, commit, parent, description), out,
                         gitwork.diff_stats(ROOT, parent, commit))
        row["replay_tree"] = tree
        self.display.result(c.ledger.append(row))

    # ------------------------------------------------------------------ the matrix
    def matrix(self, discoveries: list[Discovery], base: Runs, cells: dict) -> dict:
        c, src = self.c, self.src
        measured = [runs for key, (runs, _) in cells.items() if runs is not None and key not in self.shared]
        judge = Judge(c.cfg["keep"], c.calibration, base, measured, speed=c.cfg["scope"] == "kernels")
        rows = []
        for d in discoveries:
            row = {"seq": d.seq, "commit": d.commit[:12], "full_commit": d.commit, "description": d.description,
                   "source_val_bpb": d.value, "source_gain": d.source_gain}
            for mode in ("individual", "cumulative"):
                runs, why = cells[(d.seq, mode)]
                row[mode] = judge.cell(runs, why)
                if mode == "individual" and (d.seq, mode) in self.shared:
                    row[mode]["same_as"] = "cumulative"  # its diff on the baseline is the commit itself: run once
            rows.append(row)
        return {"source": {"tag": src.tag, "slot": src.slot, "dir": str(src.dir)},
                "target": {"tag": c.dir.parent.name, "slot": c.dir.name, "dir": str(c.dir.resolve())},
                "created": datetime.now().isoformat(timespec="seconds"),
                "budget": {"mode": c.budget.mode, "seconds": c.budget.seconds},
                "noise": judge.rule.noise.std, "noise_dof": judge.rule.noise.dof,
                "noise_source": judge.rule.noise.source, "margin": judge.margin(self.repeats),
                "repeats": self.repeats,
                "baseline": {"val_bpb_mean": base.mean, "runs": len(base), "commit": src.base,
                             "source_val_bpb": src.baseline_value()},
                "rows": rows}
