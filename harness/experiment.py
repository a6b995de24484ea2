"""`autoresearch experiment`: run train.py once under a budget; the harness owns val_bpb.

    autoresearch experiment backend=cpu model=tiny budget.mode=wall budget.seconds=30
    autoresearch experiment train_file=path/to/train.py

The CLI decides the budget first (harness/budgeting.py: calibrates when needed) and
hands it to `run`; a campaign hands it the budget fixed when it started.
1. The run directory gets `train/` (train.py's scratch: a copy of train.py, a
   `prepare.py` alias of the immutable module and run_config.json) and `handover/`
   (a second copy of train.py and the config, which the model runners read).
2. Immutable files are hashed (harness/guard.py).
3. train.py runs sandboxed (harness/isolation.py), fed and timed by the harness
   (harness/training.py, harness/feed.py); its `evaluate_bpb(...)` saves the model and
   hands over; its whole process tree is killed at once.
4. The scorer (harness/score.py, in this process) computes val_bpb from logits that
   sandboxed runners return, and decides causality with a fresh runner.
5. The hashes are checked again; an immutable file whose contents, mode or extended
   attributes changed is restored and the result refused.
The summary block is printed and written to RUN_DIR/summary.json (atomically); every
field in it is the harness's own; train.py's own `---` block is kept under `train`.
"""
from __future__ import annotations

import math
import shutil
import sys
import time
from pathlib import Path

import backends
from harness import budget as budget_mod
from harness import evaluation, isolation, limits, proc, stops, summary, training, workdir
from harness import runner as runner_mod
from harness.feed import Feed
from harness.guard import ROOT, Guard
from trainer import atomic

# Exit codes of `autoresearch experiment`, one per status.
EXIT_CODES = {"ok": 0, "crash": 3, "nan": 4, "timeout": 5, "refused": 6, "interrupted": 130}
SUMMARY_FILE = "summary.json"


def run(cfg: dict, run_dir: Path, budget: budget_mod.Budget, own_calibration: dict | None = None,
        kernels_dir: Path | None = None, announce: bool = True) -> dict:
    """Run one experiment under `budget` (harness/budgeting.py decides it; a campaign's is
    fixed when it starts); return its summary (also written to run_dir/summary.json).
    `own_calibration`: this device's, where the start-up allowance and the probe's
    tolerance come from (None: both must be set in cfg)."""
    t_start = time.monotonic()
    cfg = {**cfg, "data": workdir.absolute_data(cfg["data"])}
    bk = backends.activate(cfg["backend"]["name"], cfg["backend"].get("threads"), cfg["backend"].get("device"))
    train_path = Path(cfg["train_file"]).expanduser() if cfg.get("train_file") else ROOT / "trainer" / "train.py"
    if not train_path.is_file():
        raise FileNotFoundError(f"train_file={train_path}: no such file")
    train_src = train_path.read_text()
    workdir.ensure_prepared(cfg["data"])
    cal = own_calibration
    say = (lambda msg: print(msg, flush=True)) if announce else (lambda msg: None)
    iso = isolation.choose(cfg, bk, log=lambda m: print(m, flush=True))
    lim = limits.resolve(cfg, cal, budget, _dtype_name(bk))
    say(f"budget: {budget.reason}")
    settings = {"data": cfg["data"], "model": cfg["model"], "budget": budget.settings(),
                "backend": {"name": bk.NAME, "threads": cfg["backend"].get("threads")}}
    scratch, handover = run_dir / "train", run_dir / "handover"
    workdir.write(scratch, train_src, settings)
    workdir.write(handover, train_src, settings, alias=False)
    guard = Guard(extra=[handover / "train.py", handover / "run_config.json",
                         *sorted(p for p in iso.tokenizer_dir.glob("*") if p.is_file())]).take()
    out = {"status": "ok", "reason": "", "budget_mode": budget.mode, "budget_seconds": budget.seconds,
           "backend": bk.NAME, "device": bk.device_name(), "run_dir": str(run_dir), "isolation": iso.label,
           "budget_reason": budget.reason, "allowance_seconds": lim.allowance, "allowance_source": lim.allowance_source,
           "warmup_tokens": lim.warmup_tokens}
    if cal is not None:  # which measurement the budget and the limits came from, and how good it was
        out.update(calibration_id=cal["id"], calibration_quality=cal.get("quality", "ok"),
                   calibration_cv=cal.get("cv"), calibration_tokens_per_s=cal.get("tokens_per_s"))
    if budget.tokens:
        out["budget_tokens"] = budget.tokens
    if budget.flops:
        out["budget_flops"] = budget.flops
    say(f"experiment: {train_path} on {bk.NAME} ({out['device']}), model={cfg['model']['name']}, "
        f"data={cfg['data']['name']}, budget {budget.seconds:.1f} s ({budget.mode}), start-up allowance "
        f"{lim.allowance:.1f} s, isolation {iso.label}")
    feed = Feed(cfg["data"], budget, warmup_tokens=lim.warmup_tokens, allowance=lim.allowance, grace=lim.grace,
                baseline_flops_per_token=(cal or {}).get("model_flops_per_token"),
                first_rows=int(cfg["model"]["device_batch_size"]), requests_per_step=limits.requests_per_step(cfg))
    try:
        overlay = [workdir.kernels_overlay(scratch, kernels_dir)] if kernels_dir is not None else []
        env = {**proc.child_env(bk.NAME, cfg["backend"].get("threads"), scratch / "run_config.json",
                                scratch / training.HANDOVER_FILE, overlay, kernels=cfg["kernels"]["mode"]),
               **iso.env(scratch)}
        cmd = iso.wrap([sys.executable, "train.py"], iso.training_policy(scratch, kernels_dir))
        t = training.run(cmd, scratch=scratch, handover=handover, env=env, feed=feed,
                         log=run_dir / "train.log", echo=not cfg.get("quiet", False), backend=bk.NAME)
        out.update(t.fields)
        out["train"] = t.reported  # train.py's own figures: its claims, never the harness's fields
        out.update(status=t.status, reason=t.reason)
        if t.status != "ok":
            out["log_tail"] = t.log_tail
        else:
            _account(out, t.model, handover / runner_mod.TRAIN_FILE, budget)
        if out["status"] == "ok":
            say("experiment: evaluating (sandboxed model runners; the metric stays in the harness) ...")
            out.update(_evaluate(cfg, bk, iso, lim, cal, run_dir, handover, out.get("model_flops_per_token"), say))
    except KeyboardInterrupt as e:
        out.update(status="interrupted", reason=stops.reason(e))
    except Exception as e:  # the harness's own failure (e.g. too small a validation split): said, and recorded
        out.update(status="crash", reason=f"harness error: {e}")
        raise
    finally:
        feed.close()
        changed = guard.violations()
        if changed:
            kept = guard.restore(backup=run_dir / "tampered")
            out.update(status="refused", val_bpb=None, tampered=changed,
                       reason=f"immutable files were tampered with (restored; every change is listed in "
                              f"{kept / 'changes.txt'}, the modified copies beside it): " + "; ".join(changed[:5]))
        (handover / training.HANDOVER_FILE).unlink(missing_ok=True)
        for d in [scratch, run_dir / "runner"]:
            shutil.rmtree(d, ignore_errors=True)
        out["total_seconds"] = time.monotonic() - t_start
        out.setdefault("val_bpb", None)
        atomic.write_json(run_dir / SUMMARY_FILE, out)
    return out


def _account(out: dict, model: Path, source: Path, budget: budget_mod.Budget) -> None:
    """The harness's figures from the handed-over file and train.py (the runners rebuild the
    model from both): the weights they can hold (harness/modelfile.py: one per floating-point
    element, half a weight per other byte), FLOPs per token (6 per weight), MFU; a flops
    budget is checked here."""
    from harness import modelfile

    try:
        facts = modelfile.inspect(model, source=source)
    except modelfile.ModelFileError as e:
        out.update(status="crash", reason=f"the handed-over model file is unreadable: {e}")
        return
    fpt = 6.0 * facts.num_weights
    out.update(num_params_M=facts.num_weights / 1e6, model_flops_per_token=fpt, model_weights={
        "float_elements": facts.num_float_elements, "other_bytes": facts.other_bytes,
        "source_bytes": facts.source_bytes, "parameters": facts.num_params})
    bk = backends.current()
    peak = bk.peak_flops(bk.compute_dtype())
    secs = out.get("training_seconds") or 0.0
    out["mfu_percent"] = 100 * fpt * out["timed_tokens"] / secs / peak if peak and secs > 0 else None
    if budget.mode == "flops" and budget.flops:
        used = fpt * out["total_tokens"]
        if used > budget.flops * 1.001:  # a rounding's worth of slack, no more
            out.update(status="refused", reason=(
                f"trained past the FLOP budget: {used:.3e} FLOPs (6 x {facts.num_weights:,} model weights: "
                f"{facts.num_float_elements:,} floating-point elements + half a weight per byte of the other "
                f"{facts.other_bytes:,} bytes of the model file and the {facts.source_bytes:,} of train.py; "
                f"x {out['total_tokens']:,} tokens) of {budget.flops:.3e}; declare the model's FLOPs per token "
                f"(prepare.model_flops_per_token(model)) through prepare.budget_progress(..., flops) so the "
                f"feed stops in time"))


def _evaluate(cfg: dict, bk, iso: isolation.Isolation, lim: limits.Limits, cal: dict | None, run_dir: Path,
              handover: Path, fpt: float | None, say) -> dict:
    bound = limits.eval_bound(cfg, cal, fpt)
    if bound is None:
        say(f"experiment: WARNING: no calibration times this device's evaluation: the runners are limited only by "
            f"eval.timeout_seconds={float(cfg['eval']['timeout_seconds']):g} (compute in a runner is bounded "
            f"loosely; set eval.runner_seconds or calibrate)")
    spec = evaluation.spec(cfg, lim.probe_batches, lim.tolerance, lim.tolerance_source, bound)
    res = evaluation.run(cfg, bk.NAME, iso, spec, run_dir, handover, say)
    if bound is None:
        res["eval_bound_source"] = f"none: only eval.timeout_seconds={float(cfg['eval']['timeout_seconds']):g}"
    return res


def _dtype_name(bk) -> str:
    from backends._common import dtype_name

    return dtype_name(bk.compute_dtype())


def report(out: dict) -> int:
    """Print the outcome; return the verb's exit code."""
    if out["status"] != "ok":
        if out.get("log_tail"):
            # prefixed like the live echo: no line of train.py's can pass for a summary line
            print("---- log tail ----\n" + summary.quoted(out["log_tail"]), file=sys.stderr)
        first, _, rest = str(out.get("reason", "")).partition("\n")  # a reason may quote the model's error
        print(f"experiment: {out['status'].upper()}: {summary.printable(first)}"
              + ("\n" + summary.quoted(rest) if rest else ""), file=sys.stderr)
    if out.get("isolation") == "none":
        print("experiment: WARNING: isolation: none: this result is not tamper-proof", file=sys.stderr)
    v = out.get("val_bpb")
    out_print = {k: v for k, v in out.items() if k not in ("reason", "log_tail", "train", "probe")}
    out_print.update({f"{summary.CLAIM}{k}": v for k, v in (out.get("train") or {}).items()})
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        out_print.pop("val_bpb", None)  # no val_bpb line: the contract's mark of a failed run
    tel = out.get("telemetry") or {}
    out_print.update({k: tel[k] for k in ("energy_j", "tokens_per_joule") if tel.get(k) is not None})
    for flag in tel.get("flags") or ():
        print(f"experiment: WARNING: {flag}", file=sys.stderr)
    print(summary.format_block(out_print), flush=True)
    print(f"experiment: summary written to {Path(out['run_dir']) / SUMMARY_FILE}", flush=True)
    if out["status"] == "interrupted":
        return stops.exit_code()  # 130 for Ctrl-C, 143 for SIGTERM
    return EXIT_CODES.get(out["status"], 1)
