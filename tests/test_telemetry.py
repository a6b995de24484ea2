"""The harness's telemetry: NVML and amdsmi against stand-in modules (counters that advance,
throttle masks, a foreign process), the psutil path for real with busy processes, the
arithmetic of the summary on made-up samples, and one real experiment whose summary and
ledger row carry it, with a train.py that prints telemetry of its own (ignored)."""
import json
import subprocess
import sys
import time
import types

import pytest

from harness import telemetry_gpu
from harness.telemetry import Telemetry
from harness.telemetry_gpu import GpuReading
from harness.telemetry_summary import FOREIGN_CPU_PERCENT, Sample, summarize

GIB = 2**30
SPIN = "import time\nt = time.time()\nwhile time.time() - t < {s}: pass"


def child(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code])


def sampled(proc: subprocess.Popen, backend: str, seconds: float, interval: float = 0.1, **kw):
    """Telemetry of `proc` for `seconds`; (telemetry, its summary over the middle of the run)."""
    warnings: list[str] = []
    tel = Telemetry(proc.pid, backend, interval=interval, warn=warnings.append, **kw).start()
    t0 = time.monotonic()
    time.sleep(seconds)
    tel.stop()
    proc.kill()
    proc.wait()
    window = (t0 + 0.2, t0 + seconds - 0.2)
    return tel, tel.summary(window, timed_tokens=30_000), window, warnings


# --------------------------------------------------------------------------- NVML

class _Proc:
    def __init__(self, pid, mem):
        self.pid, self.usedGpuMemory = pid, mem


def fake_nvml(tree_pid: int, *, new_names=True, energy=True, watts=(200.0, 400.0), mask=0x44, others=(1,)):
    """A pynvml stand-in: one GPU drawing `watts` in turn, an energy counter at 300 W, SM
    clocks 1800/1500 MHz in turn, a rising temperature, `mask` as the event reasons, the
    tree's pid holding 1 GiB and `others` 512 MiB each."""
    lib = types.ModuleType("pynvml")
    calls = {"power": 0, "clock": 0, "temp": 0}
    t_base = time.monotonic()
    lib.NVML_CLOCK_SM, lib.NVML_TEMPERATURE_GPU = 1, 0
    lib.nvmlInit = lambda: None
    lib.nvmlShutdown = lambda: None
    lib.nvmlDeviceGetCount = lambda: 1
    lib.nvmlDeviceGetHandleByIndex = lambda i: f"gpu{i}"

    def power(h):
        calls["power"] += 1
        return int(watts[calls["power"] % len(watts)] * 1000)  # milliwatts

    def clock(h, kind):
        assert kind == 1
        calls["clock"] += 1
        return (1800, 1500)[calls["clock"] % 2]

    def temperature(h, sensor):
        calls["temp"] += 1
        return 60 + calls["temp"]

    lib.nvmlDeviceGetPowerUsage = power
    lib.nvmlDeviceGetClockInfo = clock
    lib.nvmlDeviceGetTemperature = temperature
    lib.nvmlDeviceGetComputeRunningProcesses = lambda h: [_Proc(tree_pid, GIB)] + [_Proc(p, GIB // 2) for p in others]
    if energy:  # millijoules since the driver loaded: 300 W
        lib.nvmlDeviceGetTotalEnergyConsumption = lambda h: int(300_000 * (time.monotonic() - t_base)) + 10**9
    reasons = "nvmlDeviceGetCurrentClocksEventReasons" if new_names else "nvmlDeviceGetCurrentClocksThrottleReasons"
    setattr(lib, reasons, mask if callable(mask) else (lambda h: mask))
    lib.calls = calls
    return lib


def test_nvml_energy_power_clocks_throttle_and_a_foreign_process(monkeypatch):
    proc = child("import time; time.sleep(30)")
    lib = fake_nvml(proc.pid)
    monkeypatch.setitem(sys.modules, "pynvml", lib)
    tel, t, (w0, w1), warnings = sampled(proc, "cuda", 1.6)
    assert not warnings and t["sources"] == ["psutil", "nvml"] and t["window"] == "timed training"
    g = t["gpu"]
    assert g["energy_method"] == "counter" and g["energy_j"] == pytest.approx(300 * (w1 - w0), rel=0.01)
    assert t["energy_j"] == g["energy_j"] and t["tokens_per_joule"] == pytest.approx(30_000 / g["energy_j"], rel=1e-3)
    assert g["power_w_peak"] == 400.0 and 250 <= g["power_w_mean"] <= 350
    assert g["sm_clock_mhz_min"] == 1500.0 and 1500 < g["sm_clock_mhz_mean"] < 1800
    assert 60 < g["temperature_c_peak"] <= 60 + lib.calls["temp"]
    assert g["memory_mb_peak"] == 1024.0 and tel.peak_memory_mb() == 1024.0  # the tree's, not the other's
    assert g["foreign_processes"] == 1 and g["devices"] == [0]
    assert set(g["throttle_reasons"]) == {"sw_power_cap", "hw_thermal_slowdown"}
    assert "throttled: hw_thermal_slowdown in 100% of samples" in t["flags"]
    assert not any("sw_power_cap" in f for f in t["flags"])  # a GPU at its power cap is working as designed
    assert "contended: 1 other process on the GPU" in t["flags"]


def test_nvml_old_names_no_energy_counter_missing_and_failing_calls(monkeypatch):
    """The old "throttle reasons" spelling; a GPU without an energy counter (its power
    integrated instead); a function the library lacks and one that fails: figures stay
    null, nothing is said, and nothing else is lost."""
    proc = child("import time; time.sleep(30)")
    seen = {"n": 0}

    def once(h):  # hw_slowdown in the first sample only: listed, under the share that flags
        seen["n"] += 1
        return 0x8 if seen["n"] == 1 else 0

    lib = fake_nvml(proc.pid, new_names=False, energy=False, watts=(250.0,), mask=once, others=())
    del lib.nvmlDeviceGetClockInfo

    def broken(h, sensor):
        raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")
    lib.nvmlDeviceGetTemperature = broken
    monkeypatch.setitem(sys.modules, "pynvml", lib)
    tel, t, (w0, w1), warnings = sampled(proc, "cuda", 1.6)
    g = t["gpu"]
    assert not warnings
    assert g["energy_method"] == "power samples" and g["energy_j"] == pytest.approx(250 * (w1 - w0), rel=0.01)
    assert g["sm_clock_mhz_mean"] is None and g["temperature_c_peak"] is None
    assert g["foreign_processes"] == 0 and not any("GPU" in f for f in t["flags"])
    assert not any(f.startswith("throttled:") for f in t["flags"])
    assert seen["n"] > 5 and tel.peak_memory_mb() == 1024.0


def test_no_nvml_driver_means_no_gpu_figures(monkeypatch):
    lib = types.ModuleType("pynvml")

    def no_driver():
        raise OSError("NVML Shared Library Not Found")
    lib.nvmlInit = no_driver
    monkeypatch.setitem(sys.modules, "pynvml", lib)
    proc = child("import time; time.sleep(30)")
    tel, t, _, warnings = sampled(proc, "cuda", 0.5)
    assert not warnings and t["sources"] == ["psutil"] and t["gpu"] is None and t["energy_j"] is None
    assert tel.peak_memory_mb() is None  # CUDA without NVML: unknown, as ever


def test_a_reader_that_breaks_is_dropped_with_one_warning(monkeypatch):
    proc = child("import time; time.sleep(30)")
    lib = fake_nvml(proc.pid)
    lib.nvmlDeviceGetComputeRunningProcesses = lambda h: [object()]  # no .pid: the reader itself raises
    monkeypatch.setitem(sys.modules, "pynvml", lib)
    _, t, _, warnings = sampled(proc, "cuda", 0.8)
    assert len(warnings) == 1 and "telemetry" in warnings[0]
    assert t["gpu"] is None and t["cpu_percent_mean"] is not None and t["samples"] >= 5


# --------------------------------------------------------------------------- amdsmi

def fake_amdsmi(tree_pid: int) -> types.ModuleType:
    """An older amdsmi: `power` for the energy accumulator, process handles to look up,
    no clock call and a failing temperature call (the GPU metrics table answers both)."""
    lib = types.ModuleType("amdsmi")
    t_base, n = time.monotonic(), {"power": 0}
    resolution = 15.259  # microjoules per count
    lib.amdsmi_init = lambda *a: None
    lib.amdsmi_shut_down = lambda: None
    lib.amdsmi_get_processor_handles = lambda: ["h0"]
    lib.amdsmi_get_energy_count = lambda h: {"power": int(500 * (time.monotonic() - t_base) / (resolution * 1e-6)),
                                             "counter_resolution": resolution, "timestamp": 0}

    def power_info(h):
        n["power"] += 1
        return {"average_socket_power": "N/A", "current_socket_power": (450, 550)[n["power"] % 2]}

    def temp(*a):
        raise RuntimeError("AMDSMI_STATUS_NOT_SUPPORTED")
    lib.amdsmi_get_power_info = power_info
    lib.amdsmi_get_temp_metric = temp
    lib.amdsmi_get_gpu_metrics_info = lambda h: {"indep_throttle_status": (1 << 33) | (1 << 2), "current_gfxclk": 2100,
                                                 "temperature_hotspot": 85, "throttle_status": 0xFFFFFFFF}
    lib.amdsmi_get_gpu_process_list = lambda h: ["p0"]
    lib.amdsmi_get_gpu_process_info = lambda h, p: {"pid": tree_pid, "memory_usage": {"vram_mem": 2 * GIB}}
    return lib


def test_amdsmi_energy_power_clocks_throttle(monkeypatch):
    proc = child("import time; time.sleep(30)")
    monkeypatch.setitem(sys.modules, "amdsmi", fake_amdsmi(proc.pid))
    tel, t, (w0, w1), warnings = sampled(proc, "rocm", 1.6)
    g = t["gpu"]
    assert not warnings and t["sources"] == ["psutil", "amdsmi"]
    assert g["energy_method"] == "counter" and g["energy_j"] == pytest.approx(500 * (w1 - w0), rel=0.01)
    assert g["power_w_peak"] == 550.0 and 450 <= g["power_w_mean"] <= 550
    assert g["sm_clock_mhz_mean"] == 2100.0 and g["temperature_c_peak"] == 85.0
    assert g["memory_mb_peak"] == 2048.0 and g["foreign_processes"] == 0
    assert set(g["throttle_reasons"]) == {"thermal", "power_limit"}
    assert [f for f in t["flags"] if f.startswith("throttled:")] == ["throttled: thermal in 100% of samples"]
    assert tel.peak_memory_mb() is None  # peak_memory_mb keeps its rule: n/a on ROCm


# --------------------------------------------------------------------------- psutil, for real

def test_a_busy_tree_and_an_idle_one():
    busy = child(f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', {SPIN.format(s=30)!r}])")
    tel, t, _, warnings = sampled(busy, "cpu", 1.6)
    assert not warnings and t["sources"] == ["psutil"] and t["gpu"] is None and t["energy_j"] is None
    assert t["cpu_percent_mean"] > 30 and t["cpu_percent_peak"] >= t["cpu_percent_mean"]  # the grandchild spins
    assert t["ram_mb_peak"] > 5 and tel.peak_memory_mb() == pytest.approx(t["ram_mb_peak"], abs=0.01)
    idle = child("import time; time.sleep(30)")
    _, t, _, _ = sampled(idle, "cpu", 1.0)
    assert t["cpu_percent_mean"] < 10


def test_foreign_busy_processes_raise_contended():
    spinners = [child(SPIN.format(s=30)) for _ in range(2)]
    try:
        _, t, _, _ = sampled(child("import time; time.sleep(30)"), "cpu", 1.6)
    finally:
        for s in spinners:
            s.kill()
            s.wait()
    assert t["foreign_cpu_percent_mean"] > FOREIGN_CPU_PERCENT
    assert any(f.startswith("contended: other processes used") for f in t["flags"])


def test_mps_reports_unified_memory_from_the_tree():
    _, t, _, _ = sampled(child("x = bytearray(64 << 20)\nimport time; time.sleep(30)"), "mps", 0.8)
    assert t["sources"] == ["psutil", "mps"] and t["gpu"]["unified_memory"] is True
    assert t["gpu"]["memory_mb_peak"] == t["ram_mb_peak"] > 64 and t["gpu"]["energy_j"] is None


# --------------------------------------------------------------------------- the arithmetic

def S(t, tree=0.0, busy=0.0, own=0.0, gpu=None, pids=(10,), hidden=()):
    return Sample(t, tree, 100 * 2**20, frozenset(pids), busy, own, gpu or {}, frozenset(hidden))


def test_the_harness_is_not_foreign_and_rates_follow_the_window():
    # 0-1 s start-up (one core), 1-3 s timed (two cores, the harness one core, others half a core)
    samples = [S(0), S(1, tree=1, busy=1), S(2, tree=3, busy=4.5, own=1), S(3, tree=5, busy=8, own=2)]
    t = summarize(samples, window=(1.0, 3.0), timed_tokens=0, interval=1.0, sources=["psutil"], gpus=[],
                  harness_pid=1)
    assert t["cpu_percent_mean"] == 200.0 and t["cpu_percent_peak"] == 200.0
    assert t["foreign_cpu_percent_mean"] == 50.0 and t["flags"] == []
    t = summarize(samples, window=None, timed_tokens=0, interval=1.0, sources=["psutil"], gpus=[], harness_pid=1)
    assert t["window"] == "whole run" and t["cpu_percent_mean"] == pytest.approx(166.67)


def test_energy_is_interpolated_at_the_clock_and_a_reset_counter_falls_back_to_power():
    def at(t, mj, w=100.0):
        return S(t, gpu={0: GpuReading(energy_mj=mj, power_w=w, procs={10: GIB})})
    steady = [at(0, 0), at(1, 100_000), at(2, 200_000), at(3, 300_000)]
    t = summarize(steady, window=(0.5, 2.5), timed_tokens=1000, interval=1.0, sources=[], gpus=[0], harness_pid=1)
    assert t["energy_j"] == 200.0 and t["tokens_per_joule"] == 5.0 and t["gpu"]["energy_method"] == "counter"
    reset = [at(0, 500_000), at(1, 600_000), at(2, 0), at(3, 100_000)]
    t = summarize(reset, window=(0.5, 2.5), timed_tokens=1000, interval=1.0, sources=[], gpus=[0], harness_pid=1)
    assert t["energy_j"] == 200.0 and t["gpu"]["energy_method"] == "power samples"
    t = summarize(steady, window=(2.0, 9.0), timed_tokens=1000, interval=1.0, sources=[], gpus=[0], harness_pid=1)
    assert t["energy_j"] is None  # the samples cover too little of the window to say


def test_a_container_view_of_host_pids():
    """NVML lists host PIDs a container cannot see: one hidden PID is taken as train.py's
    (its memory is the tree's), the rest are foreign."""
    hidden = {4_190_001: 3 * GIB, 4_190_002: GIB}
    one = [S(k, gpu={0: GpuReading(procs=dict(list(hidden.items())[:1]))}, hidden=hidden) for k in range(3)]
    g = summarize(one, window=(0, 2), timed_tokens=0, interval=1, sources=[], gpus=[0], harness_pid=1)["gpu"]
    assert g["foreign_processes"] == 0 and g["memory_mb_peak"] == 3072.0
    two = [S(k, gpu={0: GpuReading(procs=dict(hidden))}, hidden=hidden) for k in range(3)]
    t = summarize(two, window=(0, 2), timed_tokens=0, interval=1, sources=[], gpus=[0], harness_pid=1)
    assert t["gpu"]["foreign_processes"] == 1 and t["gpu"]["memory_mb_peak"] == 3072.0
    assert "contended: 1 other process on the GPU" in t["flags"]


def test_the_gpu_train_py_runs_on_is_the_one_measured(monkeypatch):
    """Two GPUs: the other one's energy and processes are not this run's."""
    proc = child("import time; time.sleep(30)")
    lib = fake_nvml(proc.pid)
    lib.nvmlDeviceGetCount = lambda: 2
    lib.nvmlDeviceGetComputeRunningProcesses = lambda h: [_Proc(proc.pid, GIB)] if h == "gpu1" else [_Proc(1, GIB)]
    monkeypatch.setitem(sys.modules, "pynvml", lib)
    _, t, _, _ = sampled(proc, "cuda", 0.8)
    assert t["gpu"]["devices"] == [1] and t["gpu"]["foreign_processes"] == 0


# --------------------------------------------------------------------------- end to end

FAKE_TELEMETRY = """
print("---")
print("val_bpb: 0.001")
print("energy_j: 0.5")
print("tokens_per_joule: 1e12")
print('telemetry: {"energy_j": 0.5, "flags": []}')
"""


@pytest.mark.slow
def test_a_real_experiment_carries_telemetry_that_train_py_cannot_touch(cache_dir, tmp_path):
    from harness import ledger, ledger_rows
    from harness.campaign_state import Pending
    from tests import fakes
    from tests.conftest import experiment

    res, s = experiment(tmp_path / "run", fakes.write(tmp_path / "t.py", before_eval=FAKE_TELEMETRY))
    assert res.returncode == 0 and s["status"] == "ok", res.stdout + res.stderr
    t = s["telemetry"]
    assert t["sources"] == ["psutil"] and t["samples"] >= 3 and t["gpu"] is None
    assert t["cpu_percent_mean"] > 0 and t["cpu_percent_peak"] > 0 and t["ram_mb_peak"] > 50
    assert t["foreign_cpu_percent_mean"] is not None
    assert t["energy_j"] is None and t["tokens_per_joule"] is None  # a CPU has no counter; train.py's 0.5 is a claim
    assert s["train"]["energy_j"] == 0.5 and s["peak_memory_mb"] == pytest.approx(t["ram_mb_peak"], abs=0.01)
    block = res.stdout[res.stdout.index("\n---\n"):]
    assert not [line for line in block.splitlines() if line.startswith(("energy_j", "tokens_per_joule", "telemetry"))]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["telemetry"] == t
    # the ledger row carries it as the summary has it
    ctx = ledger_rows.RowContext("cpu", "scripted", None)
    pending = Pending(seq=1, commit="a" * 40, parent="b" * 40, description="x")
    led = ledger.Ledger(tmp_path / "campaign")
    led.append(ledger_rows.experiment_row(ctx, 1, pending, s, "keep", 1.0, {}))
    row = json.loads((tmp_path / "campaign" / "results.jsonl").read_text().splitlines()[-1])
    assert row["telemetry"] == t


@pytest.mark.slow
def test_broken_telemetry_never_fails_an_experiment(cache_dir, tmp_path, capsys, monkeypatch):
    from harness import telemetry, telemetry_summary
    from tests import fakes
    from tests.conftest import FAST
    from tests.inproc import in_process

    def boom(*a, **k):
        raise RuntimeError("sensor on fire")
    monkeypatch.setattr(telemetry.Telemetry, "_read", boom)
    monkeypatch.setattr(telemetry_summary, "summarize", boom)
    res = in_process(capsys, monkeypatch, "experiment", *FAST, f"hydra.run.dir={tmp_path / 'run'}",
                     f"train_file={fakes.write(tmp_path / 't.py')}")
    assert res.returncode == 0, res.stdout + res.stderr
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["status"] == "ok" and s["telemetry"] is None and s["peak_memory_mb"] is None
    assert res.stderr.count("WARNING: telemetry: RuntimeError: sensor on fire") == 1


def test_the_peak_ignores_a_sliver_of_an_interval():
    """The last sample comes moments after the one before it (at stop): one 10 ms tick of
    CPU time over 2 ms must not read as a peak of five cores."""
    samples = [S(0), S(1, tree=0.5, busy=0.5), S(1.002, tree=0.51, busy=0.51)]
    t = summarize(samples, window=None, timed_tokens=0, interval=1.0, sources=["psutil"], gpus=[], harness_pid=1)
    assert t["cpu_percent_peak"] == 50.0 and t["cpu_percent_mean"] == pytest.approx(50.9, abs=0.1)


def test_a_window_shorter_than_an_interval_takes_the_whole_run():
    """A train.py that hands over 50 ms after its clock starts: the one pair around it ends
    at the sample after the kill, which has no new CPU reading; its rate (none) must not
    stand for the run's, with all the machine's busy time read as foreign."""
    samples = [S(0), S(1, tree=1, busy=1), S(2, tree=2, busy=2), S(2.3, tree=2, busy=2.3)]
    t = summarize(samples, window=(2.1, 2.15), timed_tokens=0, interval=1.0, sources=["psutil"], gpus=[],
                  harness_pid=1)
    assert t["window"] == "whole run" and t["cpu_percent_mean"] == pytest.approx(87, abs=1)
    assert t["foreign_cpu_percent_mean"] == pytest.approx(13, abs=1)


def test_the_console_block_ends_with_energy_where_measured(capsys, tmp_path):
    from harness import experiment

    out = {"status": "ok", "val_bpb": 2.5, "training_seconds": 10.0, "total_seconds": 20.0, "peak_memory_mb": 900.0,
           "mfu_percent": 30.0, "total_tokens_M": 1.0, "num_steps": 10, "num_params_M": 7.3, "backend": "cuda",
           "device": "GPU", "run_dir": str(tmp_path), "train": {"energy_j": 1.0},
           "telemetry": {"energy_j": 1234.5, "tokens_per_joule": 810.0,
                         "flags": ["throttled: hw_slowdown in 50% of samples"]}}
    assert experiment.report(out) == 0
    cap = capsys.readouterr()
    lines = cap.out.split("---\n", 1)[1].splitlines()
    keys = [line.split(":")[0] for line in lines]
    assert keys[:10] == ["val_bpb", "training_seconds", "total_seconds", "peak_memory_mb", "mfu_percent",
                         "total_tokens_M", "num_steps", "num_params_M", "backend", "device"]
    assert keys[-4:] == ["train.energy_j", "energy_j", "tokens_per_joule", "experiment"]
    assert "telemetry" not in keys and "experiment: WARNING: throttled: hw_slowdown in 50% of samples" in cap.err
    out["telemetry"] = {"energy_j": None, "tokens_per_joule": None, "flags": []}
    experiment.report(out)
    assert "energy_j:" not in capsys.readouterr().out.replace("train.energy_j:", "")
