"""Campaigns read for a report: ledgers, states and transfer files, as plain records.

    campaigns = find(root, tags)       # every <root>/<tag>/<slot>/results.jsonl (tags: only these)
    c.experiments()                    # the baseline and each experiment, in order

Read only: nothing is opened as a campaign (no lock, no repair, no git), so a report can be
made while a campaign runs. A torn last line (a campaign killed mid-append, or one writing
right now) is left out; a complete line that is not a JSON row is an error naming it, as it
is for the campaign itself. The slot is the directory's name (`cpu`, `cpu-t2`, `cuda-dev1`):
never assumed to be a backend's.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from harness.ledger import JSONL_NAME
from harness.ledger_rows import NOT_EXPERIMENTS, kept_value

STATE_NAME = "campaign.json"
TRANSFER_DIR = "transfer"


@dataclass(frozen=True)
class Experiment:
    """One experiment as a report shows it (the baseline is number 0)."""
    number: int  # 0 = the baseline, then 1, 2, ... (confirm and stopped rows are no experiments)
    seq: int  # its ledger row's seq
    status: str  # keep, discard, crash, refused
    value: float | None  # val_bpb as the keep rule saw it (the mean of its runs); None: no number
    description: str
    hours: float | None  # when it was recorded, in hours since the campaign's start
    flags: tuple[str, ...]  # telemetry flags of any of its runs (throttled:, contended:)


@dataclass
class CampaignData:
    tag: str
    slot: str
    dir: Path
    rows: list[dict]  # every ledger row, in the ledger's order
    state: dict = field(default_factory=dict)  # campaign.json; {} when missing
    transfers: list[dict] = field(default_factory=list)  # transfer/*.json: replays into this campaign
    notes: list[str] = field(default_factory=list)  # what was left out while reading, for the report

    @property
    def name(self) -> str:
        return f"{self.tag}/{self.slot}"

    def start(self) -> float | None:
        """When the campaign's first recorded cycle began (epoch seconds): the first row's time
        less its cycle's seconds (the baseline's runs); None when no row has a time."""
        for r in self.rows:
            t = stamp_of(r)
            if t is not None:
                cycle = r.get("cycle_seconds")
                return t.timestamp() - (cycle if isinstance(cycle, (int, float)) and cycle > 0 else 0.0)
        return None

    def end(self) -> float | None:
        """The last row's time (epoch seconds)."""
        times = [t.timestamp() for t in map(stamp_of, self.rows) if t is not None]
        return max(times) if times else None

    def experiments(self) -> list[Experiment]:
        start = self.start()
        flags = self._flags_by_experiment()
        out = []
        for r in self.rows:
            if r.get("status") in NOT_EXPERIMENTS:
                continue
            t = stamp_of(r)
            out.append(Experiment(len(out), r["seq"], str(r.get("status")), kept_value(r), text(r.get("description")),
                                  None if t is None or start is None else (t.timestamp() - start) / 3600,
                                  flags.get(r["seq"], ())))
        return out

    def _flags_by_experiment(self) -> dict[int, tuple[str, ...]]:
        """Each experiment's telemetry flags, its confirm runs' included."""
        out: dict[int, tuple[str, ...]] = {}
        for r in self.rows:
            got = run_flags(r)
            if got:
                key = r.get("confirms") if r.get("status") == "confirm" else r["seq"]
                out[key] = out.get(key, ()) + got
        return out

    def budget(self) -> dict:
        """The budget the campaign runs under: campaign.json's (fixed at its start), else the
        first row's mode and seconds."""
        b = self.state.get("budget")
        if isinstance(b, dict) and b.get("mode"):
            return b
        first = next((r for r in self.rows if r.get("budget_mode")), {})
        return {"mode": first.get("budget_mode"), "seconds": first.get("budget_s"), "reference": ""}


def text(value) -> str:
    """A ledger string as one line (None: empty)."""
    return " ".join(str(value).split()) if value is not None else ""


def stamp_of(row: dict) -> datetime | None:
    """A row's `time` (ISO 8601, as the harness stamps it; a naive one is taken as UTC)."""
    t = row.get("time")
    if not isinstance(t, str):
        return None
    try:
        d = datetime.fromisoformat(t)
    except ValueError:
        return None
    return d if d.tzinfo else d.replace(tzinfo=timezone.utc)


def run_flags(row: dict) -> tuple[str, ...]:
    tel = row.get("telemetry")
    flags = tel.get("flags") if isinstance(tel, dict) else None
    return tuple(str(f) for f in flags) if isinstance(flags, list) else ()


def read_rows(path: Path) -> tuple[list[dict], list[str]]:
    """The ledger's rows and what was left out (a torn last line)."""
    data = path.read_bytes()
    lines, notes = data.split(b"\n"), []
    if lines and lines[-1]:
        notes.append(f"{path}: an unfinished last line ({len(lines[-1])} bytes) is left out")
    rows, seen = [], set()
    for n, line in enumerate(lines[:-1], 1):
        try:
            row = json.loads(line)
        except ValueError as e:
            raise ValueError(f"{path}:{n}: not a ledger row ({e})") from None
        seq = row.get("seq") if isinstance(row, dict) else None
        if not isinstance(seq, int) or isinstance(seq, bool) or seq in seen:
            raise ValueError(f"{path}:{n}: missing or duplicate seq {seq!r}")
        seen.add(seq)
        rows.append(row)
    return rows, notes


def _read_json(path: Path, notes: list[str], what: str) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        notes.append(f"{path}: not readable as {what} ({e}): left out")
        return None
    if not isinstance(data, dict):
        notes.append(f"{path}: not {what}: left out")
        return None
    return data


def _transfer(path: Path, notes: list[str]) -> dict | None:
    data = _read_json(path, notes, "a transfer matrix")
    if data is None:
        return None
    ok = (all(isinstance(data.get(k), dict) for k in ("source", "target")) and isinstance(data.get("rows"), list)
          and all(isinstance(r, dict) for r in data["rows"]))
    if not ok:
        notes.append(f"{path}: not a transfer matrix (source, target, rows): left out")
        return None
    return data


def read(directory: Path) -> CampaignData:
    """One campaign's directory (it holds results.jsonl)."""
    rows, notes = read_rows(directory / JSONL_NAME)
    state_path = directory / STATE_NAME
    state = (_read_json(state_path, notes, "a campaign state") or {}) if state_path.exists() else {}
    transfers = [t for p in sorted((directory / TRANSFER_DIR).glob("*.json"))
                 if (t := _transfer(p, notes)) is not None]
    return CampaignData(directory.parent.name, directory.name, directory, rows, state, transfers, notes)


def find(root: Path, tags: list[str] | None = None) -> list[CampaignData]:
    """Every campaign under `root` (<root>/<tag>/<slot>/results.jsonl), or only those of `tags`."""
    if not root.is_dir():
        raise FileNotFoundError(f"campaign.root={root} is not a directory: point campaign.root at the campaigns")
    dirs = sorted(p.parent for p in root.glob(f"*/*/{JSONL_NAME}") if p.is_file())
    if not dirs:
        raise FileNotFoundError(f"no campaigns under campaign.root={root} (none has <tag>/<slot>/{JSONL_NAME})")
    if tags:
        known = sorted({d.parent.name for d in dirs})
        missing = [t for t in tags if t not in known]
        if missing:
            raise FileNotFoundError(f"report.tags: no campaign {', '.join(missing)} under {root} "
                                    f"(there: {', '.join(known)})")
        dirs = [d for d in dirs if d.parent.name in tags]
    return [read(d) for d in dirs]
