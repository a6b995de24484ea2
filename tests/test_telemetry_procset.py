"""The run's process set (harness/proc.py `members`): what the telemetry measures and
`kill_tree` kills. A worker that double-forks away from train.py is still the run's, in
the group the harness made (the sandbox makes setsid a no-op) or, having left it without
a sandbox, as an orphan re-parented to the harness; a process outside both is foreign."""
import os
import subprocess
import sys
import time

import pytest

from harness import proc
from harness.telemetry import Telemetry

MB = 2**20
# train.py's stand-in: forks a middle process that forks the worker and exits at once, so
# the worker is re-parented (to init, or to a subreaper) and is no descendant of the root;
# the root prints the worker's pid, then sleeps.
ROOT = '''
import ctypes, os, sys, time
ctypes.CDLL(None).prctl(15, {name!r}, 0, 0, 0)  # PR_SET_NAME: the comm /proc/PID/stat shows
r, w = os.pipe()
if os.fork() == 0:
    if os.fork() == 0:
        if {leave}:
            os.setsid()  # without a sandbox this leaves the group
        buf = bytearray({mb} << 20)
        buf[::4096] = b"x" * len(range(0, len(buf), 4096))  # touch every page: resident
        os.write(w, f"{{os.getpid()}}\\n".encode())
        t = time.process_time()
        while time.process_time() - t < {spin}:  # CPU seconds, whatever else the machine runs
            pass
        os._exit(0)
    os._exit(0)
os.wait()
print(os.read(r, 64).decode().strip(), flush=True)
time.sleep(60)
'''
SPIN = "import time\nt = time.time()\nwhile time.time() - t < 30: pass"


def start(leave=False, mb=200, spin=30.0, name=b"train.py") -> tuple[subprocess.Popen, int]:
    """The root, leader of a group of its own as Child.start makes it, and its worker's pid."""
    root = subprocess.Popen([sys.executable, "-c", ROOT.format(leave=leave, mb=mb, spin=spin, name=name)],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    return root, int(root.stdout.readline())


def gone(pid: int) -> bool:
    """Dead and reaped: no zombie left (Linux)."""
    return pid not in proc.process_table(zombies=True)


def test_a_double_forked_worker_in_the_group_is_the_runs_and_a_process_outside_is_foreign():
    foreign = subprocess.Popen([sys.executable, "-c", SPIN])  # the test's own group: not the run's
    root, worker = start()
    try:
        import psutil

        assert worker not in {c.pid for c in psutil.Process(root.pid).children(recursive=True)}  # outside the tree
        assert os.getpgid(worker) == root.pid and worker in proc.members(root.pid, root.pid)
        warnings: list[str] = []
        tel = Telemetry(root.pid, "cpu", interval=0.1, warn=warnings.append).start()
        t0 = time.monotonic()
        time.sleep(1.6)
        tel.stop()
        t = tel.summary((t0 + 0.2, t0 + 1.4), timed_tokens=0)
    finally:
        proc.kill_tree(root.pid, root)
        foreign.kill()
        foreign.wait()
    seen = frozenset().union(*(s.tree_pids for s in tel.samples))
    assert not warnings and worker in seen and foreign.pid not in seen and os.getpid() not in seen
    # the root sleeps: the tree's CPU is the worker's spinning; the foreign spinner's is foreign
    # (either gets at least a quarter of a core on two shared cores)
    assert t["cpu_percent_mean"] > 25 and t["foreign_cpu_percent_mean"] > 25
    assert t["ram_mb_peak"] > 200 and tel.peak_memory_mb() == pytest.approx(t["ram_mb_peak"], abs=0.01)
    assert worker not in proc.process_table()  # killed with the run (reaped by whoever its parent is now)


def test_the_workers_gpu_memory_is_the_runs_not_a_foreign_process(monkeypatch):
    from tests.test_telemetry import fake_nvml

    root, worker = start(spin=0.0)
    try:
        monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(worker, others=()))  # only the worker holds 1 GiB
        warnings: list[str] = []
        tel = Telemetry(root.pid, "cuda", interval=0.1, warn=warnings.append).start()
        t0 = time.monotonic()
        time.sleep(0.8)
        tel.stop()
        t = tel.summary((t0, t0 + 0.8), timed_tokens=0)
    finally:
        proc.kill_tree(root.pid, root)
    assert not warnings and tel.peak_memory_mb() == 1024.0 and t["gpu"]["memory_mb_peak"] == 1024.0
    assert t["gpu"]["foreign_processes"] == 0 and not any("GPU" in f for f in t["flags"])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a subreaper is Linux's")
def test_a_worker_that_left_the_group_comes_back_to_the_subreaper_and_dies_with_the_run():
    with proc.subreaper():
        root, worker = start(leave=True)
        try:
            assert os.getpgid(worker) == worker  # its own group: no sandbox here to stop it
            time.sleep(0.1)
            assert worker in proc.members(root.pid, root.pid)
        finally:
            proc.kill_tree(root.pid, root)
    assert gone(worker)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a subreaper is Linux's")
def test_a_stray_that_exited_before_the_kill_is_reaped():
    with proc.subreaper():
        root, worker = start(leave=True, mb=1, spin=0.0)
        deadline = time.monotonic() + 10
        while proc.process_table(zombies=True).get(worker) and worker in proc.members(root.pid, root.pid):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert worker in proc.process_table(zombies=True)  # a zombie, the harness's to wait for
        proc.kill_tree(root.pid, root)
    assert gone(worker)


def test_both_process_tables_read_a_comm_with_spaces_and_parentheses():
    root, worker = start(spin=0.0, name=b"a) b (c")
    try:
        fast = proc.process_table()
        assert fast[root.pid] == (os.getpid(), root.pid) and fast[worker][1] == root.pid
        assert proc._psutil_table(False)[root.pid] == fast[root.pid]  # the path other platforms take
    finally:
        proc.kill_tree(root.pid, root)
