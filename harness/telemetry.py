"""What the harness measures of a running training process, from outside it.

    mem = PeakMemory(pid, backend).start()
    ...
    mem.stop()   # -> peak MB, or None where the device's memory cannot be seen

CPU and MPS (unified memory): the peak of the summed resident memory of the process and
every process it started. CUDA: the peak GPU memory NVML reports for those processes
(None without NVML). ROCm: None for now (amdsmi is not queried yet). Sampled 5 times a
second in a thread of the harness; nothing runs in the training process.
"""
from __future__ import annotations

import threading


class PeakMemory:
    def __init__(self, pid: int, backend: str, interval: float = 0.2):
        self.pid, self.backend, self.interval = pid, backend, interval
        self.peak_bytes: int | None = None
        self._stop = threading.Event()
        self._nvml = None

    def start(self) -> "PeakMemory":
        if self.backend == "cuda":
            self._nvml = _nvml_handles()
        threading.Thread(target=self._run, daemon=True).start()
        return self

    def _tree(self) -> list:
        import psutil

        try:
            root = psutil.Process(self.pid)
            return [root] + root.children(recursive=True)
        except psutil.Error:
            return []

    def _sample(self) -> int | None:
        procs = self._tree()
        if not procs:
            return None
        if self.backend in ("cpu", "mps"):
            total = 0
            for p in procs:
                try:
                    total += p.memory_info().rss
                except Exception:  # noqa: BLE001 - a process that just exited
                    continue
            return total
        if self.backend == "cuda" and self._nvml:
            import pynvml

            pids, total = {p.pid for p in procs}, 0
            for h in self._nvml:
                try:
                    for info in pynvml.nvmlDeviceGetComputeRunningProcesses(h):
                        if info.pid in pids and info.usedGpuMemory:
                            total += info.usedGpuMemory
                except pynvml.NVMLError:
                    continue
            return total
        return None

    def _run(self) -> None:
        while not self._stop.is_set():
            value = self._sample()
            if value is not None:
                self.peak_bytes = max(self.peak_bytes or 0, value)
            self._stop.wait(self.interval)

    def stop(self) -> float | None:
        self._stop.set()
        return None if self.peak_bytes is None else self.peak_bytes / 2**20


def _nvml_handles() -> list:
    try:
        import pynvml

        pynvml.nvmlInit()
        return [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    except Exception:  # noqa: BLE001 - no NVML here: GPU memory is then unknown
        return []
