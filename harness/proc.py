"""Child processes: started in their own process group, logged (with a size cap), echoed,
and killed as a whole tree.

    child = Child.start(cmd, cwd=..., env=..., log=path, echo=False, pass_fds=(fd,))
    child.wait(timeout)            # None while it runs
    child.kill_tree()              # the child and every process it started, dead and reaped
    res = run(cmd, ..., limit=60)  # start + wait + kill at the limit, for trusted helpers

    members(pgid, root=pid)        # the pids of that child's processes, however parented

Everything a sandboxed child starts stays in its process group (the sandbox makes
setsid/setpgid no-ops), so one killpg ends it all. Without a sandbox a process could
leave the group: `members` also takes every descendant of the group's processes and,
while a training run lasts (`subreaper`, Linux), the orphans re-parented to the harness.
What `kill_tree` kills is exactly what the telemetry measures (harness/telemetry.py).
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import backends
from harness.guard import ROOT
from harness.summary import printable

MAX_LOG_BYTES = 32 << 20  # a child printing without end must not fill the disk
SECRET = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH", re.IGNORECASE)


def child_env(backend: str, threads, run_config: Path | None, model_out: Path | None = None,
              first_paths: list[Path] = (), kernels: str | None = None) -> dict:
    """The environment of a child the harness starts: the harness's own, minus anything that
    looks like a credential (the agent's code has no business with API keys). `kernels`:
    the kernel dispatch's mode in the child (kernels/registry.py; None: the harness's own)."""
    env = {k: v for k, v in os.environ.items() if not SECRET.search(k)}
    env.update(backends.process_env())
    env.update({
        backends.ENV_BACKEND: backend,
        "PYTHONPATH": os.pathsep.join([str(p) for p in first_paths] + [str(ROOT)]
                                      + [p for p in [os.environ.get("PYTHONPATH")] if p]),
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",  # any new .pyc in the project is then a planted one
    })
    if run_config is not None:
        env["AUTORESEARCH_RUN_CONFIG"] = str(run_config)
    if model_out is not None:
        env["AUTORESEARCH_MODEL_OUT"] = str(model_out)
    if threads:
        env[backends.ENV_THREADS] = str(threads)
    if kernels is not None:
        env["AUTORESEARCH_KERNELS"] = kernels
    return env


@dataclass
class ChildResult:
    returncode: int | None  # None when killed at the limit
    timed_out: bool
    seconds: float
    output: str  # the last lines of stdout+stderr


def become_subreaper(on: bool = True) -> None:
    """Linux: orphaned descendants are re-parented to this process instead of init (on), or
    no longer (off; those re-parented already stay its children)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, int(on), 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


@contextmanager
def subreaper():
    """The harness as its descendants' subreaper for the length of the block: a process that
    double-forks and leaves the group (no sandbox) comes back to it, to be measured and
    killed, instead of vanishing under init. Only for a training run: at other times the
    harness's own helpers' orphans (a `git gc --auto` daemon) must not become its strays."""
    become_subreaper(True)
    try:
        yield
    finally:
        become_subreaper(False)


class Child:
    def __init__(self, popen: subprocess.Popen, log: Path, echo: bool, prefix: str, tail_lines: int):
        self.popen = popen
        self.pid = popen.pid
        self.t0 = time.monotonic()
        self.tail: deque[str] = deque(maxlen=tail_lines)
        self._reader = threading.Thread(target=self._pump, args=(log, echo, prefix), daemon=True)
        self._reader.start()

    @classmethod
    def start(cls, cmd: list[str], *, cwd: Path, env: dict, log: Path, echo: bool = False, prefix: str = "",
              pass_fds: tuple[int, ...] = (), tail_lines: int = 400) -> "Child":
        popen = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, start_new_session=True,  # own group
                                 pass_fds=pass_fds, preexec_fn=_die_with_parent)
        _OURS.add(popen.pid)
        return cls(popen, log, echo, prefix, tail_lines)

    def _pump(self, log: Path, echo: bool, prefix: str) -> None:
        written = 0
        with open(log, "wb") as logf:
            for raw in iter(lambda: self.popen.stdout.readline(1 << 16), b""):  # a line without end is cut
                if written < MAX_LOG_BYTES:
                    logf.write(raw)
                    logf.flush()
                    written += len(raw)
                    if written >= MAX_LOG_BYTES:
                        logf.write(b"\n[harness: output truncated at %d MB]\n" % (MAX_LOG_BYTES >> 20))
                line = printable(raw.decode("utf-8", "replace").rstrip("\n")[:2000])
                self.tail.append(line)
                if echo:
                    sys.stdout.write(prefix + line + "\n")
                    sys.stdout.flush()

    def wait(self, timeout: float | None = None) -> int | None:
        try:
            code = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        _OURS.discard(self.pid)
        return code

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.t0

    def output(self) -> str:
        self._reader.join(timeout=5)
        return "\n".join(self.tail)

    def kill_tree(self) -> None:
        """SIGKILL the child's process group and any descendant that left it; reap them."""
        kill_tree(self.pid, self.popen)
        _OURS.discard(self.pid)


def kill_tree(pgid: int, popen: subprocess.Popen | None = None) -> None:
    def alive_root():  # once reaped, its pid may be anyone's
        return popen.pid if popen is not None and popen.returncode is None else None

    root = popen.pid if popen is not None else None
    killed: set[int] = set()
    for _ in range(50):
        strays = members(pgid, alive_root())
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for pid in strays:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        killed |= strays
        if popen is not None:
            try:
                popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        if not members(pgid, alive_root()):
            break
        time.sleep(0.02)
    # and the strays re-parented to the harness that had exited already (zombies: `members`
    # leaves them out), or they stay zombies for the rest of a campaign
    me, mine = os.getpid(), os.getpgid(0)
    exited = {pid for pid, (ppid, group) in process_table(zombies=True).items()
              if ppid == me and pid not in _OURS and (group == pgid or group != mine)}
    _reap((killed | exited) - {root})


def _reap(pids: set[int], within: float = 1.0) -> None:
    """Orphans re-parented to the harness (its subreaper role) are its to wait for, or they
    stay zombies for the rest of a campaign; others are not its children (nothing to do)."""
    deadline = time.monotonic() + within
    left = set(pids)
    while left and time.monotonic() < deadline:
        for pid in list(left):
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    left.discard(pid)
            except ChildProcessError:
                left.discard(pid)
        if left:
            time.sleep(0.01)


def members(pgid: int, root: int | None = None) -> set[int]:
    """The live processes (zombies left out) of the child that leads process group `pgid`
    (Child.start makes each child the leader of a group of its own): every process in that
    group (in the sandbox, all it ever starts), every descendant of those and of `root`
    (a process that left the group without a sandbox), and the orphans re-parented to the
    harness (`subreaper`) outside the harness's own group that it did not start itself,
    with their descendants. A process that left the group and was orphaned to init while
    the harness was no subreaper (or on macOS, which has none) is not found."""
    table = process_table()
    me, mine = os.getpid(), os.getpgid(0)
    seeds = {pid for pid, (ppid, group) in table.items()
             if group == pgid or (ppid == me and group != mine and pid not in _OURS)}
    if root in table:
        seeds.add(root)
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = set(), list(seeds)
    while todo:
        pid = todo.pop()
        if pid not in out:
            out.add(pid)
            todo += children.get(pid, ())
    return out


def process_table(zombies: bool = False) -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, process group) of every process on the machine (zombies only
    with `zombies`). Linux: one read of /proc/PID/stat each (~0.5 ms for 90 processes, a
    quarter of what psutil's per-process calls cost); elsewhere psutil and getpgid."""
    if sys.platform.startswith("linux") and os.path.isdir("/proc/self"):
        return _proc_table(zombies)
    return _psutil_table(zombies)


def _proc_table(zombies: bool) -> dict[int, tuple[int, int]]:
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read()
        except OSError:  # exited since the listing
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses, so from the last ')'
        state, ppid, pgrp = data[data.rfind(b")") + 2:].split(maxsplit=3)[:3]
        if zombies or state not in (b"Z", b"X"):
            out[int(name)] = (int(ppid), int(pgrp))
    return out


def _psutil_table(zombies: bool) -> dict[int, tuple[int, int]]:
    import psutil

    out = {}
    for p in psutil.process_iter(["ppid", "status"]):
        try:
            dead = p.info["status"] in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
            if (zombies or not dead) and p.info["ppid"] is not None:
                out[p.pid] = (p.info["ppid"], os.getpgid(p.pid))
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return out


_OURS: set[int] = set()  # live children the harness started on purpose (never strays)


def run(cmd: list[str], *, cwd: Path, env: dict, limit: float, log: Path, echo: bool,
        prefix: str = "", tail_lines: int = 400, on_start=None) -> ChildResult:
    """Run cmd to completion, killing its tree at `limit` s (or on Ctrl-C in the harness).
    `on_start(pid)` is called once the child exists (e.g. to watch its CPU use)."""
    child = Child.start(cmd, cwd=cwd, env=env, log=log, echo=echo, prefix=prefix, tail_lines=tail_lines)
    try:
        if on_start is not None:
            on_start(child.pid)
        code = child.wait(limit)
        timed_out = code is None
        if timed_out:
            child.kill_tree()
    except BaseException:  # Ctrl-C in the harness: never leave an orphan training
        child.kill_tree()
        raise
    return ChildResult(None if timed_out else code, timed_out, child.seconds, child.output())


def _die_with_parent() -> None:
    """Linux: the child gets SIGKILL when the harness dies (even by SIGKILL), so a killed
    campaign leaves no orphan training behind to skew the next run's timing."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass
