"""harness.sandbox: real confinement checks (Linux + Landlock) and unit tests of the parts
that cannot run here (aarch64 filter, macOS profile)."""
import dataclasses
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest

from harness import sandbox
from harness.sandbox import landlock, macos, seccomp
from harness.sandbox.policy import _abi_notes
from tests.sandbox_helpers import PRELUDE, block_syscall, confined, launch, run_bpf

SUP = sandbox.support()
linux_only = pytest.mark.skipif(
    SUP.kind != "landlock",
    reason=f"needs Linux with Landlock (this machine: {SUP.label}; {'; '.join(SUP.notes)})")
LAUNCH = str(sandbox.LAUNCH)


@pytest.fixture()
def tree(tmp_path):
    """data/train (granted), data/val (the secret sibling), ro/ (granted read-only),
    listed/ (names only), scratch/ (write)."""
    t = {k: tmp_path / k for k in ("train", "val", "ro", "listed", "scratch")}
    t["train"] = tmp_path / "data" / "train"
    t["val"] = tmp_path / "data" / "val"
    for d in t.values():
        d.mkdir(parents=True)
    (t["train"] / "a.txt").write_text("train")
    (t["val"] / "secret.txt").write_text("secret")
    (t["listed"] / "f.txt").write_text("listed")
    t["policy"] = sandbox.base_policy("cpu").merged(sandbox.Policy(
        read=(t["train"], t["ro"]), write=(t["scratch"],), list_dirs=(t["listed"],)))
    return {k: v if k == "policy" else str(v) for k, v in t.items()}


@linux_only
def test_filesystem(tree):
    r = confined("""
r["train"] = read(P["train"] + "/a.txt")
r["secret"] = can(lambda: read(P["val"] + "/secret.txt"))
r["list_val"] = can(lambda: os.listdir(P["val"]))
r["write_scratch"] = can(lambda: create(P["scratch"] + "/out"))
r["write_ro"] = can(lambda: create(P["ro"] + "/out"))
r["write_tmp"] = can(lambda: create("/tmp/sandbox-test-%d" % os.getpid()))
r["truncate_train"] = can(lambda: os.truncate(P["train"] + "/a.txt", 0))
r["listed"] = os.listdir(P["listed"])
r["read_listed"] = can(lambda: read(P["listed"] + "/f.txt"))
""", tree["policy"], tree["scratch"], **{k: v for k, v in tree.items() if k != "policy"})
    # with namespaces a listed directory holds only what is granted beneath it: no name of
    # anything else exists (without them Landlock lets its names be listed, not read)
    assert r == {"train": "train", "secret": False, "list_val": False, "write_scratch": True,
                 "write_ro": False, "write_tmp": False, "truncate_train": False,
                 "listed": [] if SUP.namespaces else ["f.txt"], "read_listed": False}
    assert open(tree["train"] + "/a.txt").read() == "train"


@linux_only
def test_metadata_of_nothing_outside_the_scratch_can_change(tree):
    """Mode, times and xattrs outlive a process: on a read path, on a device node (the
    host's inode), on the root; only the scratch's own may change. Devices stay usable."""
    ro_file = tree["ro"] + "/m.txt"
    open(ro_file, "w").write("x")
    os.utime(ro_file, (1_000_000, 1_000_000))
    r = confined("""
def tries(path):
    out = {}
    for what, fn in (("chmod", lambda: os.chmod(path, 0o741)), ("utime", lambda: os.utime(path, (7, 7))),
                     ("setxattr", lambda: os.setxattr(path, "user.t", b"1")),
                     ("link", lambda: os.link(path, P["scratch"] + "/hard-%d" % len(out)))):
        out[what] = can(fn)
    return out
for name, path in (("ro", P["ro"] + "/m.txt"), ("dev_null", "/dev/null"), ("root", "/"),
                   ("python", sys.executable), ("scratch", P["scratch"] + "/own")):
    if name == "scratch":
        create(path)
    r[name] = tries(path)
open("/dev/null", "w").write("still a device")
r["urandom"] = len(open("/dev/urandom", "rb").read(8))
read(P["ro"] + "/m.txt")
r["atime"] = os.stat(P["ro"] + "/m.txt").st_atime
""", tree["policy"], tree["scratch"], **{k: v for k, v in tree.items() if k != "policy"})
    none = {"chmod": False, "utime": False, "setxattr": False, "link": False}
    assert {k: r[k] for k in ("ro", "dev_null", "root", "python")} == dict.fromkeys(("ro", "dev_null", "root", "python"),
                                                                                   none)
    assert r["scratch"] == {"chmod": True, "utime": True, "setxattr": True, "link": True}
    assert r["urandom"] == 8
    if SUP.namespaces:  # a read-only mount: reads update no access time (without, seccomp denies the rest)
        assert os.stat(ro_file).st_atime == 1_000_000 and r["atime"] == 1_000_000
    assert oct(os.stat("/dev/null").st_mode & 0o777) == "0o666"


@linux_only
def test_grandchild_inherits_the_sandbox(tree):
    r = confined("""
code = "import sys; open(sys.argv[1]).read()"
r["secret"] = subprocess.run([sys.executable, "-c", code, P["val"] + "/secret.txt"]).returncode
r["train"] = subprocess.run([sys.executable, "-c", code, P["train"] + "/a.txt"]).returncode
""", tree["policy"], tree["scratch"], val=tree["val"], train=tree["train"])
    assert r == {"secret": 1, "train": 0}


@linux_only
def test_network_denied(tree):
    tcp = socket.create_server(("127.0.0.1", 0))
    abstract = socket.socket(socket.AF_UNIX)
    name = f"\0sandbox-test-{os.getpid()}"
    abstract.bind(name)
    abstract.listen()
    try:
        r = confined("""
for fam in ("AF_INET", "AF_INET6", "AF_UNIX"):
    r[fam] = err(lambda: socket.socket(getattr(socket, fam)).close())
r["tcp"] = can(lambda: socket.create_connection(("127.0.0.1", P["port"]), timeout=3))
r["abstract"] = can(lambda: socket.socket(socket.AF_UNIX).connect(P["name"]))
r["socketpair"] = can(lambda: socket.socketpair())
""", tree["policy"], tree["scratch"], port=tcp.getsockname()[1], name=name)
    finally:
        tcp.close()
        abstract.close()
    assert r == {"AF_INET": errno.EPERM, "AF_INET6": errno.EPERM, "AF_UNIX": errno.EPERM,
                 "tcp": False, "abstract": False, "socketpair": True}


@linux_only
def test_gpu_driver_allowances_reach_no_other_process(tree, tmp_path):
    """What CUDA's start-up needs (base_policy("cuda") grants it): a Unix socket of its own
    and its own /proc entries. No connect() reaches anything, no other family is allowed,
    and no other process's /proc entries are writable."""
    listening = socket.socket(socket.AF_UNIX)
    path = str(tmp_path / "host-service.sock")
    listening.bind(path)
    listening.listen()
    policy = tree["policy"].merged(sandbox.Policy(write=("/proc/self",), options=("unix_sockets",)))
    assert {"/proc/self"} <= set(sandbox.base_policy("cuda").write) and sandbox.base_policy("cuda").options
    try:
        r = confined("""
r["unix"] = err(lambda: socket.socket(socket.AF_UNIX).close())
r["inet"] = err(lambda: socket.socket(socket.AF_INET).close())
r["connect"] = err(lambda: socket.socket(socket.AF_UNIX).connect(P["path"]))
r["dgram"] = err(lambda: socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).connect(P["path"]))
def write_comm(pid):
    with open(f"/proc/{pid}/comm", "w") as f:
        f.write("renamed")
r["own_comm"] = err(lambda: write_comm("self"))
r["parent_comm"] = err(lambda: write_comm(os.getppid()))
""", policy, tree["scratch"], path=path)
    finally:
        listening.close()
    # with a PID namespace the parent is not there at all (its pid reads 0)
    assert r == {"unix": 0, "inet": errno.EPERM, "connect": errno.ENOENT, "dgram": errno.ENOENT,
                 "own_comm": 0, "parent_comm": errno.ENOENT if SUP.namespaces else errno.EACCES}


@linux_only
@pytest.mark.skipif(SUP.landlock_abi < 6, reason="Landlock ABI < 6: TCP/scopes not all handled")
def test_landlock_alone_denies_tcp_abstract_sockets_and_signals(tree):
    """The Landlock layer by itself (no seccomp socket ban): TCP connect, abstract unix
    sockets and signals to the outside are all refused."""
    tcp = socket.create_server(("127.0.0.1", 0))
    abstract = socket.socket(socket.AF_UNIX)
    abstract.bind(f"\0sandbox-ll-{os.getpid()}")
    abstract.listen()
    code = f"""
import ctypes, errno, json, os, socket, sys
sys.path.insert(0, {os.path.dirname(LAUNCH)!r})
import landlock
ctypes.CDLL(None).prctl(38, 1, 0, 0, 0)  # no_new_privs
landlock.apply({{"read": ["/"]}})
out = {{}}
for key, fn in (("tcp", lambda: socket.create_connection(("127.0.0.1", {tcp.getsockname()[1]}))),
                ("abstract", lambda: socket.socket(socket.AF_UNIX).connect("\\0sandbox-ll-{os.getpid()}")),
                ("kill", lambda: os.kill({os.getpid()}, 0))):
    try:
        fn(); out[key] = 0
    except OSError as e:
        out[key] = e.errno
print(json.dumps(out))
"""
    try:
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=30)
    finally:
        tcp.close()
        abstract.close()
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {"tcp": errno.EACCES, "abstract": errno.EPERM,
                                      "kill": errno.EPERM}


@linux_only
def test_signals_scoped(tree):
    r = confined("""
r["parent"] = err(lambda: os.kill(P["pid"], 0))
r["parent_environ"] = err(lambda: read("/proc/%d/environ" % P["pid"]))
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
os.kill(child.pid, signal.SIGTERM)
r["own_child"] = child.wait(timeout=10)
""", tree["policy"], tree["scratch"], pid=os.getpid())
    if SUP.namespaces:  # a process outside the PID namespace does not exist in it
        assert r["parent"] == errno.ESRCH and r["parent_environ"] == errno.ENOENT
    else:
        if SUP.landlock_abi >= 6:
            assert r["parent"] == errno.EPERM
        assert r["parent_environ"] == errno.EACCES  # Landlock: no ptrace-mode access outside
    assert r["own_child"] == -signal.SIGTERM


@linux_only
def test_process_group_pinned_and_killpg_kills_all(tree):
    body = """
before = os.getpgrp()
os.setsid()
os.setpgid(0, 0)
gc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                      start_new_session=True)
print(json.dumps({"before": before, "after": os.getpgrp(), "gc": gc.pid,
                  "gc_pgid": os.getpgid(gc.pid)}), flush=True)
time.sleep(60)
"""
    proc = subprocess.Popen(sandbox.wrap([sys.executable, "-c", PRELUDE + body, "{}"],
                                         tree["policy"]),
                            stdout=subprocess.PIPE, text=True, cwd=tree["scratch"],
                            start_new_session=True)
    try:
        info = json.loads(proc.stdout.readline())
        # inside a PID namespace the group (made outside it) reads as 0; either way it is
        # the same before and after setsid/setpgid, and the grandchild's too
        assert info["before"] == info["after"] == info["gc_pgid"] == (0 if SUP.namespaces else proc.pid)
        inside = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        assert len(inside) == (2 if SUP.namespaces else 1)  # (the script as PID 1,) its grandchild
        assert {os.getpgid(p) for p in inside} == {proc.pid}  # seen from the harness: one group
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    deadline = time.time() + 10
    while time.time() < deadline and any(map(_alive, inside)):
        time.sleep(0.05)
    assert not any(map(_alive, inside))


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@linux_only
def test_privileges_and_ipc(tree):
    r = confined("""
status = dict(l.split(":\\t", 1) for l in read("/proc/self/status").splitlines() if ":\\t" in l)
r["CapEff"], r["CapPrm"], r["CapBnd"] = status["CapEff"], status["CapPrm"], status["CapBnd"]
r["NoNewPrivs"], r["Seccomp"] = status["NoNewPrivs"], status["Seccomp"]
def call(fn, *args):
    ret = fn(*args)
    return ctypes.get_errno() if ret == -1 else 0
r["shmget"] = call(libc.shmget, 0, 4096, 0o1000 | 0o600)
r["ptrace"] = call(libc.ptrace, 16, os.getppid(), None, None)  # PTRACE_ATTACH
iov = (ctypes.c_void_p * 2)(ctypes.addressof(ctypes.create_string_buffer(8)), 8)
r["process_vm_readv"] = call(libc.process_vm_readv, os.getppid(), iov, 1, iov, 1, 0)
ts = (ctypes.c_long * 2)(0, 0)
r["clock_settime"] = call(libc.clock_settime, 0, ts)
r["unshare_user"] = call(libc.unshare, 0x10000000)
pid = libc.syscall(P["clone"], 0x10000000 | 17, 0, 0, 0, 0)  # CLONE_NEWUSER | SIGCHLD
if pid == 0:
    os._exit(0)
r["clone_newuser"] = ctypes.get_errno() if pid == -1 else 0
r["clone3"] = call(libc.syscall, 435, None, 0)
""", tree["policy"], tree["scratch"], clone=seccomp.SYSCALLS[seccomp.native_arch()]["clone"])
    assert r == {"CapEff": "0000000000000000", "CapPrm": "0000000000000000",
                 "CapBnd": "0000000000000000" if os.geteuid() == 0 else r["CapBnd"],
                 "NoNewPrivs": "1", "Seccomp": "2", "shmget": errno.EPERM,
                 "ptrace": errno.EPERM, "process_vm_readv": errno.EPERM,
                 "clock_settime": errno.EPERM, "unshare_user": errno.EPERM,
                 "clone_newuser": errno.EPERM, "clone3": errno.ENOSYS}


@linux_only
def test_nested_launch_without_capabilities(tree):
    """The launcher inside a sandbox (no capabilities left: the unprivileged path) works."""
    policy = tree["policy"].merged(sandbox.Policy(read=(os.path.dirname(LAUNCH),)))
    flat = dataclasses.replace(SUP, namespaces=False)  # namespaces need what the outer one took
    inner = sandbox.wrap([sys.executable, "-c", "print(open('/proc/self/status').read())"], policy, flat)
    res = subprocess.run(sandbox.wrap(inner, policy), capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert "Seccomp_filters:\t2" in res.stdout and "CapEff:\t0000000000000000" in res.stdout
    if SUP.namespaces:  # asked for inside a sandbox, they fail closed: the command never runs
        nested = sandbox.wrap([sys.executable, "-c", "print('ran')"], policy)
        res = subprocess.run(sandbox.wrap(nested, policy), capture_output=True, text=True, timeout=30)
        assert res.returncode == 126 and "ran" not in res.stdout and "sandbox: namespaces" in res.stderr


@linux_only
def test_missing_policy_paths_are_skipped(tree):
    policy = tree["policy"].merged(sandbox.Policy(read=("/no/such/dir",), write=("/nope",)))
    assert confined("r['ok'] = 1", policy, tree["scratch"]) == {"ok": 1}


@linux_only
@pytest.mark.parametrize("case", ["bad-json", "bad-shape", "no-separator", "restrict_self",
                                  "no-landlock", "no-command"])
def test_launcher_refuses(tmp_path, case):
    marker = tmp_path / "ran"
    touch = [sys.executable, "-c", f"open({str(marker)!r}, 'w')"]
    pol = json.dumps({"read": ["/"], "write": [str(tmp_path)]})
    args, pre, why = {
        "bad-json": (["{nope", "--", *touch], "", "Expecting"),
        "bad-shape": (['{"read": "/"}', "--", *touch], "", "string lists"),
        "no-separator": ([pol, *touch], "", "usage"),
        "restrict_self": ([pol, "--", *touch], block_syscall(446, errno.EPERM), "landlock_restrict_self"),
        "no-landlock": ([pol, "--", *touch], block_syscall(444, errno.ENOSYS), "Landlock"),
        "no-command": ([pol, "--", str(tmp_path / "missing")], "", "cannot run"),
    }[case]
    res = launch(*args, pre=pre)
    assert res.returncode == 126, res.stderr
    assert res.stderr.startswith("sandbox: ") and why in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not marker.exists()


@linux_only
def test_landlock_error_paths(tmp_path):
    """Failures raise instead of leaving a half-built ruleset (none of these confine us)."""
    abi = landlock.abi_version()
    with pytest.raises(landlock.LandlockError):
        landlock.restrict_self(-1)
    with pytest.raises(landlock.LandlockError):
        landlock.create_ruleset(0)
    with pytest.raises(landlock.LandlockError):
        landlock.apply({"read": ["/"]}, abi=0)
    with pytest.raises(landlock.LandlockError, match="add rule"):
        landlock.add_path(-1, str(tmp_path), landlock.READ, abi)
    assert landlock.add_path(-1, str(tmp_path / "missing"), landlock.READ, abi) is False
    fd = landlock.create_ruleset(abi)
    try:  # a file takes file rights only (READ_DIR would be EINVAL), masked for us
        (tmp_path / "f").write_text("x")
        assert landlock.add_path(fd, str(tmp_path / "f"), landlock.READ, abi)
    finally:
        os.close(fd)


@linux_only
def test_rulesets_for_every_older_abi(tmp_path):
    """A newer kernel accepts the shorter attr struct and smaller masks of each older ABI."""
    for abi in range(1, landlock.abi_version() + 1):
        fd = landlock.create_ruleset(abi)
        try:
            assert landlock.add_path(fd, str(tmp_path), (1 << 16) - 1, abi)
        finally:
            os.close(fd)


def test_handled_rights_follow_the_abi():
    assert landlock.handled_fs(1) == (1 << 13) - 1
    assert landlock.handled_fs(2) & landlock.REFER and not landlock.handled_fs(2) & landlock.TRUNCATE
    assert landlock.handled_fs(3) & landlock.TRUNCATE and not landlock.handled_fs(4) & landlock.IOCTL_DEV
    assert landlock.handled_fs(5) == (1 << 16) - 1 == landlock.handled_fs(7)


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_seccomp_program(arch):
    prog = seccomp.build(arch)
    nr, audit = seccomp.SYSCALLS[arch], seccomp.AUDIT_ARCH[arch]
    assert prog[0] == (seccomp.LD_W_ABS, 0, 0, seccomp.OFF_ARCH)
    assert prog[1][0] == seccomp.JEQ and prog[1][3] == audit
    denied = [n for n in seccomp.DENY if n in nr]
    assert len(prog) == 3 + (arch == "x86_64") + len(denied) + 2 + 4 + 5
    assert len(seccomp.pack(prog)) == 8 * len(prog)
    eperm, ok = seccomp.RET_ERRNO | errno.EPERM, seccomp.RET_ALLOW
    assert run_bpf(prog, audit ^ 1, nr["socketpair"]) == eperm          # foreign ABI
    for name in denied:
        assert run_bpf(prog, audit, nr[name]) == eperm, name
    assert run_bpf(prog, audit, nr["socketpair"]) == ok
    assert run_bpf(prog, audit, 0) == ok
    assert run_bpf(prog, audit, nr["setsid"]) == run_bpf(prog, audit, nr["setpgid"]) \
        == seccomp.RET_ERRNO
    assert run_bpf(prog, audit, nr["clone3"]) == seccomp.RET_ERRNO | errno.ENOSYS
    assert run_bpf(prog, audit, nr["clone"], 0x003D0F00) == ok           # pthread_create
    assert run_bpf(prog, audit, nr["clone"], 0x01200011) == ok           # fork
    assert run_bpf(prog, audit, nr["clone"], 0x10000011) == eperm        # CLONE_NEWUSER
    assert run_bpf(prog, audit, nr["connect"]) == ok                     # harmless without a socket
    if arch == "x86_64":
        assert run_bpf(prog, audit, 0x40000000 | 41) == eperm           # x32 socket
        assert run_bpf(prog, audit, nr["iopl"]) == eperm
    gpu = seccomp.build(arch, unix_sockets=True)  # what GPU drivers need
    assert run_bpf(gpu, audit, nr["socket"], 1) == ok                     # AF_UNIX
    for family in (2, 10, 16, 17):                                          # INET, INET6, NETLINK, PACKET
        assert run_bpf(gpu, audit, nr["socket"], family) == eperm, family
    assert run_bpf(gpu, audit, nr["connect"]) == seccomp.RET_ERRNO | errno.ENOENT
    assert all(run_bpf(gpu, audit, nr[name]) == eperm for name in denied if name != "socket")


def test_seccomp_unknown_arch(monkeypatch):
    assert seccomp.build("riscv64") is None
    monkeypatch.setattr(seccomp.platform, "machine", lambda: "riscv64")
    assert seccomp.native_arch() is None and seccomp.available() is False
    monkeypatch.setattr(seccomp.platform, "machine", lambda: "arm64")
    assert seccomp.native_arch() == "aarch64"


@linux_only
def test_selftest(tree):
    assert sandbox.selftest(tree["policy"], deny_read=[tree["val"]],
                            deny_write=[tree["ro"], tree["train"], "/tmp"],
                            device_code="import math") == []
    problems = sandbox.selftest(tree["policy"], deny_read=[tree["train"], tree["val"]],
                                device_code="import no_such_module")
    assert any("could read" in p and "a.txt" in p for p in problems), problems
    assert any("device code failed" in p for p in problems), problems
    assert not any("secret" in p for p in problems), problems
    assert sandbox.selftest(tree["policy"], device_code="import time; time.sleep(30)",
                            timeout=1) == ["sandbox selftest timed out after 1 s"]
    # a GPU backend's policy (own /proc entries, Unix sockets without connect) passes too,
    # and the device code can do what the CUDA driver does at start-up
    gpu = tree["policy"].merged(sandbox.Policy(write=("/proc/self",), options=("unix_sockets",)))
    assert sandbox.selftest(gpu, deny_write=[tree["ro"]], device_code=(
        "import socket; socket.socket(socket.AF_UNIX).close()\n"
        "open('/proc/self/comm', 'w').write('driver')")) == []


def test_policy_and_support_labels():
    a = sandbox.Policy(read=["/x", "/y"], write=("/w",))
    m = a.merged(sandbox.Policy(read=("/y", "/z"), devices=("/dev/null",)))
    assert m.read == ("/x", "/y", "/z") and m.write == ("/w",) and m.devices == ("/dev/null",)
    full = sandbox.Support("landlock", 7, True, ())
    assert full.label == "landlock-v7+seccomp"
    old = sandbox.Support("landlock", 3, True, tuple(_abi_notes(3, True)))
    assert old.label.startswith("landlock-v3+seccomp (partial: ")
    assert "signals not scoped (Landlock ABI < 6)" in old.notes
    assert "signals and abstract unix sockets not scoped (Landlock ABI < 6)" in _abi_notes(5, False)
    assert _abi_notes(7, True) == [] and len(_abi_notes(7, False)) == 1
    assert sandbox.Support("none", 0, False, ("x",)).label == "none"
    with pytest.raises(sandbox.SandboxUnavailable):
        sandbox.wrap(["true"], a, sandbox.Support("none", 0, False, ("no landlock",)))


def test_base_policy_and_scratch_env(tmp_path):
    with pytest.raises(ValueError):
        sandbox.base_policy("tpu")
    for backend in sandbox.BACKENDS:
        p = sandbox.base_policy(backend)
        granted = p.read + p.write + p.devices + p.list_dirs
        assert not {"/tmp", "/dev/shm", "/opt", os.path.expanduser("~")} & set(granted)
        assert sys.base_prefix in p.read and "/dev/null" in p.devices
    env = sandbox.scratch_env(tmp_path)
    assert {"HOME", "TMPDIR", "XDG_CACHE_HOME", "TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR",
            "CUDA_CACHE_PATH", "MPLCONFIGDIR"} <= set(env)
    assert "PYTHONPYCACHEPREFIX" not in env  # it would make Python ignore the installed bytecode
    for v in env.values():
        assert v.startswith(str(tmp_path.resolve())) and os.path.isdir(v)


def test_macos_profile():
    pol = sandbox.Policy(write=("/Users/a b/scratch", '/w/"q"\\x'), devices=("/dev/null",),
                         deny_read=("/data/val",))
    text = macos.profile(pol)
    assert text.startswith("(version 1)\n(allow default)\n(deny file-write*)\n")
    assert '(subpath "/Users/a b/scratch")' in text
    assert r'(subpath "/w/\"q\"\\x")' in text
    assert '(literal "/dev/null")' in text and text.count('"/dev/null"') == 1
    assert '(deny file-read*\n    (subpath "/data/val"))' in text
    assert "(deny network*)" in text and "(deny ipc-sysv-shm)" in text
    assert text.index("(deny signal)") < text.index("(allow signal (target same-sandbox))")
    assert text.count("(") == text.count(")")
    assert "deny file-read*" not in macos.profile(sandbox.Policy(write=("/w",)))
    with pytest.raises(ValueError):
        macos.quote("/a\nb")
    argv = sandbox.wrap(["python3", "t.py"], pol, sandbox.Support("sandbox-exec", 0, False, ()))
    assert argv[:2] == ["sandbox-exec", "-p"] and argv[2] == text and argv[3:] == ["python3", "t.py"]
