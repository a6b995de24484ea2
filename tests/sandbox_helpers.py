"""Helpers for tests/test_sandbox.py: run Python snippets confined, emulate a BPF program."""
from __future__ import annotations

import json
import subprocess
import sys

from harness.sandbox import LAUNCH, seccomp, wrap

PRELUDE = """
import ctypes, errno, json, os, signal, socket, subprocess, sys, time
P = json.loads(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
def can(fn):
    try:
        fn()
        return True
    except OSError:
        return False
def err(fn):
    try:
        fn()
        return 0
    except OSError as e:
        return e.errno
def read(p):
    with open(p) as f:
        return f.read()
def create(p):
    with open(p, "w") as f:
        f.write("x")
r = {}
"""


def confined(body: str, policy, cwd, timeout: float = 30, **params) -> dict:
    """Run PRELUDE + body under wrap(..., policy); `params` arrive as P; returns the dict r
    that the body fills (printed as the last stdout line)."""
    code = PRELUDE + body + "\nprint(json.dumps(r))\n"
    res = subprocess.run(wrap([sys.executable, "-c", code, json.dumps(params)], policy),
                         capture_output=True, text=True, timeout=timeout, cwd=cwd,
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 0, f"child failed ({res.returncode}): {res.stderr[-2000:]}"
    return json.loads(res.stdout.strip().splitlines()[-1])


def run_bpf(prog, arch: int, nr: int, arg0: int = 0) -> int:
    """Emulate the classic-BPF subset that seccomp.build emits; returns the RET value."""
    data = {seccomp.OFF_NR: nr, seccomp.OFF_ARCH: arch, seccomp.OFF_ARG0: arg0 & 0xFFFFFFFF}
    pc, acc = 0, 0
    while True:
        code, jt, jf, k = prog[pc]
        if code == seccomp.LD_W_ABS:
            acc = data[k]
        elif code == seccomp.RET:
            return k
        else:
            cond = {seccomp.JEQ: acc == k, seccomp.JGE: acc >= k,
                    seccomp.JSET: bool(acc & k)}[code]
            pc += jt if cond else jf
        pc += 1


def launch(*args, pre: str = ""):
    """Run the launcher (optionally after `pre`, code run in the same process first)."""
    code = (f"import os, sys\nsys.path.insert(0, {str(LAUNCH.parent)!r})\n{pre}\n"
            f"os.execv(sys.executable, [sys.executable, '-E', '-s', '-S', {str(LAUNCH)!r}, *sys.argv[1:]])")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=30)


def block_syscall(nr: int, err: int) -> str:
    """Code that installs a seccomp filter failing syscall `nr` with `err` (as a hostile or
    old container would), so the launcher meets a kernel that refuses Landlock."""
    return f"""
import ctypes, seccomp as s
prog = s._assemble([(s.LD_W_ABS, 0, 0, s.OFF_NR), (s.JEQ, "no", 0, {nr}),
                    (s.RET, 0, 0, s.RET_ALLOW), "no", (s.RET, 0, 0, s.RET_ERRNO | {err})])
ctypes.CDLL(None).prctl(38, 1, 0, 0, 0)
s.install(prog)
"""
