"""A campaign's device slot: the part of its directory and branch that says which device
(and which share of it) the campaign runs on, so that campaigns side by side on one
machine never share a work tree, a branch or a ledger.

    slot("cpu", {"threads": 2})            # 'cpu-t2'
    slot("cuda", {"device": 1})            # 'cuda-dev1'
    slot("cuda", {})                       # 'cuda'   (what every campaign was before slots)
    overrides("cpu", {"threads": 2})       # ['backend=cpu', 'backend.threads=2']

The slot is the resolved backend's name, then `-t<N>` when backend.threads is given, then
`-dev<K>` when backend.device is given: campaign.root/<tag>/<slot>/, branch
autoresearch/<tag>/<slot>. Without either the slot is the backend's name, so a campaign
started before slots existed resumes where it is.
"""
from __future__ import annotations


def slot(backend: str, backend_cfg: dict) -> str:
    """`backend`: the resolved name (never "auto"); `backend_cfg`: the config's backend node."""
    threads, device = backend_cfg.get("threads"), backend_cfg.get("device")
    return backend + (f"-t{threads}" if threads is not None else "") + (f"-dev{device}" if device is not None else "")


def overrides(backend: str, backend_cfg: dict) -> list[str]:
    """The command-line words that reach the same slot again (`record`, `ledger`)."""
    out = [f"backend={backend}"]
    out += [f"backend.{key}={backend_cfg[key]}" for key in ("threads", "device") if backend_cfg.get(key) is not None]
    return out
