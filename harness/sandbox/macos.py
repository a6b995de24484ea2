"""A sandbox-exec (Seatbelt, SBPL) profile for macOS: `profile(policy) -> str`.

    argv = ["sandbox-exec", "-p", profile(policy), *command]

Allow by default -- Metal/MPS needs Mach services and IOKit classes we cannot enumerate --
then deny: every file write outside the policy's write dirs (and a few /dev nodes), reads
of policy.deny_read (Seatbelt, unlike Landlock, can deny beneath an allowed tree), all
network (socketpair(2) has no address, so it is not a network operation and still works),
SysV IPC, signals and process inspection aimed outside this sandbox.
Later rules win in SBPL, so each deny comes before its exceptions.
"""
from __future__ import annotations

import os

# Written by ordinary tools even when they do nothing (dyld's dtrace hook, shells, Python).
DEV_WRITABLE = ("/dev/null", "/dev/zero", "/dev/dtracehelper")


def quote(path: str) -> str:
    """An SBPL string literal for `path` (backslash and double quote escaped)."""
    if any(ord(c) < 0x20 or c == "\x7f" for c in path):
        raise ValueError(f"control character in sandbox path {path!r}")
    return '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _real(path: str) -> str:
    # Seatbelt matches resolved paths: /tmp is /private/tmp, /var is /private/var.
    return os.path.realpath(os.path.abspath(path))


def profile(policy) -> str:
    """The SBPL text for `policy` (a harness.sandbox.Policy, or anything with its fields)."""
    writable = [f"(subpath {quote(_real(p))})" for p in (*policy.write, *policy.private)]
    writable += [f"(literal {quote(p)})" for p in DEV_WRITABLE]
    writable += [f"(subpath {quote(_real(p))})" for p in policy.devices if p not in DEV_WRITABLE]
    lines = [
        "(version 1)",
        "(allow default)",
        "(deny file-write*)",
        "(allow file-write*\n    " + "\n    ".join(writable) + ")",
    ]
    if policy.deny_read:
        lines.append("(deny file-read*\n    " + "\n    ".join(
            f"(subpath {quote(_real(p))})" for p in policy.deny_read) + ")")
    lines += [
        "(deny network*)",
        "(deny ipc-sysv*)",
        "(deny ipc-sysv-shm)",
        "(deny signal)",
        "(allow signal (target same-sandbox))",
        "(deny process-info*)",
        "(allow process-info* (target same-sandbox))",
    ]
    return "\n".join(lines) + "\n"
