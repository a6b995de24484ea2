"""What the harness measures of a running training process, from outside it.

    tel = Telemetry(pid, backend).start()
    ...                                    # train.py runs; a harness thread samples every 0.5 s
    tel.stop()
    tel.peak_memory_mb()                   # -> the summary's peak_memory_mb (None where unseen)
    tel.summary((t0, t1), timed_tokens)    # -> the summary's `telemetry` dict (None on failure)

Nothing runs in the training process, and nothing train.py prints or writes is read: every
figure comes from the OS (psutil) or the GPU driver (harness/telemetry_gpu.py).
- Every device: CPU use and resident memory of the run's processes ("the tree":
  harness/proc.py's `members`, every process in the group the harness made for train.py,
  which in the sandbox none can leave, with every descendant and the orphans re-parented
  to the harness: a worker that double-forks away from train.py is still the run's), and
  the CPU the rest of the machine used meanwhile (busy time minus the tree's and the
  harness's own).
- NVIDIA (NVML) and AMD (amdsmi): the energy counter, power, SM/GFX clock, temperature,
  throttle reasons, the tree's GPU memory and the other processes on its GPU.
- MPS: the tree's resident memory, which on unified memory includes what its tensors hold.
  torch.mps's counters would have to be read inside a process: in the harness they
  measure the harness's own (empty) MPS heap, and train.py's own reports are its claims.
Rates and GPU figures are taken over the timed training (the feed's clock) where it ran,
else over the whole run; memory peaks over the whole run. `peak_memory_mb` keeps its own
rule: the tree's RSS on CPU and MPS, its NVML memory on CUDA, None elsewhere. A failure
here never fails an experiment: it is said once (`warn`) and the figures stay None.
"""
from __future__ import annotations

import os
import sys
import threading
import time

from harness import proc, telemetry_gpu, telemetry_summary
from harness.telemetry_summary import Sample

INTERVAL_S = 0.5  # seconds between samples (the cost: benchmarks/telemetry_overhead.py)
MB = 2**20


class Telemetry:
    def __init__(self, pid: int, backend: str, interval: float = INTERVAL_S, device_hint: int | None = None,
                 warn=None):
        self.pid, self.backend, self.interval, self.device_hint = pid, backend, interval, device_hint
        self.samples: list[Sample] = []
        self.sampler_cpu_s = 0.0  # CPU time spent sampling (the overhead)
        self._warn_fn = warn or (lambda m: print(m, file=sys.stderr, flush=True))
        self._warned = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reader = None
        self._cpu: dict[tuple, float] = {}  # (pid, create time) -> CPU seconds last read
        self._own: set[int] = set()  # GPU indices the tree was seen on

    # ------------------------------------------------------------------ sampling
    def start(self) -> "Telemetry":
        try:
            self._reader = telemetry_gpu.gpu_reader(self.backend)
            self._sample()  # the counters' starting point, before train.py gets far
            self._thread = threading.Thread(target=self._run, name="telemetry", daemon=True)
            self._thread.start()
        except Exception as e:  # noqa: BLE001 - telemetry never fails an experiment
            self._warn(e)
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def stop(self) -> None:
        """End sampling, with one last sample (the energy counter at the end of the run)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            if not self._thread.is_alive():
                self._sample()
        try:
            if self._reader is not None:
                self._reader.close()
        except Exception as e:  # noqa: BLE001 - telemetry never fails an experiment
            self._warn(e)

    def _sample(self) -> None:
        t0 = time.thread_time()
        try:
            self.samples.append(self._read())
        except Exception as e:  # noqa: BLE001 - a bad sample is skipped; the first is said
            self._warn(e)
        self.sampler_cpu_s += time.thread_time() - t0

    def _read(self) -> Sample:
        import psutil

        now = time.monotonic()
        rss, pids = None, set()
        for p in _tree(self.pid):
            try:
                with p.oneshot():
                    key, ct, mem = (p.pid, p.create_time()), p.cpu_times(), p.memory_info().rss
            except psutil.Error:  # exited between the listing and the reading
                continue
            self._cpu[key] = ct.user + ct.system
            rss, pids = (rss or 0) + mem, pids | {p.pid}
        own = psutil.Process().cpu_times()
        s = Sample(now, sum(self._cpu.values()), rss, frozenset(pids), _busy_seconds(), own.user + own.system)
        if self._reader is not None:
            try:
                self._read_gpus(s)
            except Exception as e:  # noqa: BLE001 - a reader that breaks is dropped: CPU figures go on
                self._reader = None
                self._warn(e)
        return s

    def _read_gpus(self, s: Sample) -> None:
        import psutil

        # every device until the tree shows up on one, then only its own
        for i in sorted(self._own) or range(len(self._reader.handles)):
            r = self._reader.read(i)
            s.gpu[i] = r
            if r.procs and s.tree_pids & r.procs.keys():
                self._own.add(i)
        listed = {pid for r in s.gpu.values() for pid in (r.procs or ())}
        s.hidden = frozenset(pid for pid in listed - s.tree_pids if not psutil.pid_exists(pid))

    def _warn(self, e: BaseException) -> None:
        if not self._warned:
            self._warned = True
            self._warn_fn(f"experiment: WARNING: telemetry: {type(e).__name__}: {e} (the run goes on; "
                          f"figures it could not read stay null)")

    # ------------------------------------------------------------------ results
    def peak_memory_mb(self) -> float | None:
        """The summary's peak_memory_mb, by its rule of old: RSS of the tree (CPU, MPS), the
        tree's NVML memory summed over the GPUs (CUDA; None without NVML), None elsewhere."""
        if self.backend in ("cpu", "mps"):
            peaks = [s.tree_rss for s in self.samples if s.tree_rss is not None]
        elif self.backend == "cuda" and isinstance(self._reader, telemetry_gpu.Nvml):
            peaks = [sum(m for r in s.gpu.values() for pid, m in (r.procs or {}).items() if pid in s.tree_pids)
                     for s in self.samples if s.tree_pids]
        else:
            return None
        return max(peaks) / MB if peaks else None

    def summary(self, window: tuple[float, float] | None, timed_tokens: int) -> dict | None:
        """The `telemetry` dict (harness/telemetry_summary.py); None where it failed."""
        try:
            sources = ["psutil"] + ([self._reader.source] if self._reader is not None else [])
            sources += ["mps"] if self.backend == "mps" else []
            return telemetry_summary.summarize(
                self.samples, window=window, timed_tokens=timed_tokens, interval=self.interval, sources=sources,
                gpus=self._gpus(), harness_pid=os.getpid(), unified_memory=self.backend == "mps",
                sampler_cpu_s=self.sampler_cpu_s)
        except Exception as e:  # noqa: BLE001 - telemetry never fails an experiment
            self._warn(e)
            return None

    def _gpus(self) -> list[int]:
        """The GPUs train.py ran on: those its processes were seen on; else the only one, the
        hinted one, or the only one holding processes hidden from this PID namespace."""
        if self._reader is None:
            return []
        if self._own:
            return sorted(self._own)
        n = len(self._reader.handles)
        if n == 1:
            return [0]
        if self.device_hint is not None and 0 <= self.device_hint < n:
            return [self.device_hint]
        holding = {i for s in self.samples for i, r in s.gpu.items() if s.hidden & (r.procs or {}).keys()}
        return sorted(holding) if len(holding) == 1 else []


def _busy_seconds() -> float:
    """CPU seconds the machine has spent busy, every core summed (steal time included: a
    noisy neighbour on a VM counts; guest time is already inside user time on Linux)."""
    import psutil

    t = psutil.cpu_times()
    idle = t.idle + sum(getattr(t, k, 0.0) for k in ("iowait", "guest", "guest_nice"))
    return sum(t) - idle


def _tree(pid: int) -> list:
    """The run's processes: `pid` leads the process group the harness made for it."""
    import psutil

    out = []
    for member in proc.members(pid, root=pid):
        try:
            out.append(psutil.Process(member))
        except psutil.Error:  # exited since the listing
            continue
    return out
