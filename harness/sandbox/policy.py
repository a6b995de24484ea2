"""The sandbox's policies and the command wrapper (harness/sandbox/__init__.py re-exports
them): what a confined command may read and write, what this machine can enforce, and
the argv that applies it."""
from __future__ import annotations

import functools
import glob
import json
import os
import shutil
import site
import subprocess
import sys
from dataclasses import dataclass, fields
from pathlib import Path

from harness.sandbox import macos

LAUNCH = Path(__file__).resolve().parent / "launch.py"
BACKENDS = ("cpu", "cuda", "rocm", "mps")


def _union(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*a, *b)))


@dataclass(frozen=True)
class Policy:
    read: tuple[str, ...] = ()       # files or dirs: read + execute everything beneath
    write: tuple[str, ...] = ()      # dirs: full read/write/create/remove beneath (scratch)
    private: tuple[str, ...] = ()    # dirs: like write, but a fresh empty tmpfs of the
    #                                  sandbox's own where namespaces exist (dies with it)
    list_dirs: tuple[str, ...] = ()  # dirs whose entries may be listed, files not read
    devices: tuple[str, ...] = ()    # device files or dirs of them: read, write, ioctl
    deny_read: tuple[str, ...] = ()  # macOS only: Seatbelt can carve these out of an allowed
    #                                  tree; Landlock is allow-only and ignores this field
    options: tuple[str, ...] = ()    # "unix_sockets": AF_UNIX sockets may be created, every
    #                                  connect() fails (what GPU drivers need; seccomp.build)

    def __post_init__(self):  # accept lists/Paths, store tuples of str (hashable, JSON-able)
        for f in fields(self):
            object.__setattr__(self, f.name, tuple(str(p) for p in getattr(self, f.name)))

    def merged(self, other: "Policy") -> "Policy":
        """The union of both, order-preserving, duplicates dropped."""
        return Policy(**{f.name: _union(getattr(self, f.name), getattr(other, f.name))
                         for f in fields(self)})


@dataclass(frozen=True)
class Support:
    kind: str               # "landlock" | "sandbox-exec" | "none"
    landlock_abi: int       # 0 when not Linux/Landlock
    seccomp: bool
    notes: tuple[str, ...]  # what is missing or weaker than the full design
    namespaces: bool = False  # the private, read-only root of harness/sandbox/namespaces.py

    @property
    def label(self) -> str:
        """'landlock-v7+seccomp+namespaces', 'landlock-v3+seccomp (partial: ...)', 'sandbox-exec',
        'none'."""
        if self.kind != "landlock":
            return self.kind
        base = (f"landlock-v{self.landlock_abi}" + ("+seccomp" if self.seccomp else "")
                + ("+namespaces" if self.namespaces else ""))
        return f"{base} (partial: {'; '.join(self.notes)})" if self.notes else base


class SandboxUnavailable(RuntimeError):
    """This machine cannot confine a command (support().kind == 'none')."""


def _abi_notes(abi: int, has_seccomp: bool) -> list[str]:
    notes = []
    if not has_seccomp:
        notes.append("no seccomp filter for this architecture: sockets, IPC, ptrace, "
                     "namespaces and setsid are not blocked")
    if abi < 3:
        notes.append("truncate(2) not restricted (Landlock ABI < 3)")
    if abi < 4:
        notes.append("TCP not handled by Landlock (ABI < 4)"
                     + ("; seccomp's socket ban still applies" if has_seccomp else ""))
    if abi < 5:
        notes.append("device ioctls not restricted (Landlock ABI < 5)")
    if abi < 6:  # with seccomp no socket can be made, abstract or not
        notes.append("signals not scoped (Landlock ABI < 6)" if has_seccomp else
                     "signals and abstract unix sockets not scoped (Landlock ABI < 6)")
    return notes


@functools.lru_cache(maxsize=None)
def support() -> Support:
    """What this machine offers, probed once per process (on Linux by running the launcher
    on `python -c pass`, so a container that blocks any step reports kind 'none')."""
    if sys.platform == "darwin":
        if shutil.which("sandbox-exec") or os.path.exists("/usr/bin/sandbox-exec"):
            return Support("sandbox-exec", 0, False,
                           ("reads are denied only for Policy.deny_read (allow-by-default profile)",))
        return Support("none", 0, False, ("sandbox-exec not found",))
    if not sys.platform.startswith("linux"):
        return Support("none", 0, False, (f"no sandbox backend for {sys.platform}",))
    from harness.sandbox import landlock, seccomp

    abi = landlock.abi_version()
    if abi < 1:
        return Support("none", 0, False, ("Landlock unavailable (kernel < 5.13, or not enabled "
                                          "in the LSM list)",))
    notes = _abi_notes(abi, seccomp.available())
    full = Support("landlock", abi, seccomp.available(), tuple(notes), namespaces=True)
    why_ns = _launcher_fails(full)
    if why_ns is None:
        return full
    notes.append(f"no namespaces ({why_ns}): the host's files are visible, reads update access times, "
                 "and seccomp denies every metadata change instead")
    sup = Support("landlock", abi, seccomp.available(), tuple(notes))
    why = _launcher_fails(sup)
    if why:
        return Support("none", abi, False, (f"the sandbox launcher fails here: {why}",))
    return sup


def _launcher_fails(sup: Support) -> str | None:
    """Why the launcher cannot run `python -c pass` under `sup` here (None: it can)."""
    try:
        r = subprocess.run(wrap([sys.executable, "-S", "-c", "pass"], base_policy("cpu"), sup),
                           capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        return None if r.returncode == 0 else (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)


def _existing(paths) -> tuple[str, ...]:
    return tuple(p for p in dict.fromkeys(paths) if p and os.path.exists(p))


def _compiler_dirs() -> list[str]:
    """Where the C/C++ compilers on PATH live: Triton and torch.compile build small C
    helpers with them (a compiler outside /usr, such as /opt/gcc/bin/gcc, was unreadable in
    the sandbox). For <prefix>/bin/gcc: <prefix>/{bin,lib,lib64,libexec,include}, never
    the whole prefix (a compiler in ~/bin must not open $HOME)."""
    out = []
    for name in dict.fromkeys([os.environ.get("CC"), os.environ.get("CXX"), "cc", "gcc", "c++", "g++", "clang"]):
        path = shutil.which(name) if name else None
        if path:
            prefix = os.path.dirname(os.path.dirname(os.path.realpath(path)))
            out += [os.path.join(prefix, d) for d in ("bin", "lib", "lib64", "libexec", "include")]
    return out


def base_policy(backend: str) -> Policy:
    """What any Python + torch process needs on `backend` (cpu|cuda|rocm|mps): the
    interpreter, its prefixes and site-packages, system libraries and config (read), and
    the harmless /dev nodes plus the backend's GPU nodes. Never /tmp, /dev/shm or $HOME."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
    read = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
            *site.getsitepackages(), os.path.dirname(os.path.realpath(sys.executable)),
            "/usr", "/usr/local", "/lib", "/lib32", "/lib64", "/bin", "/sbin", "/etc",
            "/proc", "/sys", *_compiler_dirs()]
    devices = ["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"]
    write, options = [], []
    if backend in ("cuda", "rocm"):
        # The CUDA driver names its threads through /proc/self/task/<tid>/comm and creates a
        # Unix socket at start-up (it looks for an MPS server); denied either, cuInit fails
        # with error 304. The launcher opens /proc/self as itself: the rule covers only the
        # sandboxed process's own /proc entries, never another process's.
        write.append("/proc/self")
        options.append("unix_sockets")
    if backend == "cuda":
        devices += ["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools",
                    "/dev/nvidia-modeset", *sorted(glob.glob("/dev/nvidia[0-9]*")),
                    "/dev/nvidia-caps"]
    elif backend == "rocm":
        devices += ["/dev/kfd", "/dev/dri"]
        read += [os.path.realpath(p) for p in glob.glob("/opt/rocm*")]  # system ROCm libraries
    return Policy(read=_existing(read), devices=_existing(devices), write=_existing(write), options=tuple(options))


def wrap(argv: list[str], policy: Policy, sup: Support | None = None, fds: dict[int, int] | None = None) -> list[str]:
    """The argv that runs `argv` confined to `policy`. Relative policy paths are taken from
    the caller's cwd. `fds`: inherited descriptors moved to fixed numbers ({from: to})
    before the exec (Linux). Raises SandboxUnavailable when sup (default: support()) is
    'none'."""
    sup = sup or support()
    if not argv:
        raise ValueError("empty command")
    if sup.kind == "sandbox-exec":
        return ["sandbox-exec", "-p", macos.profile(policy), *argv]
    if sup.kind != "landlock":
        raise SandboxUnavailable("no sandbox on this machine: " + "; ".join(sup.notes))
    spec = {k: [os.path.abspath(p) for p in getattr(policy, k)]
            for k in ("read", "write", "private", "list_dirs", "devices")}
    spec["options"] = [*policy.options, "namespaces" if sup.namespaces else "no_metadata"]
    spec["fds"] = [[int(a), int(b)] for a, b in (fds or {}).items()]
    return [sys.executable, "-E", "-s", "-S", str(LAUNCH), json.dumps(spec), "--", *argv]


SCRATCH_VARS = {  # variable -> dir under the scratch dir
    "HOME": "home", "TMPDIR": "tmp", "TMP": "tmp", "TEMP": "tmp",
    "XDG_CACHE_HOME": "cache", "XDG_CONFIG_HOME": "config", "XDG_DATA_HOME": "data",
    "XDG_STATE_HOME": "state", "TRITON_CACHE_DIR": "cache/triton", "TRITON_HOME": "cache",
    "TORCHINDUCTOR_CACHE_DIR": "cache/inductor", "TORCH_HOME": "cache/torch",
    "TORCH_EXTENSIONS_DIR": "cache/torch_extensions", "CUDA_CACHE_PATH": "cache/nv",
    "MPLCONFIGDIR": "cache/matplotlib",
    "HF_HOME": "cache/huggingface", "MIOPEN_USER_DB_PATH": "cache/miopen",
    "MIOPEN_CUSTOM_CACHE_DIR": "cache/miopen",
}


def scratch_env(scratch: Path) -> dict[str, str]:
    """Env vars that send every cache/tmp write into `scratch` (the dirs are created).
    Not PYTHONPYCACHEPREFIX: Python would then ignore the installed bytecode and compile
    torch's thousands of modules from source at every start (seconds); set
    PYTHONDONTWRITEBYTECODE instead, which the harness does."""
    scratch = Path(scratch).resolve()
    env = {}
    for var, sub in SCRATCH_VARS.items():
        d = scratch / sub
        d.mkdir(parents=True, exist_ok=True)
        env[var] = str(d)
    return env


__all__ = ["Policy", "Support", "SandboxUnavailable", "support", "base_policy", "wrap",
           "scratch_env", "selftest"]
