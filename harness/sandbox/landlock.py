"""ctypes bindings for Landlock (landlock(7)): an allow-list of paths, TCP denied, scoped IPC.

Stdlib only (the launcher imports this as a top-level module). Usage:

    abi = abi_version()                       # 0 when the kernel has no Landlock
    skipped = apply({"read": [...], "write": [...], "list_dirs": [...], "devices": [...]})
    # this process and all its future children are now confined; skipped = missing paths

`apply` raises LandlockError when any step fails; the caller must then not run anything.
"""
from __future__ import annotations

import ctypes
import errno
import os
import stat

SYS_CREATE_RULESET, SYS_ADD_RULE, SYS_RESTRICT_SELF = 444, 445, 446  # x86_64 and aarch64
CREATE_RULESET_VERSION = 1 << 0
RULE_PATH_BENEATH = 1

# Filesystem rights (ABI 1 unless noted).
EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
REMOVE_DIR, REMOVE_FILE, MAKE_CHAR, MAKE_DIR = 1 << 4, 1 << 5, 1 << 6, 1 << 7
MAKE_REG, MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK, MAKE_SYM = 1 << 8, 1 << 9, 1 << 10, 1 << 11, 1 << 12
REFER = 1 << 13      # ABI 2
TRUNCATE = 1 << 14   # ABI 3
IOCTL_DEV = 1 << 15  # ABI 5
# Network rights (ABI 4) and scopes (ABI 6).
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1

# The only rights a rule on a non-directory may carry (else add_rule fails with EINVAL).
FILE_RIGHTS = READ_FILE | WRITE_FILE | EXECUTE | TRUNCATE | IOCTL_DEV

READ = EXECUTE | READ_FILE | READ_DIR
DEVICE = READ_FILE | WRITE_FILE | TRUNCATE | IOCTL_DEV | READ_DIR  # O_TRUNC on /dev/null


class LandlockError(OSError):
    """A Landlock step failed: the process is not (fully) confined."""


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64),
                ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # the kernel struct is __attribute__((packed)): 12 bytes
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _syscall(nr: int, *args) -> int:
    ret = _libc.syscall(ctypes.c_long(nr), *args)
    if ret < 0:
        e = ctypes.get_errno()
        raise LandlockError(e, os.strerror(e))
    return ret


def abi_version() -> int:
    """The kernel's Landlock ABI (1..), or 0 when unsupported (ENOSYS) or disabled (EOPNOTSUPP)."""
    try:
        return _syscall(SYS_CREATE_RULESET, None, ctypes.c_size_t(0),
                        ctypes.c_uint32(CREATE_RULESET_VERSION))
    except LandlockError:
        return 0


def handled_fs(abi: int) -> int:
    """Every filesystem right this ABI knows: all of them are denied unless a rule allows."""
    rights = (1 << 13) - 1
    if abi >= 2:
        rights |= REFER
    if abi >= 3:
        rights |= TRUNCATE
    if abi >= 5:
        rights |= IOCTL_DEV
    return rights


def create_ruleset(abi: int) -> int:
    """A ruleset fd handling all FS rights, TCP bind/connect (ABI >= 4: no rule, so all TCP
    is denied) and the signal/abstract-socket scopes (ABI >= 6)."""
    if abi < 1:
        raise LandlockError(errno.EOPNOTSUPP, "Landlock is not available")
    attr = _RulesetAttr(handled_fs(abi),
                        NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0,
                        SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0)
    # Older kernels take a shorter struct (copy_struct_from_user): pass what they know.
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    return _syscall(SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size),
                    ctypes.c_uint32(0))


def add_path(ruleset_fd: int, path: str, access: int, abi: int) -> bool:
    """Allow `access` beneath `path` (masked to the ABI, and to FILE_RIGHTS for a
    non-directory). False when the path does not exist; LandlockError on any other failure."""
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as e:
        raise LandlockError(e.errno, f"{path}: {e.strerror}") from None
    try:
        access &= handled_fs(abi)
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            access &= FILE_RIGHTS
        if access:
            rule = _PathBeneathAttr(access, fd)
            try:
                _syscall(SYS_ADD_RULE, ctypes.c_int(ruleset_fd), ctypes.c_int(RULE_PATH_BENEATH),
                         ctypes.byref(rule), ctypes.c_uint32(0))
            except LandlockError as e:
                raise LandlockError(e.errno, f"add rule for {path}: {e.strerror}") from None
    finally:
        os.close(fd)
    return True


def restrict_self(ruleset_fd: int) -> None:
    """Enforce the ruleset on this thread and its future children (needs no_new_privs)."""
    try:
        _syscall(SYS_RESTRICT_SELF, ctypes.c_int(ruleset_fd), ctypes.c_uint32(0))
    except LandlockError as e:
        raise LandlockError(e.errno, f"landlock_restrict_self: {e.strerror}") from None


def rules(policy: dict) -> list[tuple[str, int]]:
    """(path, rights) pairs for a policy dict with read/write/private/list_dirs/devices lists."""
    out = [(p, READ) for p in policy.get("read", ())]
    out += [(p, READ_DIR) for p in policy.get("list_dirs", ())]
    out += [(p, DEVICE) for p in policy.get("devices", ())]
    out += [(p, (1 << 16) - 1) for p in (*policy.get("write", ()), *policy.get("private", ()))]  # every right
    #                                                                    (masked by the ABI)
    return out


def apply(policy: dict, abi: int | None = None) -> list[str]:
    """Confine this process to `policy`; returns the policy paths skipped as missing."""
    abi = abi_version() if abi is None else abi
    fd = create_ruleset(abi)
    skipped = []
    try:
        for path, access in rules(policy):
            if not add_path(fd, path, access, abi):
                skipped.append(path)
        restrict_self(fd)
    finally:
        os.close(fd)
    return skipped
