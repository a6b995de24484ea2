"""A planted train.py against the telemetry (tests/test_attacks_telemetry.py): a worker,
started by a double fork so that it is no descendant of train.py, does the heavy work
while train.py waits, so that train.py's own process tree looks small and idle and the
work reads as another process's load.
"""
WORKER_MB = 1024  # memory the worker allocates and touches, MB
WORKER_CPU_S = 3.0  # CPU seconds it spins (CPU time, not wall time: the same on a busy machine)

# The middle process forks the worker and exits at once, so the worker is re-parented (to
# the harness, the subreaper of a training run, or to init); it calls setsid, a no-op in
# the sandbox and a way out of the process group without one. Once it has spun it says so
# and holds its memory until the handover kills it. argv: the fd to report on, a marker.
WORKER = f'''
import os, sys, time
if os.fork() == 0:
    os.setsid()
    buf = bytearray({WORKER_MB} << 20)
    buf[::4096] = b"x" * len(range(0, len(buf), 4096))  # one byte a page: every page resident
    t = time.process_time()
    while time.process_time() - t < {WORKER_CPU_S}:
        pass
    os.write(int(sys.argv[1]), b"done\\n")
    time.sleep(600)
'''


def double_fork(marker: str) -> str:
    """train.py's lines (its `before_eval`, once the clock runs): start the worker, wait
    for it to finish spinning, then hand over as usual. `marker` is in the worker's argv,
    so the test can look for it after the run whatever PID namespace it ran in."""
    return f'''
import subprocess
r, w = os.pipe()
subprocess.run([sys.executable, "-c", {WORKER!r}, str(w), {marker!r}], pass_fds=(w,), check=True)
os.close(w)
print(f"WORKER {{os.read(r, 64).decode().strip()}}", flush=True)
'''
