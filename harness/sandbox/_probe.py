"""The child side of selftest(): runs confined, as `python -c <this source> <config-json>`.

Prints one line "SANDBOX-PROBE <json list of problems>" last; everything else it prints
(e.g. from the device code) is ignored. Config keys: see harness/sandbox/selftest.py.
"""
import ctypes
import json
import os
import socket
import sys

MARK = "SANDBOX-PROBE "
cfg = json.loads(sys.argv[1])
problems = []


def works(fn) -> bool:
    try:
        fn()
        return True
    except OSError:
        return False


if cfg["device_code"]:
    try:
        exec(compile(cfg["device_code"], "<device_code>", "exec"), {"__name__": "__probe__"})
    except BaseException as e:  # noqa: BLE001 -- any failure is the finding
        problems.append(f"device code failed: {type(e).__name__}: {e}")

for path in cfg["deny_read"]:
    def read(p=path):
        with open(p, "rb") as f:
            f.read(1)
    if works(read):
        problems.append(f"could read {path}")

for d in dict.fromkeys(cfg["deny_write"] + cfg["write"]):
    probe = os.path.join(d, f".sandbox-selftest-{os.getpid()}")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
        ok = True
    except OSError as e:
        ok, why = False, e.strerror
    if ok and d in cfg["deny_write"]:
        problems.append(f"could create a file in {d}")
    elif not ok and d in cfg["write"]:
        problems.append(f"cannot create a file in write dir {d}: {why}")


def connect():
    with socket.create_connection(("127.0.0.1", cfg["tcp_port"]), timeout=3):
        pass


if works(connect):
    problems.append(f"TCP connect to 127.0.0.1:{cfg['tcp_port']} succeeded")
if cfg["socket_ban"]:
    for fam in ("AF_INET", "AF_INET6") + (() if cfg["unix_sockets"] else ("AF_UNIX",)):
        if works(lambda f=getattr(socket, fam): socket.socket(f).close()):
            problems.append(f"socket({fam}) succeeded")
    if cfg["unix_sockets"] and works(lambda: socket.socket(socket.AF_UNIX).connect(cfg["unix_listener"])):
        problems.append(f"connect() to the Unix socket {cfg['unix_listener']} succeeded")
if not works(lambda: [s.close() for s in socket.socketpair()]):
    problems.append("socketpair(AF_UNIX) failed")
if cfg["signal_scoped"] and works(lambda: os.kill(cfg["parent_pid"], 0)):
    problems.append("could signal the harness (kill(parent, 0) succeeded)")
if cfg["sysv_denied"]:
    libc = ctypes.CDLL(None, use_errno=True)
    shm = libc.shmget(0, 4096, 0o1000 | 0o600)  # IPC_PRIVATE, IPC_CREAT | rw
    if shm >= 0:
        libc.shmctl(shm, 0, None)  # IPC_RMID
        problems.append("SysV shmget succeeded")
if cfg["pgrp_pinned"]:
    before = os.getpgrp()
    works(os.setsid)
    if os.getpgrp() != before:
        problems.append("setsid() moved the process out of its process group")

print(MARK + json.dumps(problems), flush=True)
