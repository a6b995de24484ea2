"""A hand-built classic-BPF seccomp filter: deny the syscalls a training run never needs.

Stdlib only (the launcher imports this as a top-level module, before anything else):

    prog = build("x86_64")          # list of (code, jt, jf, k) instructions, or None
    install(prog)                   # needs PR_SET_NO_NEW_PRIVS (or CAP_SYS_ADMIN) first

Policy: ERRNO(EPERM) for every syscall in DENY (socket of any family, io_uring, ptrace-like,
SysV/POSIX IPC, mount/namespaces, clock setting, kernel modules, ...), and for clone() with
any CLONE_NEW* flag (user namespaces are the kernel's largest attack surface); ENOSYS for
clone3 (its flags sit behind a pointer BPF cannot read; glibc then falls back to clone);
ERRNO(0) -- success without effect -- for setsid/setpgid, so every process in the sandbox
stays in the process group the harness made and dies with its killpg; ALLOW for the rest.
A syscall from a foreign ABI (i386 via int 0x80, x32) gets EPERM: tables are per ABI.
"""
from __future__ import annotations

import ctypes
import errno
import platform
import struct

# Only the native ABIs we have tables for (linux/audit.h values).
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
X32_SYSCALL_BIT = 0x40000000

# Checked against arch/x86/entry/syscalls/syscall_64.tbl (x86_64) and
# include/uapi/asm-generic/unistd.h (aarch64 uses the generic numbering).
# Since 5.1 (io_uring, open_tree, ...) new syscalls have the same number everywhere.
_COMMON = {
    "pidfd_getfd": 438, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
    "fspick": 433, "mount_setattr": 442, "quotactl_fd": 443, "fchmodat2": 452,
    "setxattrat": 463, "removexattrat": 466,
}
# The syscalls that change a file's metadata (mode, owner, times, extended attributes),
# which Landlock does not confine: denied where the sandbox has no read-only mounts to
# stop them (harness/sandbox/namespaces.py), since uid 0 owns every file on such machines.
METADATA = {
    "x86_64": dict(chmod=90, fchmod=91, fchmodat=268, chown=92, fchown=93, lchown=94, fchownat=260,
                   setxattr=188, lsetxattr=189, fsetxattr=190, removexattr=197, lremovexattr=198,
                   fremovexattr=199, utime=132, utimes=235, utimensat=280, futimesat=261),
    "aarch64": dict(fchmod=52, fchmodat=53, fchownat=54, fchown=55, setxattr=5, lsetxattr=6, fsetxattr=7,
                    removexattr=14, lremovexattr=15, fremovexattr=16, utimensat=88),
}
METADATA_COMMON = ("fchmodat2", "setxattrat", "removexattrat")
SYSCALLS = {
    "x86_64": dict(_COMMON,
        socket=41, socketpair=53, connect=42, clone=56, clone3=435, setsid=112, setpgid=109,
        ptrace=101, process_vm_readv=310, process_vm_writev=311, kcmp=312, bpf=321,
        perf_event_open=298, userfaultfd=323, keyctl=250, add_key=248, request_key=249,
        shmget=29, shmat=30, shmctl=31, msgget=68, msgsnd=69, msgrcv=70, msgctl=71,
        semget=64, semop=65, semctl=66, semtimedop=220,
        mq_open=240, mq_unlink=241, mq_timedsend=242, mq_timedreceive=243, mq_notify=244,
        mq_getsetattr=245, mount=165, umount2=166, pivot_root=155, chroot=161, unshare=272,
        setns=308, settimeofday=164, clock_settime=227, clock_adjtime=305, adjtimex=159,
        reboot=169, kexec_load=246, kexec_file_load=320, init_module=175, finit_module=313,
        delete_module=176, swapon=167, swapoff=168, acct=163, quotactl=179, iopl=172,
        ioperm=173, personality=135, syslog=103, vhangup=153, name_to_handle_at=303,
        open_by_handle_at=304, lookup_dcookie=212),
    "aarch64": dict(_COMMON,
        socket=198, socketpair=199, connect=203, clone=220, clone3=435, setsid=157, setpgid=154,
        ptrace=117, process_vm_readv=270, process_vm_writev=271, kcmp=272, bpf=280,
        perf_event_open=241, userfaultfd=282, keyctl=219, add_key=217, request_key=218,
        shmget=194, shmat=196, shmctl=195, msgget=186, msgsnd=189, msgrcv=188, msgctl=187,
        semget=190, semop=193, semctl=191, semtimedop=192,
        mq_open=180, mq_unlink=181, mq_timedsend=182, mq_timedreceive=183, mq_notify=184,
        mq_getsetattr=185, mount=40, umount2=39, pivot_root=41, chroot=51, unshare=97,
        setns=268, settimeofday=170, clock_settime=112, clock_adjtime=266, adjtimex=171,
        reboot=142, kexec_load=104, kexec_file_load=294, init_module=105, finit_module=273,
        delete_module=106, swapon=224, swapoff=225, acct=89, quotactl=60, personality=92,
        syslog=116, vhangup=58, name_to_handle_at=264, open_by_handle_at=265,
        lookup_dcookie=18),
}
# Denied with EPERM, in this order, where the arch has them (iopl/ioperm are x86 only).
DENY = (
    "socket", "io_uring_setup", "io_uring_enter", "io_uring_register", "ptrace",
    "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp", "bpf", "perf_event_open",
    "userfaultfd", "keyctl", "add_key", "request_key", "shmget", "shmat", "shmctl", "msgget",
    "msgsnd", "msgrcv", "msgctl", "semget", "semop", "semtimedop", "semctl", "mq_open",
    "mq_unlink", "mq_timedsend", "mq_timedreceive", "mq_notify", "mq_getsetattr", "mount",
    "umount2", "pivot_root", "chroot", "unshare", "setns", "open_tree", "move_mount", "fsopen",
    "fsconfig", "fsmount", "fspick", "mount_setattr", "settimeofday", "clock_settime",
    "clock_adjtime", "adjtimex", "reboot", "kexec_load", "kexec_file_load", "init_module",
    "finit_module", "delete_module", "swapon", "swapoff", "acct", "quotactl", "quotactl_fd",
    "iopl", "ioperm", "personality", "syslog", "vhangup", "name_to_handle_at",
    "open_by_handle_at", "lookup_dcookie",
)
FAKE_SUCCESS = ("setsid", "setpgid")
# CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET (NEWTIME=0x80 is clone3/unshare
# only: in clone()'s flags that byte is the exit signal).
CLONE_NEW_MASK = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 \
    | 0x20000000 | 0x40000000

# Classic BPF opcodes (linux/filter.h) and seccomp return values (linux/seccomp.h).
LD_W_ABS = 0x20            # BPF_LD | BPF_W | BPF_ABS
JEQ, JGE, JSET = 0x15, 0x35, 0x45   # BPF_JMP | BPF_{JEQ,JGE,JSET} | BPF_K
RET = 0x06                 # BPF_RET | BPF_K
RET_ALLOW = 0x7FFF0000
RET_ERRNO = 0x00050000
OFF_NR, OFF_ARCH, OFF_ARG0 = 0, 4, 16   # struct seccomp_data; arg0's low word (little endian)


def native_arch() -> str | None:
    """'x86_64' or 'aarch64' when we have tables for this machine, else None."""
    m = platform.machine().lower()
    m = {"amd64": "x86_64", "arm64": "aarch64"}.get(m, m)
    return m if m in SYSCALLS else None


def _assemble(items: list) -> list[tuple[int, int, int, int]]:
    """items: instructions (code, jt, jf, k) whose jt/jf may be label names, and label
    strings marking the next instruction. Jumps go forward only (classic BPF)."""
    labels, prog = {}, []
    for it in items:
        if isinstance(it, str):
            labels[it] = len(prog)
        else:
            prog.append(it)
    out = []
    for pc, (code, jt, jf, k) in enumerate(prog):
        def rel(t):
            if isinstance(t, int):
                return t
            off = labels[t] - pc - 1
            if not 0 <= off <= 255:
                raise ValueError(f"BPF jump to {t} out of range ({off})")
            return off
        out.append((code, rel(jt), rel(jf), k))
    return out


AF_UNIX = 1


def build(arch: str, unix_sockets: bool = False, metadata: bool = False) -> list[tuple[int, int, int, int]] | None:
    """The filter for `arch` ('x86_64' | 'aarch64'); None for an arch without tables.

    unix_sockets: socket(AF_UNIX, ...) is allowed (any other family still fails with
    EPERM) and every connect() fails with ENOENT, as if nothing listened at the address:
    the CUDA driver creates a Unix socket at start-up (it looks for an MPS server, and
    carries on when none answers), but nothing in the sandbox may reach a host service
    such as a session bus through one.

    metadata: the METADATA syscalls fail with EPERM too (no chmod, chown, utime or xattr
    change anywhere, the scratch directory included)."""
    if arch not in SYSCALLS:
        return None
    nr = SYSCALLS[arch]
    items = [
        (LD_W_ABS, 0, 0, OFF_ARCH),
        (JEQ, 0, "eperm", AUDIT_ARCH[arch]),   # foreign ABI: deny everything
        (LD_W_ABS, 0, 0, OFF_NR),
    ]
    if arch == "x86_64":   # x32 ABI syscalls carry this bit and share AUDIT_ARCH_X86_64
        items.append((JGE, "eperm", 0, X32_SYSCALL_BIT))
    if unix_sockets:
        items += [(JEQ, 0, "not_socket", nr["socket"]),
                  (LD_W_ABS, 0, 0, OFF_ARG0),
                  (JEQ, "allow", "eperm", AF_UNIX),
                  "not_socket", (JEQ, "enoent", 0, nr["connect"])]
    items += [(JEQ, "eperm", 0, nr[name]) for name in DENY if name in nr and not (unix_sockets and name == "socket")]
    if metadata:
        numbers = {**METADATA[arch], **{name: nr[name] for name in METADATA_COMMON}}
        items += [(JEQ, "eperm", 0, n) for n in numbers.values()]
    items += [(JEQ, "fake_ok", 0, nr[name]) for name in FAKE_SUCCESS]
    items += [
        (JEQ, "enosys", 0, nr["clone3"]),
        (JEQ, 0, "allow", nr["clone"]),
        (LD_W_ABS, 0, 0, OFF_ARG0),
        (JSET, "eperm", 0, CLONE_NEW_MASK),
        "allow", (RET, 0, 0, RET_ALLOW),
        "eperm", (RET, 0, 0, RET_ERRNO | errno.EPERM),
        "enosys", (RET, 0, 0, RET_ERRNO | errno.ENOSYS),
        "enoent", (RET, 0, 0, RET_ERRNO | errno.ENOENT),
        "fake_ok", (RET, 0, 0, RET_ERRNO | 0),
    ]
    return _assemble(items)


def pack(prog: list[tuple[int, int, int, int]]) -> bytes:
    """struct sock_filter[] as the kernel reads it."""
    return b"".join(struct.pack("=HBBI", *ins) for ins in prog)


def install(prog: list[tuple[int, int, int, int]]) -> None:
    """Load `prog` into this thread (inherited across fork/exec). Raises OSError."""
    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    buf = ctypes.create_string_buffer(pack(prog))
    fprog = SockFprog(len(prog), ctypes.cast(buf, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
    if libc.prctl(ctypes.c_int(PR_SET_SECCOMP), ctypes.c_ulong(SECCOMP_MODE_FILTER),
                  ctypes.byref(fprog), ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"seccomp filter: {errno.errorcode.get(e, e)}")


def available() -> bool:
    """Seccomp filtering works here: a known native arch and a kernel with CONFIG_SECCOMP."""
    if native_arch() is None:
        return False
    PR_GET_SECCOMP = 21
    try:
        zero = ctypes.c_ulong(0)
        return ctypes.CDLL(None).prctl(ctypes.c_int(PR_GET_SECCOMP), zero, zero, zero, zero) >= 0
    except (OSError, AttributeError):
        return False
