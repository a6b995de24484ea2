"""Where this device's calibrations are kept, and how one is read back.

    calibration_store.directory(cfg)       # data.cache_dir/calibration
    calibration_store.load(path)           # the JSON as a dict, None when unreadable
    calibration_store.by_id(cfg, "3f2a9c") # cached calibrations whose id starts so

A calibration is measured by harness/calibration.py and read by the budget
(harness/budget.py, `budget.reference=<id or path>`): both come here, so neither needs
the other.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from trainer import atomic


def directory(cfg: dict) -> Path:
    return Path(os.path.expanduser(cfg["data"]["cache_dir"])) / "calibration"


def load(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def save(path: Path, cal: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_json(path, cal)


def by_id(cfg: dict, prefix: str) -> list[Path]:
    """Cached calibration files whose id starts with `prefix`, oldest name first."""
    return sorted(directory(cfg).glob(f"*-{prefix}*.json"))
