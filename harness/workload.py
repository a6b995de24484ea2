"""Calibration's measurements, in a child process of `autoresearch calibrate`:

    python -m harness.workload OUT.json     (run config in $AUTORESEARCH_RUN_CONFIG)

- matmul FLOP/s in the compute dtype (a few shapes, best of several: the practical peak);
- memory bandwidth (device-to-device copy: bytes read + written per second);
- throughput of the frozen reference workload (harness/baseline_train.py: the baseline
  model and optimizer of the preset, real data, stepped by the file's own `train_step`),
  full training steps after warm-up, in `repeats` windows of about `window_seconds` each
  (calibration asks for one short window, kept for reference as workload_tokens_per_s:
  the calibrated throughput and start-up come from harness/throughput.py, the baseline
  trained as an experiment);
- its start-up: seconds from the harness starting this process to the end of the
  baseline's untimed warm-up steps (kept as workload_startup_seconds);
- its probe noise: the largest change of a target's log-probability when rows are
  batched with other rows and their suffixes replaced (what the causality probe does),
  on the trained baseline: zero for deterministic kernels;
- its FLOPs per token by the harness's rule: 6 x the weights its handed-over file and source
  can hold (one per floating-point element, half a weight per other byte: trainer/weights.py).
Progress lines go to stdout; the result is written atomically to OUT.json.
"""
from __future__ import annotations

import hashlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

import backends
import trainer.prepare as prepare
from harness import probe
from harness.definitions import load_definitions
from trainer import atomic

BASELINE = Path(__file__).resolve().parent / "baseline_train.py"


def workload_version() -> str:
    """Hash of the frozen workload, the baseline and the project's kernels it runs: a new
    baseline or a changed kernel invalidates old calibrations (throughput depends on both)."""
    h = hashlib.sha256(BASELINE.read_bytes())
    for path in sorted((BASELINE.parent.parent / "kernels").glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return "v1-" + h.hexdigest()[:10]


def _best_seconds(fn, reps: int, sync) -> float:
    best = float("inf")
    for _ in range(reps):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_flops(bk, gpu: bool) -> dict:
    dtype, dev = bk.compute_dtype(), bk.device()
    shapes = [(4096, 4096, 4096), (8192, 8192, 8192), (8192, 2048, 8192)] if gpu else \
        [(512, 512, 512), (1024, 1024, 1024), (2048, 512, 2048)]
    out = {}
    for m, k, n in shapes:
        a, b = torch.randn(m, k, device=dev, dtype=dtype), torch.randn(k, n, device=dev, dtype=dtype)
        a @ b  # warm-up (kernel selection, page faults)
        secs = _best_seconds(lambda: a @ b, 10 if gpu else 3, bk.synchronize)
        out[f"{m}x{k}x{n}"] = 2 * m * k * n / secs
    return {"flops_per_s": max(out.values()), "by_shape": out}


def bandwidth(bk, gpu: bool) -> float:
    n_bytes = (1 << 30) if gpu else (128 << 20)
    src = torch.empty(n_bytes // 4, dtype=torch.float32, device=bk.device()).uniform_()
    dst = torch.empty_like(src)
    dst.copy_(src)
    secs = _best_seconds(lambda: dst.copy_(src), 5, bk.synchronize)
    return 2 * n_bytes / secs  # each byte read once and written once


class TooSlow(RuntimeError):
    pass


def throughput(bk, repeats: int, window_seconds: float, warmup_steps: int, log,
               matmul_flops: float, max_step_seconds: float) -> dict:
    sys.modules.setdefault("prepare", prepare)  # the frozen file imports `prepare`
    base = load_definitions(BASELINE, name="autoresearch_baseline")
    torch.manual_seed(base.SEED)
    tokenizer = prepare.Tokenizer.from_directory()
    with torch.device(bk.device()):
        model = base.GPT(base.GPTConfig(vocab_size=tokenizer.get_vocab_size()))
    fpt = base.flops_per_token(model)
    ns_dtype = torch.bfloat16 if bk.compute_dtype() == torch.bfloat16 else torch.float32
    optimizers = base.build_optimizers(model, ns_dtype=ns_dtype)
    scaler = bk.grad_scaler()
    step_model = model
    if base.USE_COMPILE and bk.compile_available() and bk.NAME != "cpu":
        step_model = torch.compile(model, dynamic=False)
    B, T = base.DEVICE_BATCH_SIZE, base.MAX_SEQ_LEN
    accum = base.TOTAL_BATCH_SIZE // (B * T)
    # An optimistic estimate (half the measured matmul peak) before spending minutes on a
    # preset this device cannot train: the reference preset on a CPU is ~10 min a step.
    est = fpt * base.TOTAL_BATCH_SIZE / (0.5 * matmul_flops)
    if est > max_step_seconds:
        raise TooSlow(f"one training step of model={prepare.MODEL['name']} would take ~{est:,.0f} s here "
                      f"(>{max_step_seconds:g} s, calibrate.max_step_seconds): pick a smaller preset "
                      f"(model=tiny on a CPU)")
    loader = prepare.make_dataloader(tokenizer, B, T, "train")
    spawn = float(os.environ.get("AUTORESEARCH_SPAWN", time.monotonic()))

    def step():
        # The baseline's own step, the one its main() trains with (no copy here to drift from
        # it); without main's LR schedule, whose cost is a few assignments.
        if base.train_step(step_model, model, optimizers, scaler, loader, accum, bk) is None:
            raise RuntimeError("the training split ran out of batches while calibrating")

    startup = None
    for i in range(max(warmup_steps, base.WARMUP_STEPS_UNTIMED)):
        step()
        if i + 1 == base.WARMUP_STEPS_UNTIMED:
            bk.synchronize()
            startup = time.monotonic() - spawn
    log(f"calibrate: start-up to the end of {base.WARMUP_STEPS_UNTIMED} warm-up steps: {startup:.1f} s")
    rates = []
    for w in range(repeats):
        bk.synchronize()
        t0, steps = time.perf_counter(), 0
        while True:
            step()
            steps += 1
            bk.synchronize()
            if time.perf_counter() - t0 >= window_seconds:
                break
        rates.append(steps * base.TOTAL_BATCH_SIZE / (time.perf_counter() - t0))
        log(f"calibrate: throughput window {w + 1}/{repeats}: {rates[-1]:,.0f} tokens/s")
    med = statistics.median(rates)
    cv = statistics.pstdev(rates) / statistics.mean(rates) if len(rates) > 1 else 0.0
    noise = probe_noise(bk, model, loader)
    log(f"calibrate: probe noise (largest log-prob change, rows re-batched): {noise:.3g} nats")
    return {"tokens_per_s": med, "tokens_per_s_windows": rates, "cv": cv, "flops_per_token": fpt,
            "num_params": model.num_params()["total"], "step_tokens": base.TOTAL_BATCH_SIZE,
            "startup_seconds": startup, "probe_noise": noise,
            "model_flops_per_token": prepare.model_flops_per_token(model, source=BASELINE)}


@torch.no_grad()
def probe_noise(bk, model, loader, rounds: int = 4) -> float:
    """What the causality probe (harness/probe.py, the same code) sees from a causal model on
    this device: rows scored in their batch, then again next to rows of another batch with
    their suffixes replaced. nan if the model's outputs were."""
    model.eval()
    dev = bk.device()
    rng = np.random.default_rng(0)
    pool = np.flatnonzero(prepare.token_bytes_of() > 0)  # ordinary tokens, as the scorer draws them

    def lp(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        with bk.autocast():
            logits = model(torch.from_numpy(x).long().to(dev))
        return prepare.target_logprobs(logits, torch.from_numpy(y).long().to(dev)).cpu().numpy()

    worst = 0.0
    for _ in range(rounds):
        (x1, y1, _), (x2, y2, _) = next(loader), next(loader)
        x, y, B = torch.cat([x1, x2]).cpu().numpy(), torch.cat([y1, y2]).cpu().numpy(), x1.shape[0]
        scored = np.concatenate([lp(x[:B], y[:B]), lp(x[B:], y[B:])])
        for b in probe.make(x, B, 1, pool, rng):
            diff = probe.compare(scored, lp(b.ids, y[b.rows]), b).diff
            if not diff <= worst:  # nan wins too
                worst = diff
    model.train()
    return worst

def main(argv: list[str]) -> int:
    out = Path(argv[0])
    cal = json.loads(os.environ["AUTORESEARCH_CALIBRATE"])
    bk = backends.current()
    gpu = bk.NAME != "cpu"

    def log(msg):
        print(msg, flush=True)

    t0 = time.time()
    mm = matmul_flops(bk, gpu)
    log(f"calibrate: matmul {mm['flops_per_s'] / 1e9:,.1f} GFLOP/s ({bk.compute_dtype()})")
    bw = bandwidth(bk, gpu)
    log(f"calibrate: copy bandwidth {bw / 1e9:,.1f} GB/s")
    window = cal["window_seconds"] or 2.0
    try:
        tp = throughput(bk, cal["repeats"], window, cal["warmup_steps"], log, mm["flops_per_s"],
                        cal["max_step_seconds"])
    except TooSlow as e:
        log(f"calibrate: error: {e}")
        return 3
    peak = bk.peak_flops(bk.compute_dtype())
    achieved = tp["tokens_per_s"] * tp["flops_per_token"]
    result = {
        "matmul_flops_per_s": mm["flops_per_s"], "matmul_by_shape": mm["by_shape"],
        "bandwidth_bytes_per_s": bw, **tp,
        "datasheet_peak_flops": peak,
        "mfu_datasheet": achieved / peak if peak else None,
        "mfu_measured_peak": achieved / mm["flops_per_s"],
        "peak_memory_mb": bk.max_memory_allocated() / 2**20,
        "workload": workload_version(), "measure_seconds": time.time() - t0,
    }
    atomic.write_json(out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
