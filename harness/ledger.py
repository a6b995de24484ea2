"""The campaign's durable memory: one row per experiment, appended, never rewritten.

Two files in the campaign's directory:
  - `results.tsv`: the reference's columns first (commit, val_bpb, memory_gb, status,
    description), then backend, device, budget_s. Tab-separated, for people and for tools
    written for the upstream script.
  - `results.jsonl`: one JSON object per experiment with everything the caller passed
    (steps, tokens, MFU, timings, agent tokens and dollars, error tails...). It is the source
    of truth; the TSV can always be rebuilt from it.

Crash safety: a row is written to the JSONL first, then to the TSV, each flushed and fsynced.
A process killed at any instant therefore leaves at worst (a) a torn last line (no trailing
newline) in one file, or (b) a JSONL row whose TSV row is missing. Opening a Ledger repairs
both, so a resumed campaign sees every completed experiment exactly once. Each experiment
carries an integer `seq` (0 = the baseline); a seq already present is refused, so a resumed
loop that retries an append can never duplicate a row.

Usage:
    ledger = Ledger(campaign_dir)
    ledger.append({"seq": ledger.next_seq(), "commit": "a1b2c3d", "val_bpb": 0.9979,
                   "memory_gb": 44.0, "status": "keep", "description": "baseline"})
    ledger.best()            # the kept record with the lowest val_bpb
"""
from __future__ import annotations

import json
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any

TSV_COLUMNS = ("commit", "val_bpb", "memory_gb", "status", "description", "backend", "device",
               "budget_s")
TSV_HEADER = "\t".join(TSV_COLUMNS) + "\n"
TSV_NAME = "results.tsv"
JSONL_NAME = "results.jsonl"
# Statuses every counts() result names, even at zero, so displays have a fixed shape.
BASE_STATUSES = ("keep", "discard", "crash")


def metric(value: Any) -> float | None:
    """val_bpb of a number or a record as a comparable float; None for a crash or no number."""
    if isinstance(value, dict):
        if value.get("status") == "crash":
            return None
        value = value.get("val_bpb")
    if value is None or isinstance(value, bool):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None  # NaN/inf are failed runs, not records


def better(a: Any, b: Any) -> bool:
    """True when `a` beats `b`: lower val_bpb wins; a crash, None or NaN is always worst.

    Accepts numbers or ledger records (a record with status "crash" is worst whatever its
    val_bpb). Two worst values are not better than each other.
    """
    ma, mb = metric(a), metric(b)
    if ma is None:
        return False
    return mb is None or ma < mb


def _fsync_dir(directory: Path) -> None:
    # Makes a newly created file's directory entry durable; not possible on every OS.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _append_durably(path: Path, text: str) -> None:
    # One write per line: the only partial state a kill can leave is a torn last line.
    with open(path, "ab") as f:
        f.write(text.encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())


def _clean(value: Any) -> str:
    # A tab or newline inside a field would shift or split the TSV row.
    return " ".join(str(value).replace("\t", " ").splitlines()) if value is not None else ""


def tsv_row(record: dict) -> str:
    """The TSV line (with newline) for a record, formatted as the upstream script does."""
    bpb = metric(record.get("val_bpb"))
    mem = record.get("memory_gb")
    fields = {
        # Upstream writes 0.000000 and 0.0 for a run that produced no number.
        "val_bpb": f"{bpb:.6f}" if bpb is not None else "0.000000",
        "memory_gb": f"{float(mem):.1f}" if isinstance(mem, (int, float)) and mem == mem
        else "0.0",
    }
    budget = record.get("budget_s")
    if isinstance(budget, float):
        fields["budget_s"] = f"{budget:.1f}"
    cells = [fields[c] if c in fields else _clean(record.get(c)) for c in TSV_COLUMNS]
    return "\t".join(cells) + "\n"


class Ledger:
    """Append-only experiment records in `directory` (created if missing), repaired on open."""

    def __init__(self, directory: Path | str):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.tsv_path = self.directory / TSV_NAME
        self.jsonl_path = self.directory / JSONL_NAME
        self._records: list[dict] = []
        self.repaired: list[str] = []  # what opening had to fix, for the campaign's log
        self._open()

    # ---------------------------------------------------------------- opening / repair
    def _open(self) -> None:
        created = False
        for path in (self.jsonl_path, self.tsv_path):
            if not path.exists():
                path.touch()
                created = True
            self._truncate_torn_tail(path)
        if created:
            _fsync_dir(self.directory)
        if self.tsv_path.stat().st_size == 0:
            _append_durably(self.tsv_path, TSV_HEADER)
        self._records = self._read_jsonl()
        self._repair_tsv()

    def _truncate_torn_tail(self, path: Path) -> None:
        data = path.read_bytes()
        if not data or data.endswith(b"\n"):
            return
        keep = data.rfind(b"\n") + 1  # 0 when the only line is torn
        with open(path, "r+b") as f:
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
        self.repaired.append(f"{path.name}: dropped a torn last line ({len(data) - keep} bytes)")

    def _read_jsonl(self) -> list[dict]:
        records, seen = [], set()
        lines = self.jsonl_path.read_text(encoding="utf-8").splitlines()
        for n, line in enumerate(lines, 1):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                # A complete (newline-terminated) line that does not parse is corruption,
                # not a crash artefact: refuse rather than silently lose experiments.
                raise ValueError(f"{self.jsonl_path}:{n}: not valid JSON ({e})") from None
            seq = rec.get("seq") if isinstance(rec, dict) else None
            if not isinstance(seq, int) or seq in seen:
                raise ValueError(f"{self.jsonl_path}:{n}: missing or duplicate seq {seq!r}")
            seen.add(seq)
            records.append(rec)
        return records

    def _repair_tsv(self) -> None:
        lines = self.tsv_path.read_text(encoding="utf-8").splitlines()
        if lines[0] + "\n" != TSV_HEADER:
            raise ValueError(f"{self.tsv_path}: unexpected header {lines[0]!r}")
        rows = lines[1:]
        # Both files are appended in the same order, JSONL first, so TSV row i is record i
        # and the TSV can never be ahead.
        assert len(rows) <= len(self._records), (
            f"{self.tsv_path} has {len(rows)} rows but {self.jsonl_path} only "
            f"{len(self._records)}: the TSV is never written first")
        for i, row in enumerate(rows):
            commit = row.split("\t", 1)[0]
            assert commit == _clean(self._records[i].get("commit")), (
                f"{self.tsv_path} row {i + 1} ({commit!r}) does not match JSONL record {i + 1}")
        for rec in self._records[len(rows):]:
            _append_durably(self.tsv_path, tsv_row(rec))
            self.repaired.append(f"{TSV_NAME}: restored the row of seq {rec['seq']} from "
                                 f"{JSONL_NAME}")

    # ---------------------------------------------------------------- writing
    def append(self, record: dict) -> dict:
        """Durably add one experiment; returns the stored record. Refuses a known seq."""
        seq = record.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool):
            raise ValueError(f"record needs an integer 'seq', got {seq!r}")
        if any(r["seq"] == seq for r in self._records):
            raise ValueError(f"seq {seq} is already in the ledger {self.jsonl_path}")
        rec = dict(record)
        for key in TSV_COLUMNS:
            rec.setdefault(key, None)
        # default=str: a Path or datetime in a record must not lose the experiment.
        line = json.dumps(rec, default=str, ensure_ascii=False) + "\n"
        stored = json.loads(line)
        _append_durably(self.jsonl_path, line)  # the source of truth goes first
        _append_durably(self.tsv_path, tsv_row(stored))
        self._records.append(stored)
        return dict(stored)

    # ---------------------------------------------------------------- reading
    def records(self) -> list[dict]:
        return [dict(r) for r in self._records]

    def __len__(self) -> int:
        return len(self._records)

    def next_seq(self) -> int:
        return max((r["seq"] for r in self._records), default=-1) + 1

    def best(self, status: str | None = "keep") -> dict | None:
        """The record with `status` (any status when None) and the lowest val_bpb, or None."""
        best = None
        for r in self._records:
            if (status is None or r.get("status") == status) and better(r, best):
                best = r
        return dict(best) if best is not None else None

    def counts(self) -> dict[str, int]:
        c = Counter(str(r.get("status")) for r in self._records)
        return {**{s: 0 for s in BASE_STATUSES}, **c}

    def summary_lines(self, last: int = 20, width: int = 100) -> list[str]:
        """A compact table of the last `last` experiments, for an LLM's context."""
        recs = self._records[-last:] if last > 0 else []
        out = []
        if len(self._records) > len(recs):
            b = self.best()
            tail = f"; best kept so far: seq {b['seq']} val_bpb {metric(b):.6f}" if b else ""
            out.append(f"({len(self._records) - len(recs)} earlier experiments not shown{tail})")
        out.append("seq  status   val_bpb   description")
        for r in recs:
            m = metric(r)
            bpb = f"{m:.6f}" if m is not None else "-"
            desc = _clean(r.get("description"))
            if len(desc) > width:
                desc = desc[: width - 3] + "..."
            out.append(f"{r['seq']:<4} {str(r.get('status')):<8} {bpb:<9} {desc}")
        return out
