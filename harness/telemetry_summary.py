"""From the telemetry's samples to the `telemetry` dict of a run's summary and ledger row.

    summarize(samples, window=(t0, t1), timed_tokens=n, interval=0.5, sources=["psutil", "nvml"],
              gpus=[0], harness_pid=os.getpid())

`window` is the timed training by the harness's clock (monotonic seconds; None when the
clock never started): rates, power, clocks, temperatures and throttle reasons are taken
over it, and the energy is the device's over exactly it (the cumulative counter
interpolated at both ends; where a device has no counter, its power samples integrated).
Without a window (or with fewer than two samples in it: shorter than an interval) they are
taken over the whole run, and without one there is no energy. The README's
ledger section lists the fields.
"""
from __future__ import annotations

from dataclasses import dataclass, field

# A slowdown reason active in at least this share of the timed samples is flagged: one
# sample in ten is more than a momentary dip, and a run slowed that long is not comparable.
THROTTLE_SHARE = 0.1
# Other processes' mean CPU use above half a core is flagged: enough to take a thread's
# worth of time from a CPU run (calibration refuses 0.3 cores; this flags, it refuses nothing).
FOREIGN_CPU_PERCENT = 50.0
# Reasons that mean the GPU slowed itself against heat, its power delivery or its
# reliability limits. sw_power_cap (AMD: power_limit) is listed in throttle_reasons but
# flags nothing: a GPU under full load runs at its power cap by design.
SLOWDOWNS = frozenset({"hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown",
                       "board_limit", "reliability", "thermal", "current_limit", "vr_hot_or_other"})
# The samples must cover at least this share of the window for an energy figure (the
# first and last samples bracket it in a normal run; a gap is scaled, never extrapolated far).
MIN_COVERAGE = 0.5
MB = 2**20


@dataclass
class Sample:
    t: float  # time.monotonic(), seconds
    tree_cpu_s: float  # CPU seconds of the run's processes so far (proc.members; an exited one keeps its last)
    tree_rss: int | None  # bytes; None when no process of the tree was left
    tree_pids: frozenset
    busy_s: float  # the machine's busy CPU seconds so far, every core summed
    harness_cpu_s: float  # this process's CPU seconds so far, all its threads
    gpu: dict = field(default_factory=dict)  # device index -> telemetry_gpu.GpuReading
    hidden: frozenset = frozenset()  # GPU pids not in this PID namespace (a container's view of the host's)


def summarize(samples: list[Sample], *, window: tuple[float, float] | None, timed_tokens: int, interval: float,
              sources: list[str], gpus: list[int], harness_pid: int, unified_memory: bool = False,
              sampler_cpu_s: float | None = None) -> dict:
    if window is not None and not window[1] > window[0]:
        window = None
    inside = (lambda t: window[0] <= t <= window[1]) if window else (lambda t: False)
    pairs = [(a, b) for a, b in zip(samples, samples[1:]) if b.t > a.t]
    timed = [s for s in samples if inside(s.t)]
    # the window's own rates need a whole interval in it (two samples): one shorter (a
    # train.py that hands over moments after its clock starts) would be the one pair around
    # the handover, whose CPU the last reading missed, and train.py's work would read as foreign
    windowed = len(timed) >= 2
    timed_pairs = [(a, b) for a, b in pairs if inside((a.t + b.t) / 2)] if windowed else []
    timed_pairs, timed = timed_pairs or pairs, timed if windowed else samples
    out = {"sources": sources, "interval_s": interval, "samples": len(samples),
           "window": "timed training" if windowed else "whole run",
           **_cpu(timed_pairs, interval),
           "ram_mb_peak": _peak_mb([s.tree_rss for s in samples if s.tree_rss is not None])}
    gpu = _gpu(samples, timed, window, gpus, harness_pid) if gpus else None
    if unified_memory:  # MPS: the GPU's memory is the tree's resident memory; nothing else is visible
        gpu = {**_gpu_fields(), "memory_mb_peak": out["ram_mb_peak"], "unified_memory": True}
    out["gpu"] = gpu
    energy = (gpu or {}).get("energy_j")
    out["energy_j"] = energy
    out["tokens_per_joule"] = _round(timed_tokens / energy) if energy and timed_tokens else None
    out["flags"] = _flags(out)
    span = samples[-1].t - samples[0].t if len(samples) > 1 else 0.0
    out["sampler_cpu_percent"] = _round(100 * sampler_cpu_s / span) if sampler_cpu_s is not None and span else None
    return out


def _cpu(pairs: list, interval: float) -> dict:
    dt = sum(b.t - a.t for a, b in pairs)
    if not dt:
        return {"cpu_percent_mean": None, "cpu_percent_peak": None, "foreign_cpu_percent_mean": None}
    tree = sum(b.tree_cpu_s - a.tree_cpu_s for a, b in pairs)
    busy = sum(b.busy_s - a.busy_s for a, b in pairs)
    own = sum(b.harness_cpu_s - a.harness_cpu_s for a, b in pairs)
    # the peak over whole intervals only: CPU times tick in 10 ms steps, so over the last
    # sample's few milliseconds (taken at stop) one tick would read as several cores
    whole = [(a, b) for a, b in pairs if b.t - a.t >= interval / 2] or pairs
    peak = max(100 * (b.tree_cpu_s - a.tree_cpu_s) / (b.t - a.t) for a, b in whole)
    return {"cpu_percent_mean": _round(100 * tree / dt), "cpu_percent_peak": _round(peak),
            "foreign_cpu_percent_mean": _round(100 * max(0.0, busy - tree - own) / dt)}


def _gpu_fields() -> dict:
    return dict.fromkeys(("energy_j", "power_w_mean", "power_w_peak", "sm_clock_mhz_mean", "sm_clock_mhz_min",
                          "temperature_c_peak", "memory_mb_peak", "throttle_reasons", "foreign_processes"))


def _gpu(samples: list[Sample], timed: list[Sample], window, gpus: list[int], harness_pid: int) -> dict:
    g = _gpu_fields()
    g["devices"] = gpus
    readings = [[s.gpu[i] for i in gpus if i in s.gpu] for s in timed]
    power = [sum(r.power_w for r in rs) for rs in readings if rs and all(r.power_w is not None for r in rs)]
    clocks = [sum(r.sm_clock_mhz for r in rs) / len(rs) for rs in readings
              if rs and all(r.sm_clock_mhz is not None for r in rs)]
    temps = [r.temperature_c for rs in readings for r in rs if r.temperature_c is not None]
    if power:
        g.update(power_w_mean=_round(sum(power) / len(power)), power_w_peak=_round(max(power)))
    if clocks:
        g.update(sm_clock_mhz_mean=_round(sum(clocks) / len(clocks)), sm_clock_mhz_min=_round(min(clocks)))
    g["temperature_c_peak"] = _round(max(temps)) if temps else None
    sampled = [rs for rs in readings if rs]
    counts: dict[str, int] = {}
    for rs in sampled:
        for name in {n for r in rs for n in r.reasons}:
            counts[name] = counts.get(name, 0) + 1
    g["throttle_reasons"] = sorted(counts, key=lambda n: (-counts[n], n))
    g["throttle_share"] = {n: _round(counts[n] / len(sampled), 3) for n in g["throttle_reasons"]}
    g["energy_j"], g["energy_method"] = _energy(samples, window, gpus)
    g.update(_processes(samples, gpus, harness_pid))
    return g


def _processes(samples: list[Sample], gpus: list[int], harness_pid: int) -> dict:
    """The tree's peak memory on its GPUs and the number of other processes seen there. In
    a container NVML lists the host's PIDs: when none of the tree's appears, one PID hidden
    from this namespace is taken as train.py's, and only the rest count as foreign."""
    tree = frozenset().union(*(s.tree_pids for s in samples)) if samples else frozenset()
    listed = [(s, s.gpu[i].procs) for s in samples for i in gpus if i in s.gpu and s.gpu[i].procs is not None]
    if not listed:
        return {}
    seen = {pid for _, procs in listed for pid in procs}
    others = seen - tree - {harness_pid}
    hidden = others & frozenset().union(*(s.hidden for s in samples))
    mine = set(tree)
    if not (seen & tree) and hidden:
        mine.add(min(hidden, key=lambda pid: -max(p.get(pid, 0) for _, p in listed)))  # the one holding most memory
    per_sample: dict[float, int] = {}
    for s, procs in listed:
        per_sample[s.t] = per_sample.get(s.t, 0) + sum(m for pid, m in procs.items() if pid in mine)
    return {"memory_mb_peak": _peak_mb(list(per_sample.values())), "foreign_processes": len(others - mine)}


def _energy(samples: list[Sample], window, gpus: list[int]) -> tuple[float | None, str | None]:
    """Joules the GPUs used over `window`, and how they were measured ("counter" or "power
    samples"); (None, None) where they cannot be told."""
    if window is None:
        return None, None
    total, methods = 0.0, set()
    for i in gpus:
        counter = [(s.t, s.gpu[i].energy_mj / 1000) for s in samples if i in s.gpu and s.gpu[i].energy_mj is not None]
        joules = _over(counter, window) if all(b[1] >= a[1] for a, b in zip(counter, counter[1:])) else None
        method = "counter"
        if joules is None:
            power = [(s.t, s.gpu[i].power_w) for s in samples if i in s.gpu and s.gpu[i].power_w is not None]
            joules, method = _over(_integral(power), window), "power samples"
        if joules is None:
            return None, None
        total += joules
        methods.add(method)
    return _round(total), " + ".join(sorted(methods))


def _integral(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Power samples (s, W) as a cumulative energy curve (s, J), trapezoid by trapezoid."""
    out, acc = [], 0.0
    for k, (t, p) in enumerate(points):
        if k:
            acc += (p + points[k - 1][1]) / 2 * (t - points[k - 1][0])
        out.append((t, acc))
    return out


def _over(curve: list[tuple[float, float]], window: tuple[float, float]) -> float | None:
    """The rise of a cumulative curve over `window`, interpolated at both ends; a window
    the samples cover only in part is scaled up from what they cover (at least MIN_COVERAGE)."""
    if len(curve) < 2:
        return None
    t0, t1 = max(window[0], curve[0][0]), min(window[1], curve[-1][0])
    if t1 - t0 < MIN_COVERAGE * (window[1] - window[0]):
        return None
    return (_at(curve, t1) - _at(curve, t0)) * (window[1] - window[0]) / (t1 - t0)


def _at(curve: list[tuple[float, float]], t: float) -> float:
    for (ta, va), (tb, vb) in zip(curve, curve[1:]):
        if ta <= t <= tb:
            return va if tb == ta else va + (vb - va) * (t - ta) / (tb - ta)
    return curve[-1][1]


def _flags(out: dict) -> list[str]:
    flags, gpu = [], out.get("gpu") or {}
    for name, share in (gpu.get("throttle_share") or {}).items():
        if name in SLOWDOWNS and share >= THROTTLE_SHARE:
            flags.append(f"throttled: {name} in {100 * share:.0f}% of samples")
    foreign = out.get("foreign_cpu_percent_mean")
    if foreign is not None and foreign > FOREIGN_CPU_PERCENT:
        flags.append(f"contended: other processes used {foreign:.0f}% of a core")
    if gpu.get("foreign_processes"):
        n = gpu["foreign_processes"]
        flags.append(f"contended: {n} other process{'es' if n > 1 else ''} on the GPU")
    return flags


def _peak_mb(values: list) -> float | None:
    return _round(max(values) / MB) if values else None


def _round(v: float | None, digits: int = 2) -> float | None:
    return None if v is None else round(float(v), digits)
