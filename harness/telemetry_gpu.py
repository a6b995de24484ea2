"""The GPU side of the harness's telemetry: NVIDIA through NVML (pynvml), AMD through amdsmi.

    reader = gpu_reader("cuda")     # None where the library is missing or finds no device
    r = reader.read(0)              # a GpuReading of device 0; any figure None where unknown
    reader.close()

Every library call is guarded: a function this version of the library lacks, or one that
failed MAX_FAILURES times in a row on a device, is not called again there, and its figure
stays None. `gpu_reader` returns None instead of raising; a `read` that raises anyway (an
answer of a shape no version was known to give) makes the sampler drop the reader.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

MAX_FAILURES = 3  # a call that fails this often in a row is given up (unsupported on this device)

# NVML's clocks event (formerly "clocks throttle") reason bits: the values are the driver's
# ABI, the same under both spellings of the constants.
NVML_REASONS = {
    0x1: "gpu_idle", 0x2: "applications_clocks_setting", 0x4: "sw_power_cap", 0x8: "hw_slowdown",
    0x10: "sync_boost", 0x20: "sw_thermal_slowdown", 0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown", 0x100: "display_clock_setting", 0x200: "board_limit", 0x400: "reliability",
}
_NVML_REASON_PREFIXES = ("nvmlClocksEventReason", "nvmlClocksThrottleReason")
_NVML_REASON_CALLS = ("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons")

# amdgpu's independent throttler bits (gpu_metrics `indep_throttle_status`), by group: 0-15
# power limits (PPT), 16-31 current limits (TDC), 32-47 temperatures, 48 and up VR hot,
# PROCHOT and the rest. The legacy `throttle_status` is ASIC-specific and is not decoded.
AMD_REASON_GROUPS = ((0, "power_limit"), (16, "current_limit"), (32, "thermal"), (48, "vr_hot_or_other"))
_NA = {0xFFFF, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF}  # amdsmi's "not available" sentinels


@dataclass
class GpuReading:
    energy_mj: float | None = None  # cumulative energy counter, millijoules
    power_w: float | None = None
    sm_clock_mhz: float | None = None
    temperature_c: float | None = None
    reasons: tuple[str, ...] = ()  # clocks event / throttle reasons active now
    procs: dict | None = None  # pid -> bytes of this device's memory (None: the list is unknown)


class _Guarded:
    """Calls into a vendor library that never raise: None for a missing or failing function."""

    def __init__(self, lib):
        self.lib, self._failures = lib, {}

    def __call__(self, name: str, dev: int, *args):
        key = (name, dev)
        if self._failures.get(key, 0) >= MAX_FAILURES:
            return None
        fn = getattr(self.lib, name, None)
        if fn is None:
            self._failures[key] = MAX_FAILURES
            return None
        try:
            value = fn(*args)
        except Exception:  # noqa: BLE001 - unsupported here, busy, or a process that just exited
            self._failures[key] = self._failures.get(key, 0) + 1
            return None
        self._failures[key] = 0
        return value

    def first(self, names: tuple[str, ...], dev: int, *args):
        """The first of `names` this library has (one function under an old and a new name)."""
        for name in names:
            if hasattr(self.lib, name):
                return self(name, dev, *args)
        return None


def _num(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v in _NA:
        return None
    return float(v)


def _snake(camel: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", camel).lower()


class Nvml:
    source = "nvml"

    def __init__(self, lib):
        lib.nvmlInit()
        self.lib, self.call = lib, _Guarded(lib)
        self.handles = [lib.nvmlDeviceGetHandleByIndex(i) for i in range(lib.nvmlDeviceGetCount())]
        self.reasons = dict(NVML_REASONS)
        for name in dir(lib):  # bits a newer library names that the table above does not
            for prefix in _NVML_REASON_PREFIXES:
                bit = getattr(lib, name) if name.startswith(prefix) else None
                if isinstance(bit, int) and bit > 0 and bit & (bit - 1) == 0 and bit not in self.reasons:
                    self.reasons[bit] = _snake(name[len(prefix):])

    def read(self, i: int) -> GpuReading:
        h, call, lib = self.handles[i], self.call, self.lib
        power = _num(call("nvmlDeviceGetPowerUsage", i, h))  # milliwatts
        mask = call.first(_NVML_REASON_CALLS, i, h)
        reasons = ()
        if isinstance(mask, int):
            reasons = tuple(self.reasons.get(1 << b, f"reason_0x{1 << b:x}") for b in range(64) if mask >> b & 1)
        procs = None
        for name in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
            listed = call(name, i, h)
            if listed is not None:
                procs = procs or {}
                for p in listed:
                    procs[p.pid] = max(procs.get(p.pid, 0), getattr(p, "usedGpuMemory", None) or 0)
        return GpuReading(
            energy_mj=_num(call("nvmlDeviceGetTotalEnergyConsumption", i, h)),
            power_w=None if power is None else power / 1000,
            sm_clock_mhz=_num(call("nvmlDeviceGetClockInfo", i, h, getattr(lib, "NVML_CLOCK_SM", 1))),
            temperature_c=_num(call("nvmlDeviceGetTemperature", i, h, getattr(lib, "NVML_TEMPERATURE_GPU", 0))),
            reasons=reasons, procs=procs)

    def close(self) -> None:
        self.call("nvmlShutdown", -1)  # NVML counts its initialisations: others' handles stay valid


class Amdsmi:
    source = "amdsmi"

    def __init__(self, lib):
        lib.amdsmi_init()
        self.lib, self.call = lib, _Guarded(lib)
        self.handles = list(lib.amdsmi_get_processor_handles())

    def _enum(self, cls: str, member: str):
        return getattr(getattr(self.lib, cls, None), member, None)

    def read(self, i: int) -> GpuReading:
        h, call = self.handles[i], self.call
        r = GpuReading()
        e = call("amdsmi_get_energy_count", i, h) or {}
        acc = _num(e.get("energy_accumulator", e.get("power")))  # renamed in later versions
        res = _num(e.get("counter_resolution"))  # microjoules per count
        if acc is not None and res is not None:
            r.energy_mj = acc * res / 1000
        p = call("amdsmi_get_power_info", i, h) or {}
        r.power_w = next((v for k in ("socket_power", "current_socket_power", "average_socket_power")
                          if (v := _num(p.get(k))) is not None), None)
        c = call("amdsmi_get_clock_info", i, h, self._enum("AmdSmiClkType", "GFX")) or {}
        r.sm_clock_mhz = next((v for k in ("clk", "cur_clk") if (v := _num(c.get(k))) is not None), None)
        metric = self._enum("AmdSmiTemperatureMetric", "CURRENT")
        for sensor in ("HOTSPOT", "EDGE"):
            r.temperature_c = _num(call("amdsmi_get_temp_metric", i, h, self._enum("AmdSmiTemperatureType", sensor),
                                        metric))
            if r.temperature_c is not None:
                break
        m = call("amdsmi_get_gpu_metrics_info", i, h) or {}
        r.reasons = _amd_reasons(m)
        r.power_w = r.power_w if r.power_w is not None else _num(m.get("current_socket_power"))
        r.sm_clock_mhz = r.sm_clock_mhz if r.sm_clock_mhz is not None else _num(m.get("current_gfxclk"))
        r.temperature_c = r.temperature_c if r.temperature_c is not None else _num(m.get("temperature_hotspot"))
        r.procs = self._procs(i, h)
        return r

    def _procs(self, i: int, h) -> dict | None:
        listed = self.call("amdsmi_get_gpu_process_list", i, h)
        if listed is None:
            return None
        procs = {}
        for entry in listed:  # dicts in newer versions, process handles to look up in older ones
            info = entry if isinstance(entry, dict) else self.call("amdsmi_get_gpu_process_info", i, h, entry)
            if not isinstance(info, dict) or _num(info.get("pid")) is None:
                continue
            mem = info.get("mem")
            if _num(mem) is None:
                mem = (info.get("memory_usage") or {}).get("vram_mem")
            procs[int(info["pid"])] = int(_num(mem) or 0)
        return procs

    def close(self) -> None:
        self.call("amdsmi_shut_down", -1)


def _amd_reasons(metrics: dict) -> tuple[str, ...]:
    mask = metrics.get("indep_throttle_status")
    if isinstance(mask, int) and mask not in _NA:
        names = []
        for lo, name in AMD_REASON_GROUPS:
            hi = next((b for b, _ in AMD_REASON_GROUPS if b > lo), 64)
            if mask & (((1 << (hi - lo)) - 1) << lo):
                names.append(name)
        return tuple(names)
    legacy = metrics.get("throttle_status")
    return ("unclassified",) if isinstance(legacy, int) and legacy not in _NA and legacy else ()


def gpu_reader(backend: str):
    """The reader for `backend`'s GPUs (cuda: NVML, rocm: amdsmi); None where its library
    is missing, has no driver to talk to (pynvml imports without one) or sees no device."""
    try:
        if backend == "cuda":
            import pynvml

            reader = Nvml(pynvml)
        elif backend == "rocm":
            import amdsmi

            reader = Amdsmi(amdsmi)
        else:
            return None
    except Exception:  # noqa: BLE001 - no library or no driver: no GPU telemetry, not an error
        return None
    return reader if reader.handles else None
