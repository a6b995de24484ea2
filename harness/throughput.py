"""Calibration's throughput: the frozen baseline, trained exactly as an experiment trains.

    result = throughput.measure(cfg, bk, seconds=10, windows=5, log=print)

A device's tokens/s sets every normalized budget, so it is measured on the real thing:
harness/baseline_train.py runs as train.py in its sandbox, in its own process, fed and
timed by the harness's feed (harness/training.py), for `seconds` of training after its
warm-up, with the same batch, the same code path and the same start-up as an
experiment of the baseline. A separate timing loop drifts from that: it tokenized the
data in the timed process, which an experiment's feed does beside it, and it timed
windows of whole steps, where a step cut by a window's edge is lost.

Figures, all from the feed's request times (one request per micro-batch):
- tokens_per_s: tokens served between the first and the last timed request, over the
  seconds between them (no window edges);
- tokens_per_s_windows and cv: the same rate over `windows` equal runs of consecutive
  requests, and their spread;
- startup_seconds: from the start of train.py to the start of the training clock.
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from backends._common import dtype_name
from harness import evaluation, isolation, limits, proc, training, workdir
from harness.budget import Budget
from harness.feed import Feed
from harness.workload import BASELINE

# Seconds train.py may take to reach its warm-up: the baseline's start-up is what is being
# measured, so only a limit against a hung start.
STARTUP_LIMIT = 300.0


class ThroughputError(RuntimeError):
    pass


class TooFewBatches(ThroughputError):
    pass


def measure(cfg: dict, bk, seconds: float, windows: int, log=print, on_start=None, evaluate: bool = False,
            on_trained=None) -> dict:
    """Train the frozen baseline for `seconds` as an experiment would; return its rates
    (and, with `evaluate`, how long each model runner of its evaluation took)."""
    data = workdir.absolute_data(cfg["data"])
    iso = isolation.choose(cfg, bk, log=log)
    budget = Budget("wall", float(seconds), reason="calibration: the frozen baseline's throughput")
    settings = {"data": data, "model": cfg["model"], "budget": budget.settings(),
                "backend": {"name": bk.NAME, "threads": cfg["backend"].get("threads")}}
    with tempfile.TemporaryDirectory(prefix="autoresearch-throughput-") as tmp:
        scratch, handover = Path(tmp) / "train", Path(tmp) / "handover"
        workdir.write(scratch, BASELINE.read_text(), settings)
        workdir.write(handover, BASELINE.read_text(), settings, alias=False)  # what the runners read
        feed = Feed(data, budget, warmup_tokens=limits.warmup_tokens(cfg), allowance=STARTUP_LIMIT,
                    grace=max(2.0, 0.1 * seconds), first_rows=int(cfg["model"]["device_batch_size"]), keep_times=True,
                    requests_per_step=limits.requests_per_step(cfg))
        try:
            # the project's kernels as shipped, whatever kernels.mode an experiment asks for: a
            # device's throughput must not depend on a user's setting
            env = {**proc.child_env(bk.NAME, cfg["backend"].get("threads"), scratch / "run_config.json",
                                    scratch / training.HANDOVER_FILE, kernels="auto"), **iso.env(scratch)}
            cmd = iso.wrap([sys.executable, "train.py"], iso.training_policy(scratch))
            log(f"calibrate: training the frozen baseline for {seconds:g} s as an experiment would "
                f"(isolation {iso.label}) ...")
            t0 = time.monotonic()
            out = training.run(cmd, scratch=scratch, handover=handover, env=env, feed=feed,
                               log=Path(tmp) / "train.log", echo=False, backend=bk.NAME, on_start=on_start)
            if out.status == "interrupted":  # Ctrl-C or SIGTERM: the command stops, nothing is saved
                raise KeyboardInterrupt
            if out.status != "ok":
                raise ThroughputError(f"the frozen baseline's training run failed ({out.status}: {out.reason}):\n"
                                      + out.log_tail)
            result = rates(feed.request_times, windows)
            result.update(startup_seconds=out.fields["startup_seconds"], isolation=iso.label,
                          train_run_seconds=time.monotonic() - t0,
                          peak_memory_mb_training=out.fields["peak_memory_mb"])
            if on_trained is not None:
                on_trained()
            if evaluate:
                result["eval_timing"], result["eval_probe_diff"] = _evaluate(cfg, bk, iso, data, Path(tmp), handover, log)
        finally:
            feed.close()
    log(f"calibrate: frozen baseline, trained as an experiment: {result['tokens_per_s']:,.0f} tokens/s over "
        f"{result['timed_requests']} batches (CV {100 * result['cv']:.1f}% over {windows} windows), start-up "
        f"{result['startup_seconds']:.1f} s")
    return result


def _evaluate(cfg: dict, bk, iso, data: dict, tmp: Path, handover: Path, log) -> dict:
    """Evaluate the baseline as an experiment does, probe included; (each runner's start-up
    and forward seconds: the bound of every later evaluation on this device, the largest
    change its own probe saw: the real batching noise of the runner's kernels, which the
    probe's tolerance must allow)."""
    ecfg = {**cfg, "data": data}
    floor = limits.TOLERANCE_FLOOR.get(dtype_name(bk.compute_dtype()), 2e-3)
    probes = max(1, int(cfg["eval"]["probe_batches"]))
    spec = evaluation.spec(ecfg, probes, float("inf"), "calibration: timed only", None)
    log("calibrate: evaluating the frozen baseline as an experiment would (its runners' times bound every "
        "later evaluation) ...")
    res = evaluation.run(ecfg, bk.NAME, iso, spec, tmp, handover)
    if res["status"] != "ok":
        raise ThroughputError(f"the frozen baseline's evaluation failed ({res['status']}: {res.get('reason')}):\n"
                              + res.get("log_tail", ""))
    timing = {role: {k: t[k] for k in ("startup", "forward", "tokens")} for role, t in res["eval_timing"].items()}
    worst = res["probe"]["max_diff"]
    if not worst <= floor:
        log(f"calibrate: the frozen baseline's own probe moved a log-probability by {worst:.3g} nats "
            f"(above the {floor:g} floor): the probe's tolerance allows 10x that")
    s, p = timing["scored"], timing["probe"]
    log(f"calibrate: frozen baseline's evaluation: scored runner {s['startup']:.1f} s start-up + {s['forward']:.1f} s "
        f"for {s['tokens']:,} tokens; probe runner {p['startup']:.1f} s + {p['forward']:.1f} s")
    return timing, float(worst)


def rates(times: list[tuple[float, int]], windows: int) -> dict:
    """Throughput from (request time, tokens) pairs of the timed part of a run: each
    request's tokens are trained before the next request, so the rate between the first
    and last request is the tokens of all requests but the last over that span."""
    if len(times) < max(windows, 1) + 1:
        raise TooFewBatches(f"only {len(times)} batches were timed: too few for {windows} windows "
                            f"(longer windows: calibrate.window_seconds)")
    span = times[-1][0] - times[0][0]
    overall = sum(n for _, n in times[:-1]) / span
    per = []
    k = (len(times) - 1) // windows
    for w in range(windows):
        chunk = times[w * k: (w + 1) * k + 1]
        per.append(sum(n for _, n in chunk[:-1]) / (chunk[-1][0] - chunk[0][0]))
    cv = statistics.pstdev(per) / statistics.mean(per) if len(per) > 1 else 0.0
    return {"tokens_per_s": overall, "tokens_per_s_windows": per, "cv": cv, "timed_requests": len(times),
            "timed_seconds": span}
