"""The sandbox launcher: confine this process, then exec the command.

    python -E -s -S /path/to/harness/sandbox/launch.py '<policy-json>' -- prog args...

policy-json: {"read": [...], "write": [...], "private": [...], "list_dirs": [...],
"devices": [...], "options": [...], "fds": [[from, to], ...]} (options: "unix_sockets", see
seccomp.build; "namespaces": build the private root of namespaces.py, required;
"no_metadata": deny the syscalls that change file metadata, for machines without
namespaces; fds: descriptors moved to fixed numbers before the exec, so that two
commands given different descriptors see the same ones).
Stdlib only and no `harness` import: sys.path[0] is this directory, so the siblings
`landlock`, `seccomp` and `namespaces` import as top-level modules. In order:
parent-death SIGKILL, no core dumps, the namespaces (where asked), drop every capability
(so even uid 0 is powerless after the exec), no_new_privs, Landlock (required), seccomp
(where this arch has a filter), the descriptors, exec.
Any failure prints one line "sandbox: <why>" on stderr and exits 126: the command
never runs unconfined.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import resource
import signal
import sys

import landlock
import namespaces
import seccomp

PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_SECUREBITS = 1, 24, 28
PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 38, 47, 4
# securebits(7): root gets no capabilities on exec, setuid() keeps none, ambient set
# cannot be raised, and each bit is locked so nothing below us can undo it.
SECUREBITS = (1 << 0 | 1 << 1      # NOROOT, NOROOT_LOCKED
              | 1 << 2 | 1 << 3    # NO_SETUID_FIXUP, _LOCKED
              | 1 << 5             # KEEP_CAPS_LOCKED (KEEP_CAPS stays 0)
              | 1 << 6 | 1 << 7)   # NO_CAP_AMBIENT_RAISE, _LOCKED
CAP_SETPCAP = 8
LINUX_CAPABILITY_VERSION_3 = 0x20080522

_libc = ctypes.CDLL(None, use_errno=True)


class Refused(Exception):
    """A confinement step failed: report and exit 126."""


def _prctl(option: int, arg2: int = 0, what: str = "") -> int:
    # prctl is variadic: pass full-width unsigned longs, as the kernel reads them
    ret = _libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(0),
                      ctypes.c_ulong(0), ctypes.c_ulong(0))
    if ret < 0:
        e = ctypes.get_errno()
        raise Refused(f"{what or f'prctl({option})'}: {os.strerror(e)}")
    return ret


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def _capget() -> tuple[int, int, int]:
    """(effective, permitted, inheritable) as 64-bit masks."""
    hdr, data = _CapHeader(LINUX_CAPABILITY_VERSION_3, 0), (_CapData * 2)()
    if _libc.capget(ctypes.byref(hdr), data) != 0:
        raise Refused(f"capget: {os.strerror(ctypes.get_errno())}")
    return tuple(getattr(data[0], f) | getattr(data[1], f) << 32
                 for f in ("effective", "permitted", "inheritable"))


def drop_capabilities() -> None:
    """Leave this process, and whatever it execs, with no capability at all."""
    eff, perm, inh = _capget()
    if eff & (1 << CAP_SETPCAP):  # needed for securebits and the bounding set
        _prctl(PR_SET_SECUREBITS, SECUREBITS, "set securebits")
        with open("/proc/sys/kernel/cap_last_cap") as f:
            last = int(f.read())
        for cap in range(last + 1):
            _prctl(PR_CAPBSET_DROP, cap, f"drop capability {cap} from the bounding set")
    try:
        _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, "clear ambient capabilities")
    except Refused:
        if ctypes.get_errno() != errno.EINVAL:  # EINVAL: kernel < 4.3, no ambient set
            raise
    if eff | perm | inh:
        hdr, data = _CapHeader(LINUX_CAPABILITY_VERSION_3, 0), (_CapData * 2)()
        if _libc.capset(ctypes.byref(hdr), data) != 0:
            raise Refused(f"capset: {os.strerror(ctypes.get_errno())}")
    if any(_capget()):
        raise Refused("capabilities still held after capset")


def confine(policy: dict) -> None:
    """Every step above but the exec; raises Refused."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, "set parent-death signal")
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    options = policy.get("options", [])
    if "namespaces" in options:
        try:
            namespaces.enter(policy)  # from here on: PID 1 of the namespaces, in the private root
        except OSError as e:
            raise Refused(f"namespaces: {e.strerror or e}") from None
    drop_capabilities()
    _prctl(PR_SET_NO_NEW_PRIVS, 1, "set no_new_privs")
    try:
        landlock.apply(policy)
    except OSError as e:
        raise Refused(f"Landlock: {e.strerror or e}") from None
    arch = seccomp.native_arch()
    if arch is not None:
        try:
            seccomp.install(seccomp.build(arch, unix_sockets="unix_sockets" in options,
                                          metadata="no_metadata" in options))
        except OSError as e:
            raise Refused(str(e)) from None


def move_fds(pairs: list[list[int]]) -> None:
    """dup each `from` descriptor to its `to` number (inheritable), whatever overlaps."""
    above = 1 + max((n for pair in pairs for n in pair), default=2)
    held = [(fcntl.fcntl(src, fcntl.F_DUPFD_CLOEXEC, above), dst) for src, dst in pairs]  # clear of every target
    for src, _ in pairs:
        if src not in {dst for _, dst in pairs}:
            os.close(src)
    for tmp, dst in held:
        os.dup2(tmp, dst, inheritable=True)
        os.close(tmp)


def main(args: list[str]) -> int:
    if len(args) < 3 or args[1] != "--":
        print("sandbox: usage: launch.py <policy-json> -- <command...>", file=sys.stderr)
        return 126
    try:
        policy = json.loads(args[0])
        fds = policy.pop("fds", []) if isinstance(policy, dict) else []
        if not isinstance(policy, dict) or any(
                not isinstance(v, list) or not all(isinstance(p, str) for p in v)
                for v in policy.values()):
            raise ValueError("want an object of string lists")
        if not isinstance(fds, list) or not all(
                isinstance(f, list) and len(f) == 2 and all(type(n) is int and n >= 0 for n in f) for f in fds):
            raise ValueError("fds: want a list of [from, to] pairs")
        confine(policy)
        move_fds(fds)
    except (Refused, ValueError, OSError) as e:
        print(f"sandbox: {e}", file=sys.stderr)
        return 126
    command = args[2:]
    try:
        os.execvp(command[0], command)
    except OSError as e:
        print(f"sandbox: cannot run {command[0]}: {e.strerror}", file=sys.stderr)
        return 126


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
