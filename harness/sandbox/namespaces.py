"""Linux namespaces for the sandbox: a private view of the file system in which what the
policy does not grant does not exist, and what it grants for reading is mounted read-only.

Stdlib only (the launcher imports this as a top-level module). Usage, in the launcher:

    enter(policy)   # unshare, fork: returns in the child (PID 1 of a new PID namespace),
                    # whose root is a fresh tmpfs holding only the policy's paths;
                    # the parent waits and exits with the child's status

Why: Landlock confines opening files, not their metadata. A process that can reach a file
through a read-only mount cannot change its mode, owner, times (reads do not even update
its access time) or extended attributes, whoever owns it, so nothing of the host outlives
the process but what it wrote in its scratch directory. In order:
- a user namespace (the harness's uid and gid mapped to themselves) that owns new mount,
  PID, IPC, network, UTS and cgroup namespaces: no host process is visible, no SysV or
  POSIX IPC object is shared, there is no network but a down loopback;
- the child of a fork is PID 1 there: when it exits, the kernel kills every process left
  in the namespace, however it was started (double forks included);
- a tmpfs root with, at their own paths: `read` paths bound read-only (nosuid, nodev),
  `write` paths bound read-write (nosuid, nodev), `private` paths as fresh empty tmpfs
  (the scratch of a model runner: it dies with the namespace and never touches a disk),
  `list_dirs` as empty directories (only the granted entries beneath them exist),
  `devices` bound read-only into a tmpfs /dev (usable as devices; their modes, times and
  xattrs, the host's, cannot change), a fresh /proc of the new PID namespace;
- pivot_root into it; the host's root is detached.
Every step that fails raises NamespaceError: the caller must not run the command.
"""
from __future__ import annotations

import ctypes
import os
import signal
import stat
import sys

CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS = 0x00020000, 0x02000000, 0x04000000
CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x08000000, 0x10000000, 0x20000000, 0x40000000
UNSHARE_FLAGS = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWNET | CLONE_NEWUTS \
    | CLONE_NEWCGROUP
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
# mount_setattr(2) (Linux 5.12; Landlock, which the sandbox requires, came in 5.13)
SYS_MOUNT_SETATTR, AT_FDCWD, AT_RECURSIVE = 442, -100, 0x8000
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC = 0x1, 0x2, 0x4, 0x8
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
BASE = "/tmp"  # where the new root is built: a mount point every system has, shadowed only here
PR_SET_PDEATHSIG = 1

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class NamespaceError(OSError):
    """A namespace step failed: the process is not confined as asked."""


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _check(ret: int, what: str) -> int:
    if ret < 0:
        e = ctypes.get_errno()
        raise NamespaceError(e, f"{what}: {os.strerror(e)}")
    return ret


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = (lambda s: s.encode() if s is not None else None)
    _check(_libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
           f"mount {source or fstype} on {target}")


def _setattr(target: str, attrs: int) -> None:
    """Set mount attributes on `target` and every mount beneath it."""
    attr = _MountAttr(attrs, 0, 0, 0)
    _check(_libc.syscall(ctypes.c_long(SYS_MOUNT_SETATTR), ctypes.c_int(AT_FDCWD), target.encode(),
                         ctypes.c_uint(AT_RECURSIVE), ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr))),
           f"mount_setattr {target}")


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _mountpoint(path: str, is_dir: bool) -> None:
    """An empty directory or file at `path` in the new root (parents created)."""
    os.makedirs(path if is_dir else os.path.dirname(path), mode=0o755, exist_ok=True)
    if not is_dir and not os.path.lexists(path):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))


def plan(policy: dict) -> list[tuple[str, str, str]]:
    """(kind, path, link target) for every policy path that exists, parents before children:
    kind is 'ro', 'rw', 'dev', 'tmpfs', 'dir' or 'symlink' (a policy path that is a link is
    recreated as the same link: /lib -> usr/lib stays a link into the granted /usr)."""
    kinds = [("read", "ro"), ("write", "rw"), ("devices", "dev"), ("private", "tmpfs"), ("list_dirs", "dir")]
    seen, out = set(), []
    for key, kind in kinds:
        for p in policy.get(key, ()):
            p = os.path.normpath(os.path.abspath(p))
            if p in seen or p == "/" or p == "/proc" or p.startswith("/proc/") \
                    or (kind != "tmpfs" and not os.path.lexists(p)):
                continue  # /proc is the new PID namespace's own, whatever the policy lists beneath it
            seen.add(p)
            if kind != "tmpfs" and os.path.islink(p):
                out.append(("symlink", p, os.readlink(p)))
            else:
                out.append((kind, p, ""))
    # depth first, so that a parent's mount never covers a child's; at one depth, 'dir'
    # entries before mounts (they are only directories of the new root)
    out.sort(key=lambda e: (e[1].count("/"), e[0] != "dir", e[1]))
    ro = [p for kind, p, _ in out if kind == "ro"]
    # a read-only path beneath a read-only parent is already there, read-only
    return [e for e in out if not (e[0] == "ro" and any(e[1].startswith(a + "/") for a in ro))]


def _build(policy: dict) -> None:
    entries = plan(policy)
    # Open every source before the tmpfs covers BASE: a source may live beneath it.
    sources = {p: os.open(p, os.O_PATH | os.O_CLOEXEC) for kind, p, _ in entries if kind in ("ro", "rw", "dev")}
    _mount("tmpfs", BASE, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
    root = BASE
    _mountpoint(root + "/dev", True)
    _mount("tmpfs", root + "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{root}/dev/{name}")
    for kind, p, link in entries:
        dst = root + p
        if kind == "symlink":
            if not os.path.lexists(dst):
                os.makedirs(os.path.dirname(dst), mode=0o755, exist_ok=True)
                os.symlink(link, dst)
            continue
        if kind == "dir":
            os.makedirs(dst, mode=0o755, exist_ok=True)
            continue
        if kind == "tmpfs":
            _mountpoint(dst, True)
            _mount("tmpfs", dst, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0700")
            continue
        fd = sources[p]
        _mountpoint(dst, stat.S_ISDIR(os.fstat(fd).st_mode))
        _mount(f"/proc/self/fd/{fd}", dst, None, MS_BIND | MS_REC)
        os.close(fd)
        if kind == "ro":
            _setattr(dst, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV)
        elif kind == "rw":
            _setattr(dst, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV)
        else:  # a device node (or a directory of them): opened, read and written as a device (a
            # read-only mount does not stop that), but its mode, times and xattrs, which live in
            # the host's /dev and outlive the process, cannot be changed
            _setattr(dst, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC)
    _mountpoint(root + "/proc", True)
    _mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    # /dev holds the granted nodes and nothing else, and nothing can be added to it
    _mount(None, root + "/dev", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NOEXEC)
    arch = os.uname().machine
    if arch not in SYS_PIVOT_ROOT:
        raise NamespaceError(0, f"pivot_root: no syscall number for {arch}")
    os.chdir(root)
    # pivot_root(".", "."): the old root ends up stacked on the new one; detach it
    _check(_libc.syscall(ctypes.c_long(SYS_PIVOT_ROOT[arch]), b".", b"."), "pivot_root")
    _check(_libc.umount2(b".", MNT_DETACH), "detach the host's root")
    os.chdir("/")
    # the new root itself read-only: nothing but the write and private paths can be changed
    _mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _wait_and_exit(pid: int) -> None:
    """The parent's part: wait for PID 1 of the namespace, then end as it ended."""
    for fd in range(3, 1024):  # the child holds the command's descriptors (sockets, buffers), not us
        try:
            os.close(fd)
        except OSError:
            pass
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except ChildProcessError:
            os._exit(1)
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):  # end by the same signal, so the harness sees what the command saw
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.WEXITSTATUS(status))


def enter(policy: dict) -> None:
    """Unshare, fork and build the private root; returns in the child only."""
    uid, gid, cwd = os.getuid(), os.getgid(), os.getcwd()
    _check(_libc.unshare(ctypes.c_int(UNSHARE_FLAGS)), "unshare (user, mount, PID, IPC, network namespaces)")
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"{uid} {uid} 1")
    _write("/proc/self/gid_map", f"{gid} {gid} 1")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing done here propagates to the host
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid != 0:
        _wait_and_exit(pid)
    _check(_libc.prctl(ctypes.c_int(PR_SET_PDEATHSIG), ctypes.c_ulong(signal.SIGKILL), ctypes.c_ulong(0),
                       ctypes.c_ulong(0), ctypes.c_ulong(0)), "set parent-death signal")
    _build(policy)
    try:
        os.chdir(cwd)
    except OSError:
        os.chdir("/")

