"""selftest(): prove, on this machine, that a policy confines what it should.

    problems = selftest(policy, deny_read=[val_dir], deny_write=[repo], device_code="import torch")
    # [] when all is well; else one human-readable line per failure

The child (harness/sandbox/_probe.py, run as `python -c`) is started exactly as a training
run would be, via wrap(). Checks that the backend cannot enforce are skipped: on macOS
setsid is not pinned and socket() is allowed (connect is what Seatbelt denies).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

MARK = "SANDBOX-PROBE "
MAX_FILES = 50  # files tried beneath each deny_read dir


def _files_beneath(path: str) -> list[str]:
    """`path` itself when a file; up to MAX_FILES files beneath it when a dir."""
    if not os.path.isdir(path):
        return [path]
    out = []
    for root, _dirs, names in os.walk(path):
        out += [os.path.join(root, n) for n in sorted(names)
                if os.path.isfile(os.path.join(root, n))]
        if len(out) >= MAX_FILES:
            break
    return out[:MAX_FILES]


def selftest(policy, *, deny_read=(), deny_write=(), device_code: str | None = None,
             env: dict | None = None, timeout: float = 120.0) -> list[str]:
    """Run the probe under wrap(..., policy); [] when every check passes.
    Raises SandboxUnavailable when this machine has no sandbox."""
    from harness.sandbox.policy import support, wrap

    sup = support()
    problems = [f"cannot check {p}: it does not exist"
                for p in (*deny_read, *deny_write) if not os.path.exists(p)]
    linux = sup.kind == "landlock"
    listener = socket.create_server(("127.0.0.1", 0))  # a live port the child must not reach
    unix_dir = tempfile.mkdtemp(prefix="autoresearch-selftest-")
    unix_listener = socket.socket(socket.AF_UNIX)  # a live Unix socket it must not reach either
    unix_listener.bind(os.path.join(unix_dir, "s"))
    unix_listener.listen()
    try:
        cfg = {
            "device_code": device_code or "",
            "deny_read": [f for p in deny_read if os.path.exists(p)
                          for f in _files_beneath(str(p))],
            "deny_write": [str(p) for p in deny_write if os.path.isdir(p)],
            # dirs to create a file in (not /proc/self: the process's own entries, no files)
            "write": [os.path.abspath(p) for p in policy.write if not os.path.abspath(p).startswith("/proc/")],
            "tcp_port": listener.getsockname()[1],
            "parent_pid": os.getpid(),
            "socket_ban": linux and sup.seccomp,
            "unix_sockets": "unix_sockets" in policy.options,  # then AF_UNIX is allowed, connect() is not
            "unix_listener": os.path.join(unix_dir, "s"),
            "signal_scoped": sup.kind == "sandbox-exec" or (linux and sup.landlock_abi >= 6),
            "sysv_denied": sup.kind == "sandbox-exec" or (linux and sup.seccomp),
            "pgrp_pinned": linux and sup.seccomp,
        }
        source = Path(__file__).with_name("_probe.py").read_text()
        argv = wrap([sys.executable, "-c", source, json.dumps(cfg)], policy, sup)
        proc = subprocess.Popen(argv, env=dict(os.environ) if env is None else env,
                                cwd=cfg["write"][0] if cfg["write"] else "/",
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return problems + [f"sandbox selftest timed out after {timeout:g} s"]
        try:  # whatever the device code left running dies with the probe
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    finally:
        listener.close()
        unix_listener.close()
        shutil.rmtree(unix_dir, ignore_errors=True)
    reports = [ln[len(MARK):] for ln in out.splitlines() if ln.startswith(MARK)]
    if proc.returncode != 0 or not reports:
        tail = " | ".join(err.strip().splitlines()[-3:])
        return problems + [f"sandbox selftest child exited {proc.returncode}: {tail}"]
    return problems + json.loads(reports[-1])
