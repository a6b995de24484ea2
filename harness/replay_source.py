"""The campaign a replay reads (`replay.source=<tag>/<slot>`, harness/replay.py): where it
is, the commit it started from, its kept discoveries in order, and the code each replay
mode runs of them, as a git tree.

    src = Source.find(root, "nov30/cpu")
    for d in src.discoveries(): ...
    code = src.code(d, "individual", index=scratch / "index")   # Code(tree) or Code(None, why)

Nothing here runs the source's code: a tree is read from git (its commits are in the
project's repository: every campaign is a work tree of it, harness/gitwork.py) and its
files are written out for the experiment to run sandboxed. A tree is refused when it
changes a file outside the source's scope or an immutable one: the source campaign could
not have made such a commit, so someone made it by hand.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from harness import gitwork
from harness.campaign import IMMUTABLE, SCOPES
from harness.campaign_state import CampaignState
from harness.guard import ROOT
from harness.ledger_rows import kept_value
from harness.workspace import matches

MODES = ("individual", "cumulative")


class ReplayError(ValueError):
    """A replay that cannot be done as asked: one line, exit code 2."""


def campaigns(root: Path) -> list[str]:
    """Every campaign under `root`, as `<tag>/<slot>` (each one a folder with a ledger)."""
    return sorted(f"{p.parent.parent.name}/{p.parent.name}" for p in root.glob("*/*/results.jsonl"))


@dataclass(frozen=True)
class Discovery:
    """One kept experiment of the source, as its ledger has it."""
    seq: int
    commit: str  # full hash
    parent: str  # the kept commit it was made from
    description: str
    value: float | None  # its kept val_bpb on the source (the mean of its runs)
    source_gain: float | None  # its parent's kept value minus its own (positive: better)


@dataclass(frozen=True)
class Code:
    """What one replay cell runs: a git tree, or None and why not."""
    tree: str | None
    why: str = ""


@dataclass(frozen=True)
class Source:
    tag: str
    slot: str
    dir: Path
    base: str  # the commit the source campaign started from: the replay's baseline
    settings: dict | None  # its fixed settings (harness/fixed.py), None for a campaign too old to have them
    records: tuple  # its ledger rows

    @classmethod
    def find(cls, root: Path, spec: str | None) -> "Source":
        known = campaigns(root)
        listed = ", ".join(known) if known else "none"
        tag, sep, slot = (spec or "").strip().strip("/").partition("/")
        if not sep or not tag or not slot or "/" in slot or tag in (".", "..") or slot in (".", ".."):
            raise ReplayError(f"replay.source={spec!r}: give the campaign to replay as <tag>/<slot>; the campaigns "
                              f"under {root}: {listed}")
        d = root / tag / slot
        if not (d / "results.jsonl").is_file():
            raise ReplayError(f"replay.source={spec}: no campaign at {d}; the campaigns under {root}: {listed}")
        if not (d / "campaign.json").is_file():
            raise ReplayError(f"replay.source={spec}: {d} has a ledger but no campaign.json (where it started)")
        state = CampaignState.load(d / "campaign.json")
        text = (d / "results.jsonl").read_text(encoding="utf-8")
        lines, records = text.splitlines(), []
        for n, line in enumerate(lines, 1):
            try:
                records.append(json.loads(line))
            except ValueError:
                if n < len(lines) or text.endswith("\n"):
                    raise ReplayError(f"{d / 'results.jsonl'}:{n}: not valid JSON") from None
                # a torn last line (the source is being written, or was killed): the rows before it stand
        return cls(tag, slot, d.resolve(), state.base_commit, state.settings, tuple(records))

    @property
    def name(self) -> str:
        return f"{self.tag}/{self.slot}"

    @property
    def scope(self) -> str:
        return str((self.settings or {}).get("scope") or "train")

    def discoveries(self) -> list[Discovery]:
        """Its kept experiments after the baseline, in order, with the gain each made there."""
        kept = [r for r in self.records if isinstance(r, dict) and r.get("status") == "keep"]
        out, before = [], None
        for r in kept:
            value = kept_value(r)
            if r.get("seq") != 0:
                gain = before - value if before is not None and value is not None else None
                out.append(Discovery(int(r["seq"]), str(r.get("full_commit") or ""), str(r.get("parent") or ""),
                                     str(r.get("description") or ""), value, gain))
            before = value
        return out

    def baseline_value(self) -> float | None:
        return next((kept_value(r) for r in self.records if isinstance(r, dict) and r.get("seq") == 0
                     and r.get("status") == "keep"), None)

    # ------------------------------------------------------------------ the code of a cell
    def _outside(self, a: str, b: str) -> list[str]:
        """Files changed between a and b that the source's scope does not allow."""
        return [f for f in gitwork.changed_between(ROOT, a, b)
                if not matches(f, SCOPES[self.scope]) or matches(f, IMMUTABLE)]

    def code(self, d: Discovery, mode: str, index: Path) -> Code:
        """`cumulative`: the source's branch at d (its commit as a whole); `individual`: d's
        own diff (against its parent) applied alone on the baseline, in the temporary
        index file `index`."""
        missing = [c for c in (self.base, d.parent, d.commit) if not gitwork.is_commit(ROOT, c)]
        if missing:
            return Code(None, f"commit {missing[0][:12] or '(none)'} is not in the repository (its branch was deleted?)")
        parent = self.base if mode == "cumulative" else d.parent
        outside = self._outside(parent, d.commit)
        if outside:
            return Code(None, f"changes files outside scope={self.scope} or immutable: {', '.join(outside[:5])}")
        if mode == "cumulative":
            return Code(gitwork.tree_of(ROOT, d.commit))
        tree, why = gitwork.apply_on(ROOT, self.base, d.parent, d.commit, index)
        return Code(tree) if tree else Code(None, f"does not apply cleanly on the baseline ({why})")

    def export(self, tree: str, dest: Path) -> Path:
        """Write what an experiment of `tree` needs into `dest`: trainer/train.py, and kernels/
        in a kernel campaign. Returns dest."""
        paths = ["trainer/train.py"] + (["kernels"] if self.scope in ("kernels", "all") else [])
        gitwork.export(ROOT, tree, paths, dest)
        return dest
