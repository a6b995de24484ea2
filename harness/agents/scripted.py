"""The scripted agent: replays a given list of edits, one per proposal. For tests and demos.

cfg["edits"] (or a JSON/YAML file named by cfg["script"]) is a list of steps, each either
    {"description": str, "path": str, "old": str, "new": str}   # replace old (once) by new
    {"description": str, "path": str, "content": str}           # write the whole file
A step may also list several edits under "edits" (same shapes) to change several files or
places in one experiment. propose() returns None once the list is exhausted.

Edits go through the Workspace, so a step outside the scope raises ScopeError (recorded in
workspace.refusals) and a step whose old text is missing raises EditError: a script that
cannot be applied as written fails loudly instead of running an experiment it did not mean.
"""
from __future__ import annotations

import json
from pathlib import Path

from harness.agents.base import Agent, Context, Proposal


def load_script(path: str | Path) -> list[dict]:
    """The list of steps in a .json, .yaml or .yml file."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        steps = json.loads(text)
    else:
        import yaml  # installed with hydra-core (omegaconf)
        steps = yaml.safe_load(text)
    if isinstance(steps, dict) and "edits" in steps:  # {"edits": [...]} is accepted too
        steps = steps["edits"]
    if not isinstance(steps, list):
        raise ValueError(f"{path}: expected a list of edits")
    return steps


def _check(step: dict, n: int) -> None:
    edits = step.get("edits", [step])
    for e in edits:
        if "path" not in e or not ("content" in e or ("old" in e and "new" in e)):
            raise ValueError(f"scripted edit {n}: needs path and either content or old/new: {e}")


class ScriptedAgent(Agent):
    """Applies cfg's edits in order, one step per proposal."""
    name = "scripted"

    def __init__(self, cfg: dict, seed: int = 0):
        if cfg.get("script"):
            steps = load_script(cfg["script"])
        else:
            steps = list(cfg.get("edits") or [])
        for n, step in enumerate(steps, 1):
            _check(step, n)  # a malformed script fails at start, not mid-campaign
        self.steps = steps
        self.index = 0  # next step to apply

    def propose(self, ctx: Context) -> Proposal | None:
        if self.index >= len(self.steps):
            return None
        step = self.steps[self.index]
        self.index += 1
        ws = ctx.workspace
        for e in step.get("edits", [step]):
            if "content" in e:
                ws.write(e["path"], e["content"])
            else:
                ws.replace(e["path"], e["old"], e["new"])
        return Proposal(step.get("description") or f"scripted edit {self.index}")
