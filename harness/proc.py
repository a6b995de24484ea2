"""Child processes with a hard wall-clock limit: logged, echoed, killed as a group."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path


@dataclass
class ChildResult:
    returncode: int | None  # None when killed at the limit
    timed_out: bool
    seconds: float
    output: str  # the last lines of stdout+stderr


def run(cmd: list[str], *, cwd: Path, env: dict, limit: float, log: Path, echo: bool,
        prefix: str = "", tail_lines: int = 400, on_start=None) -> ChildResult:
    """Run cmd, copying its output to `log` (and stdout when echo); kill at `limit` s.
    `on_start(pid)` is called once the child exists (e.g. to watch its CPU use)."""
    t0 = time.time()
    tail: deque[str] = deque(maxlen=tail_lines)
    with open(log, "w", buffering=1) as logf:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace",
                                start_new_session=True,  # own group: kill takes grandchildren too
                                preexec_fn=_die_with_parent)

        def pump():
            for line in proc.stdout:
                logf.write(line)
                tail.append(line.rstrip("\n"))
                if echo:
                    sys.stdout.write(prefix + line)
                    sys.stdout.flush()

        if on_start is not None:
            on_start(proc.pid)
        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        timed_out = False
        try:
            proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            timed_out = True
            kill_group(proc)
        except BaseException:  # Ctrl-C in the harness: never leave an orphan training
            kill_group(proc)
            raise
        reader.join(timeout=5)
    return ChildResult(None if timed_out else proc.returncode, timed_out, time.time() - t0,
                       "\n".join(tail))


def _die_with_parent() -> None:
    """Linux: the child gets SIGKILL when the harness dies (even by SIGKILL), so a killed
    campaign leaves no orphan training behind to skew the next run's timing."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


def kill_group(proc: subprocess.Popen, grace: float = 5.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue
