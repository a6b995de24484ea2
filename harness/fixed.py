"""What a campaign fixes when it starts: its budget, model, data, scope and kernel mode.

Every experiment of a campaign is compared with the ones before it, so they must all train
under the same budget on the same data with the same model preset. The settings that
decide this are saved in the campaign's state at its start; a later call (`run` to resume,
`record`) that does not name them gets them back, and one that asks for other values is
stopped with what the campaign was started with.
"""
from __future__ import annotations

import copy

from harness.budget import Budget

# Config subtrees (and single keys) that decide what an experiment's val_bpb means.
# kernels.mode too: Triton kernels and their references train at different speeds.
FIXED = ("budget", "model", "data", "scope", "kernels.mode", "eval.causality_check", "eval.probe_batches",
         "eval.probe_tolerance")
# ... but not these: where things live and how they are fetched, or a one-off override.
FREE = ("budget.force", "budget.min_seconds", "budget.max_seconds", "data.cache_dir", "data.workers",
        "data.base_url")


class SettingsConflict(ValueError):
    pass


def _flat(tree, prefix: str = "") -> dict:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out = {}
    for k, v in tree.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else k))
    return out


def settings(cfg: dict) -> dict:
    """The fixed settings of `cfg`, flattened to dotted keys."""
    out = {}
    for key in FIXED:
        node = cfg
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        out.update(_flat(node, key))
    return {k: v for k, v in out.items() if not any(k == f or k.startswith(f + ".") for f in FREE)}


def override_keys(overrides: list[str] | None) -> set[str] | None:
    """The keys a command line's Hydra overrides name (`model=small` names the group)."""
    if overrides is None:
        return None
    return {o.lstrip("+~").split("=", 1)[0] for o in overrides}


def _named(key: str, explicit: set[str] | None) -> bool:
    if explicit is None:  # no command line to tell: every difference was asked for
        return True
    return any(key == e or key.startswith(e + ".") for e in explicit)


def differences(cfg: dict, saved: dict, explicit: set[str] | None) -> tuple[list[str], list[str]]:
    """The fixed keys whose value in `cfg` differs from `saved`, and those of them the
    command line named (`explicit`; None: all of them)."""
    now = settings(cfg)
    # a key the campaign did not save (a setting newer than the campaign) keeps its value
    differ = sorted(k for k in saved if k in now and saved[k] != now[k])
    return differ, [k for k in differ if _named(k, explicit)]


def reconcile(cfg: dict, saved: dict, explicit: set[str] | None, tag: str) -> tuple[dict, list[str]]:
    """`cfg` with the campaign's saved settings put back; the keys it took back. Raises
    SettingsConflict when the command line asks for a value the campaign was not started with."""
    now = settings(cfg)
    differ, asked = differences(cfg, saved, explicit)
    if asked:
        started = ", ".join(f"{k}={saved.get(k)}" for k in asked[:6])
        wanted = ", ".join(f"{k}={now.get(k)}" for k in asked[:6])
        raise SettingsConflict(
            f"campaign {tag} was started with {started}; this call asks for {wanted}. A campaign's budget, model, "
            f"data and scope are fixed when it starts, so its experiments stay comparable: drop these overrides "
            f"to go on with it, or start another campaign.tag to try them")
    out = copy.deepcopy(cfg)
    for key in differ:
        *path, leaf = key.split(".")
        node = out
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = saved[key]
    return out, differ


def budget_of(state: dict) -> Budget | None:
    """The budget the campaign's baseline ran under, as saved in its state."""
    b = state.get("budget")
    return Budget(**b) if b else None
