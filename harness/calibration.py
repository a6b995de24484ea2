"""`autoresearch calibrate`: measure this device, cache the result by fingerprint.

    autoresearch calibrate backend=cpu model=tiny            (~20 s on 2 cores; then cached)
    autoresearch calibrate backend=cuda model=reference calibrate.noise_runs=3
    autoresearch calibrate calibrate.force=true calibrate.out=lab_a100.json

A calibration is cached under data.cache_dir/calibration/<backend>-<preset>-<id>.json,
where <id> hashes the device fingerprint (name, count, driver, torch/triton versions,
dtype, CPU threads), the model preset, the data constants and the frozen workload's
version. The throughput and start-up come from the frozen baseline trained exactly as an
experiment trains it (harness/throughput.py); matmul, bandwidth, probe noise and the
FLOPs rule from the workload (harness/workload.py).

A measurement must meet a quality bar: a throughput spread (CV) at most
calibrate.max_cv and no foreign load seen (other processes busy on the CPU, or on the
GPU). One that fails is redone, at most calibrate.attempts times; then calibration stops
with the reason and the ways out, unless calibrate.force=true accepts it (recorded as
such). A cached calibration is redone when older than calibrate.max_age_hours or when it
fails the bar.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import backends
from harness import calibration_store, locks, proc, throughput, workdir
from harness.checks import calibration_problem
from harness.workload import workload_version


class CalibrationError(RuntimeError):
    pass


# 3: throughput and start-up from the baseline trained as an experiment trains it; 4: as long as
# one; 5: the baseline evaluated as an experiment is (its runners' times bound every evaluation);
# 6: and its own probe's largest change kept (the probe's tolerance allows 10x it)
FORMAT = 6


def identity(cfg: dict, bk) -> dict:
    data = {k: cfg["data"][k] for k in ("name", "vocab_size", "max_seq_len")}
    return {"fingerprint": bk.fingerprint(), "model": cfg["model"], "data": data, "workload": workload_version(),
            "format": FORMAT}


def calibration_id(ident: dict) -> str:
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:12]


def default_path(cfg: dict, bk, cid: str) -> Path:
    return calibration_store.directory(cfg) / f"{bk.NAME}-{cfg['model']['name']}-{cid}.json"


FORCED, LIMITS_ONLY = "accepted with calibrate.force", "for limits only"


def validity(cal: dict | None, ccfg: dict, path: Path | None = None, limits_only: bool = False) -> str:
    """'' when usable, else why it must be redone (a file with fields of the wrong types
    too: measuring again beats a TypeError later). A measurement accepted with
    calibrate.force stays usable until it ages out or the device or software changes (its
    id then differs); one kept `for limits only` (it failed the bar where no budget
    depends on it) serves only `limits_only` uses: budgets counted in tokens, FLOPs or
    wall seconds, which take only the start-up allowance, the probe's tolerance and the
    evaluation's bound from it."""
    if cal is None:
        return "no calibration for this device and preset yet"
    problem = calibration_problem(cal)
    if problem:
        return f"the cached calibration{f' at {path}' if path else ''} is unreadable ({problem})"
    age_h = (time.time() - cal["created"]) / 3600
    if age_h > ccfg["max_age_hours"]:
        return f"the cached calibration is {age_h:.0f} h old (calibrate.max_age_hours={ccfg['max_age_hours']:g})"
    if cal.get("format") != FORMAT:
        return "the cached calibration is of an older format"
    quality = str(cal.get("quality", "ok"))
    if quality.startswith(FORCED) or (limits_only and quality.startswith(LIMITS_ONLY)):
        return ""
    problems = quality_problems(cal, ccfg)
    if problems:
        return f"the cached calibration failed the quality bar ({problems})"
    return ""


def calibrate(cfg: dict, log=print, limits_only: bool = False) -> dict:
    """This device's calibration for cfg's preset: cached when valid, else measured.
    `limits_only`: no budget depends on its throughput (tokens, flops, wall), so a
    measurement that fails the quality bar (a busy machine) is kept and used, marked
    `for limits only`, instead of stopping."""
    bk = backends.activate(cfg["backend"]["name"], cfg["backend"].get("threads"), cfg["backend"].get("device"))
    ccfg = cfg["calibrate"]
    ident = identity(cfg, bk)
    cid = calibration_id(ident)
    path = default_path(cfg, bk, cid)
    cached = calibration_store.load(path)
    why = validity(cached, ccfg, path, limits_only)
    if not why and not ccfg["force"]:
        log(f"calibrate: cached ({_age(cached)} old, CV {100 * cached['cv']:.1f}%): {path}")
        return _copy_out(cached, ccfg)
    # one measurement at a time per calibration, and on the CPU one at a time in all (the
    # cores are shared: a second measurement is the first one's foreign load)
    lock = path.parent / f".{'cpu' if bk.NAME == 'cpu' else path.stem}.lock"
    with locks.held(lock, waiting=lambda: log("calibrate: waiting for another process measuring this device ...")):
        cached = calibration_store.load(path)  # the process we waited for may have measured it
        if not validity(cached, ccfg, path, limits_only) and not ccfg["force"]:
            log(f"calibrate: cached ({_age(cached)} old, CV {100 * cached['cv']:.1f}%): {path}")
            return _copy_out(cached, ccfg)
        return _measured(cfg, bk, ident, cid, path, why, log, limits_only)


def _measured(cfg: dict, bk, ident: dict, cid: str, path: Path, why: str, log, limits_only: bool = False) -> dict:
    """A new measurement that meets the bar (or is forced, or is for limits only), kept in
    the cache. A measurement that fails the bar, or whose baseline run timed too few
    batches for its windows (a slow or busy machine), is redone with windows twice as
    long, at most calibrate.attempts times in all."""
    ccfg = cfg["calibrate"]
    log(f"calibrate: {why if why else 'forced'}; measuring {bk.NAME} ({bk.device_name()}), "
        f"model={cfg['model']['name']} ...")
    attempts = max(1, int(ccfg.get("attempts", 3)))
    cal, problems = None, ""
    for attempt in range(1, attempts + 1):
        stretch = 2.0 ** (attempt - 1)
        try:
            measured = _measure(cfg, bk, log, stretch)
        except TooFewBatches as e:
            too_few = str(e)
            if cal is None:  # nothing measured yet: this is what to say if nothing ever is
                problems = too_few
            log(f"calibrate: WARNING: attempt {attempt} of {attempts}: {too_few}"
                + ("; measuring again with windows twice as long" if attempt < attempts else ""))
            continue
        cal = {"id": cid, "created": time.time(),
               "created_iso": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "backend": bk.NAME, "device": bk.device_name(), "preset": cfg["model"]["name"], **ident, **measured}
        problems = quality_problems(cal, ccfg)
        if not problems:
            break
        log(f"calibrate: WARNING: attempt {attempt} of {attempts} failed the quality bar: {problems}"
            + ("; measuring again with windows twice as long" if attempt < attempts else ""))
    if cal is None:
        raise CalibrationError(
            f"this device's calibration could not time enough batches in {attempts} attempt{'s' if attempts > 1 else ''}, "
            f"its windows doubled each time ({problems}): the machine is too slow or too busy for the preset. Pick a "
            f"smaller preset, raise calibrate.window_seconds or calibrate.attempts, or skip calibration: "
            f"budget.mode=wall with budget.allowance_seconds and eval.probe_tolerance set needs none")
    if not problems:
        quality = "ok"
    elif ccfg["force"]:
        quality = f"{FORCED}: {problems}"
    elif limits_only:
        quality = f"{LIMITS_ONLY} (failed the quality bar: {problems})"
        log(f"calibrate: WARNING: kept {LIMITS_ONLY}: this budget does not depend on the device's throughput, so "
            f"the start-up allowance, the probe's tolerance and the evaluation's bound come from this measurement "
            f"as it is (a normalized budget would measure again)")
    else:
        raise CalibrationError(
            f"this device's calibration failed its quality bar in {attempts} measurement{'s' if attempts > 1 else ''} "
            f"({problems}): budgets set from it "
            f"would not mean the same work. Re-run on a quiet machine (stop other heavy processes), accept it "
            f"anyway with calibrate.force=true (kept and reused until the device or its software changes), use a "
            f"budget that needs no throughput (budget.mode=tokens, flops or wall: a busy machine's measurement "
            f"serves their limits), or skip calibration: budget.mode=wall with "
            f"budget.allowance_seconds and eval.probe_tolerance set needs none")
    cal.update(attempts=attempt, quality=quality)
    cal["path"] = str(path)
    return keep(cal, ccfg)


MAX_AUTO_SECONDS = 120.0


def window_seconds(cfg: dict, windows: int) -> float:
    """The default window: the baseline trains as long as an experiment of the preset does
    on the reference device (budget.reference_seconds, at most MAX_AUTO_SECONDS), so its
    start-up transient weighs in the rate as much as in an experiment's; at least 2 s."""
    return max(2.0, min(float(cfg["budget"]["reference_seconds"]), MAX_AUTO_SECONDS) / windows)


def quality_problems(cal: dict, ccfg: dict) -> str:
    """'' when the measurement meets the bar, else what is wrong with it."""
    problems = []
    if cal["cv"] > ccfg["max_cv"]:
        problems.append(f"throughput CV {100 * cal['cv']:.1f}% > calibrate.max_cv={ccfg['max_cv']:g}")
    if cal.get("load_warning"):
        problems.append(cal["load_warning"])
    return "; ".join(problems)


class TooFewBatches(CalibrationError):
    """The baseline's run timed too few batches for the windows asked for."""


MIN_REQUESTS_PER_WINDOW = 3


def sized_seconds(cfg: dict, windows: int, seconds: float, step_tokens: float, tokens_per_s: float) -> float:
    """The baseline's training seconds: `seconds`, or longer where a step is slow, so that
    every window holds MIN_REQUESTS_PER_WINDOW batch requests with room to spare (1.5x)."""
    from harness.limits import requests_per_step

    if tokens_per_s <= 0:
        return seconds
    per_request = step_tokens / tokens_per_s / requests_per_step(cfg)
    return max(seconds, 1.5 * (windows * MIN_REQUESTS_PER_WINDOW + 2) * per_request)


def _measure(cfg: dict, bk, log, stretch: float = 1.0) -> dict:
    """The workload's figures (matmul, bandwidth, probe noise, FLOPs rule), then the
    throughput and start-up of the frozen baseline trained as an experiment trains it."""
    workdir.ensure_prepared(cfg["data"], log, who="calibrate")
    ccfg = cfg["calibrate"]
    with tempfile.TemporaryDirectory(prefix="autoresearch-calibrate-") as tmp:
        tmp = Path(tmp)
        settings = {"data": cfg["data"], "model": cfg["model"], "budget": {"mode": "wall", "seconds": 1.0}}
        (tmp / "run_config.json").write_text(json.dumps(settings))
        env = proc.child_env(bk.NAME, cfg["backend"].get("threads"), tmp / "run_config.json", kernels="auto")
        # one short in-process window: its tokens/s is kept for reference only
        env["AUTORESEARCH_CALIBRATE"] = json.dumps({**ccfg, "repeats": 1, "window_seconds": 1.0})
        env["AUTORESEARCH_SPAWN"] = repr(time.monotonic())
        monitor = LoadMonitor(bk.NAME)
        limit = float(ccfg["timeout_seconds"])
        res = proc.run([sys.executable, "-m", "harness.workload", str(tmp / "out.json")], cwd=tmp, env=env,
                       limit=limit, log=tmp / "workload.log", echo=True, prefix="  ", on_start=monitor.start)
        load_notes = [monitor.stop()]
        if res.returncode != 0 or not (tmp / "out.json").exists():
            errors = [line.split("calibrate: error: ", 1)[1] for line in res.output.splitlines()
                      if "calibrate: error: " in line]
            if errors:
                raise CalibrationError(errors[-1])
            why = f"timed out after {limit:g} s (calibrate.timeout_seconds)" if res.timed_out else f"exit {res.returncode}"
            raise CalibrationError(f"calibration workload failed ({why}):\n" + "\n".join(res.output.splitlines()[-25:]))
        result = json.loads((tmp / "out.json").read_text())
    result.update(workload_tokens_per_s=result.pop("tokens_per_s"), workload_startup_seconds=result.pop("startup_seconds"))
    for key in ("tokens_per_s_windows", "cv"):
        result.pop(key, None)
    windows = max(2, int(ccfg["repeats"]))
    asked = stretch * windows * float(ccfg["window_seconds"] or window_seconds(cfg, windows))
    seconds = sized_seconds(cfg, windows, asked, float(result.get("step_tokens") or 0),
                            float(result["workload_tokens_per_s"]))
    if seconds > asked:
        log(f"calibrate: a step takes ~{float(result['step_tokens']) / result['workload_tokens_per_s']:.1f} s here: the "
            f"baseline trains {seconds:.0f} s ({windows} windows of at least {MIN_REQUESTS_PER_WINDOW} batches)")
    monitor = LoadMonitor(bk.NAME)
    try:
        # the evaluation's runners are not the monitored process: the window ends with the training
        result.update(throughput.measure(cfg, bk, seconds, windows, log=log, on_start=monitor.start,
                                         evaluate=True, on_trained=lambda: load_notes.append(monitor.stop())))
    except throughput.TooFewBatches as e:
        raise TooFewBatches(str(e)) from None
    except throughput.ThroughputError as e:
        raise CalibrationError(str(e)) from None
    finally:
        load_notes.append(monitor.stop())
    load_note = "; ".join(dict.fromkeys(n for n in load_notes if n))
    if load_note:
        log(f"calibrate: WARNING: {load_note}")
    result["load_warning"] = load_note
    return result


class LoadMonitor:
    """Detects other heavy work on the device during calibration, where the OS lets us.

    CPU: system-wide busy CPU time minus the workload's own (steal time included: a
    noisy neighbour on a VM counts). NVIDIA: other processes holding the GPU (NVML).
    """

    def __init__(self, backend: str, threshold_cores: float = 0.3):
        self.backend, self.threshold = backend, threshold_cores
        self.pid, self.own, self._stop = None, 0.0, threading.Event()

    @staticmethod
    def _busy() -> float:
        import psutil

        t = psutil.cpu_times()
        return sum(t) - t.idle - getattr(t, "iowait", 0.0)

    @staticmethod
    def _self_cpu() -> float:
        import psutil

        t = psutil.Process().cpu_times()
        return t.user + t.system

    def start(self, pid: int) -> None:
        self.pid, self.t0, self.busy0, self.self0 = pid, time.time(), self._busy(), self._self_cpu()
        self.others_gpu = self._gpu_others(pid) if self.backend in ("cuda", "rocm") else []
        threading.Thread(target=self._poll, daemon=True).start()

    def _poll(self) -> None:
        import psutil

        try:
            p = psutil.Process(self.pid)
            while not self._stop.wait(0.25):
                t = p.cpu_times()  # the child's own CPU seconds (it is gone once it exits)
                self.own = t.user + t.system + sum(c.user + c.system for c in p.children(recursive=True)
                                                   for c in [c.cpu_times()])
        except Exception:  # the process ended: keep the last reading
            return

    def stop(self) -> str:
        """What foreign load was seen from start() to the first stop() (later calls repeat it)."""
        self._stop.set()
        if self.pid is None:
            return ""
        if getattr(self, "_note", None) is None:
            self._note = self._measured()
        return self._note

    def _measured(self) -> str:
        elapsed = max(time.time() - self.t0, 1e-6)
        # the harness's own threads (the feed packing batches) are not foreign load either
        other = (self._busy() - self.busy0 - self.own - (self._self_cpu() - self.self0)) / elapsed
        notes = []
        if self.backend == "cpu" and other > self.threshold:
            notes.append(f"other processes used ~{other:.1f} CPU cores during calibration")
        if getattr(self, "others_gpu", None):
            notes.append(f"other processes were using the GPU: {self.others_gpu}")
        return "; ".join(notes)

    @staticmethod
    def _gpu_others(own_pid: int) -> list:
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(int(os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]))
            return [p.pid for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle) if p.pid != own_pid]
        except Exception:  # no NVML (ROCm, no driver): nothing to say
            return []


def keep(cal: dict, ccfg: dict) -> dict:
    """Save `cal` in the cache (cal["path"]) and, with calibrate.out, there too."""
    calibration_store.save(Path(cal["path"]), cal)
    return _copy_out(cal, ccfg)


def _copy_out(cal: dict, ccfg: dict) -> dict:
    """A copy of `cal` at calibrate.out, when set."""
    if ccfg.get("out"):
        calibration_store.save(Path(ccfg["out"]).expanduser(), cal)
    return cal


def _age(cal: dict) -> str:
    s = time.time() - cal["created"]
    return f"{s / 3600:.1f} h" if s > 3600 else f"{s / 60:.0f} min" if s > 60 else f"{s:.0f} s"


def table(cal: dict) -> str:
    """The human-readable device benchmark table."""
    fp = cal["fingerprint"]
    dt = fp.get("compute_dtype", fp.get("dtype", "?"))
    threads = f", {fp['threads']} threads" if "threads" in fp else ""
    pct = lambda v: "n/a" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    rows = [
        ("device", f"{cal['backend']} | {cal['device']}{threads} | {dt} | model={cal['preset']}"),
        (f"matmul ({dt})", f"{cal['matmul_flops_per_s'] / 1e9:,.1f} GFLOP/s (best of {len(cal['matmul_by_shape'])} shapes)"),
        ("copy bandwidth", f"{cal['bandwidth_bytes_per_s'] / 1e9:,.1f} GB/s"),
        ("baseline throughput", f"{cal['tokens_per_s']:,.0f} tokens/s (trained as an experiment; CV "
                                f"{100 * cal['cv']:.1f}% over {len(cal['tokens_per_s_windows'])} windows)"),
        ("MFU (datasheet peak)", pct(cal["mfu_datasheet"])),
        ("MFU (measured matmul)", pct(cal["mfu_measured_peak"])),
        ("peak memory", f"{cal['peak_memory_mb']:,.0f} MB"),
        ("start-up", f"{cal['startup_seconds']:.1f} s to the start of the training clock (experiments may take "
                     f"1.5x + 1 s)"),
        ("probe noise", f"{cal['probe_noise']:.3g} nats (the causality probe allows 10x, at least a dtype floor)"),
    ]
    if cal.get("eval_timing"):
        s, p = cal["eval_timing"]["scored"], cal["eval_timing"]["probe"]
        rows.append(("evaluation", f"scored runner {s['startup']:.1f} s + {s['forward']:.1f} s for {s['tokens']:,} "
                                   f"tokens, probe runner {p['startup']:.1f} s + {p['forward']:.1f} s (runners may take "
                                   f"eval.bound_factor x, scaled by model size, + eval.bound_slack_seconds)"))
    if cal.get("noise"):
        n = cal["noise"]
        rows.append(("noise floor", f"val_bpb {n['mean']:.4f} ± {n['std']:.4f} (std of {n['runs']} runs)"))
    rows.append(("quality", cal.get("quality", "ok")))
    rows += [("calibration id", cal["id"]), ("created", cal["created_iso"]), ("saved", cal["path"])]
    return "\n".join(f"  {k:<22}{v}" for k, v in rows)
