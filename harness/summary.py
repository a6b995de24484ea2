"""The stdout contract: a `---` line, then `key: value` lines in a fixed order.

A run without a val_bpb line is a crash. The harness prints the block with its own
figures only; what train.py printed in such a block is kept as its claims, under
`train.` names, and never replaces a harness field.
"""
from __future__ import annotations

import math
import re

# The fixed order (the README's summary block); the harness appends its own keys after these.
KEYS = (
    "val_bpb", "training_seconds", "total_seconds", "peak_memory_mb", "mfu_percent",
    "total_tokens_M", "num_steps", "num_params_M", "backend", "device",
)
HARNESS_KEYS = ("status", "isolation", "budget_mode", "budget_seconds", "overshoot_seconds", "calibration_id",
                "calibration_quality", "startup_seconds", "eval_seconds", "run_dir")
QUIET_KEYS = ("reason", "log_tail", "train_process_seconds", "budget_reason", "total_tokens", "timed_tokens",
              "warmup_tokens_served", "model_flops_per_token", "allowance_seconds", "warmup_tokens", "eval_rows",
              "eval_tokens", "model_file_mb", "budget_tokens", "budget_flops", "calibration_cv",
              "calibration_tokens_per_s", "telemetry", "model_weights", "tampered", "slowest_step_seconds",
              "eval_timing", "eval_bound_source", "allowance_source")  # JSON only


def parse(text: str) -> dict:
    """The last `---` block of `text` as a dict (numbers as float/int, 'n/a' kept)."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == "---"]
    if not starts:
        return {}
    out: dict = {}
    for line in lines[starts[-1] + 1:]:
        key, sep, value = line.partition(":")
        if not sep or not KEY.fullmatch(key.strip()):
            break
        out[key.strip()] = _value(printable(value.strip())[:200])
    return out


CLAIM = "train."  # the prefix of train.py's own keys in the printed block
KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x9b]")


def printable(text: str) -> str:
    """`text` with control characters (carriage returns, terminal escapes) made visible, so
    a line cannot redraw what was printed before it on a terminal."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def quoted(text: str, prefix: str = "  | ") -> str:
    """Text written by the agent's code (a reason, a log tail), every line prefixed: none of
    it can read as a summary line (`grep '^val_bpb:'`)."""
    return "\n".join(prefix + printable(line) for line in str(text).splitlines())


def _value(v: str):
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


def _fmt(key: str, v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v) or key.startswith(CLAIM):
            return repr(v)  # a claim at full precision: the shortest text that reads back as the number kept
        return f"{v:.6f}" if key == "val_bpb" else f"{v:.2f}" if key == "mfu_percent" else f"{v:.1f}"
    return str(v)


def format_block(summary: dict) -> str:
    """The `---` block: KEYS first in their order, then harness keys, then the rest."""
    keys = [k for k in KEYS if k in summary]
    keys += [k for k in HARNESS_KEYS if k in summary]
    keys += [k for k in summary if k not in keys and k not in QUIET_KEYS]
    width = max(len(k) for k in keys) + 2 if keys else 0
    return "\n".join(["---"] + [f"{k + ':':<{width}}{_fmt(k, summary[k])}" for k in keys])
