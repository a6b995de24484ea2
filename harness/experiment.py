"""`autoresearch experiment`: run train.py once under a budget; the harness owns val_bpb.

    autoresearch experiment backend=cpu model=tiny budget.seconds=30
    autoresearch experiment train_file=path/to/train.py

1. The run directory gets a copy of train.py, a `prepare.py` alias of the immutable
   module (so upstream-style `import prepare` works) and run_config.json.
2. Immutable files are hashed (harness/guard.py).
3. train.py runs in a child process, killed at budget + allowance; its
   `evaluate_bpb(...)` hands the trained model over instead of scoring it.
4. A second child (harness/evaluate.py) rebuilds the model from a fresh copy of
   train.py, checks causality and integrity, and computes val_bpb with reference kernels.
5. The hashes are checked again; a changed immutable file is restored and refused.
The summary block is printed and written to RUN_DIR/summary.json (atomically).
"""
from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from pathlib import Path

import backends
from harness import budget as budget_mod
from harness import proc, summary
from harness.guard import ROOT, Guard
from trainer import atomic

# Exit codes of `autoresearch experiment`, one per status.
EXIT_CODES = {"ok": 0, "crash": 3, "nan": 4, "timeout": 5, "refused": 6, "interrupted": 130}
PREPARE_ALIAS = '''"""Run-directory alias of trainer/prepare.py (immutable), so `import prepare` works."""
import sys

import trainer.prepare

sys.modules[__name__] = trainer.prepare
'''
SUMMARY_FILE = "summary.json"
NAN_PATTERN = re.compile(r"\bnan\b|\binf\b", re.IGNORECASE)


def allowance(budget: dict) -> float:
    """Seconds past the training budget before the hard kill (start-up, compile, handover)."""
    if budget.get("allowance_seconds") is not None:
        return float(budget["allowance_seconds"])
    return max(60.0, 0.5 * float(budget["seconds"]))


def child_env(backend: str, threads, run_config: Path, model_out: Path, first_paths: list[Path] = ()) -> dict:
    env = dict(os.environ)
    env.update({
        backends.ENV_BACKEND: backend,
        "AUTORESEARCH_RUN_CONFIG": str(run_config),
        "AUTORESEARCH_MODEL_OUT": str(model_out),
        "PYTHONPATH": os.pathsep.join([str(p) for p in first_paths] + [str(ROOT)]
                                      + [p for p in [env.get("PYTHONPATH")] if p]),
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",  # any new .pyc in the project is then a planted one
    })
    if threads:
        env[backends.ENV_THREADS] = str(threads)
    return env


def _write_workdir(d: Path, train_src: str, settings: dict) -> None:
    d.mkdir(parents=True, exist_ok=True)
    (d / "train.py").write_text(train_src)
    (d / "prepare.py").write_text(PREPARE_ALIAS)
    (d / "run_config.json").write_text(json.dumps(settings, indent=2))


def resolve_budget(cfg: dict, own_calibration: dict | None = None) -> budget_mod.Budget:
    """The run's budget; calibrates this device first when the mode needs it and no valid
    calibration is cached (and says so)."""
    if own_calibration is None and budget_mod.needs_calibration(cfg):
        from harness import calibration

        own_calibration = calibration.calibrate(cfg, log=lambda m: print(m, flush=True))
    return budget_mod.resolve(cfg, own_calibration)


def _kernels_overlay(run_dir: Path, kernels_dir: Path) -> Path:
    """A folder whose `kernels` is the campaign's edited copy, put first on the training
    child's path (scope=kernels). The evaluator never sees it: it uses the references."""
    overlay = run_dir / "overlay"
    overlay.mkdir(parents=True, exist_ok=True)
    (overlay / "kernels").symlink_to(kernels_dir.resolve(), target_is_directory=True)
    return overlay


def run(cfg: dict, run_dir: Path, own_calibration: dict | None = None, kernels_dir: Path | None = None,
        announce: bool = True) -> dict:
    """Run one experiment; return its summary (also written to run_dir/summary.json)."""
    t_start = time.time()
    bk = backends.activate(cfg["backend"]["name"], cfg["backend"].get("threads"))
    train_path = Path(cfg["train_file"]).expanduser() if cfg.get("train_file") else ROOT / "trainer" / "train.py"
    if not train_path.is_file():
        raise FileNotFoundError(f"train_file={train_path}: no such file")
    train_src = train_path.read_text()
    ensure_prepared(cfg["data"])
    budget = resolve_budget(cfg, own_calibration)
    say = (lambda msg: print(msg, flush=True)) if announce else (lambda msg: None)
    say(f"budget: {budget.reason}")
    settings = {"data": cfg["data"], "model": cfg["model"], "budget": budget.settings(),
                "backend": {"name": bk.NAME, "threads": cfg["backend"].get("threads")}}
    work, ev = run_dir / "train", run_dir / "eval"
    _write_workdir(work, train_src, settings)
    guard = Guard(extra=[work / "prepare.py", work / "run_config.json"]).take()
    model_out = run_dir / "model.pt"
    overlay = [_kernels_overlay(run_dir, kernels_dir)] if kernels_dir is not None else []
    env = child_env(bk.NAME, cfg["backend"].get("threads"), work / "run_config.json", model_out, overlay)
    echo = not cfg.get("quiet", False)
    out = {"status": "ok", "reason": "", "budget_mode": budget.mode, "budget_seconds": budget.seconds,
           "backend": bk.NAME, "device": bk.device_name(), "run_dir": str(run_dir)}
    if budget.tokens:
        out["budget_tokens"] = budget.tokens
    if budget.flops:
        out["budget_flops"] = budget.flops
    out["budget_reason"] = budget.reason
    # tokens/flops budgets are estimates in seconds: the hard limit leaves room for a slow run
    slack = 1.5 if budget.mode in ("tokens", "flops") else 1.0
    limit = budget.seconds * slack + allowance({**cfg["budget"], "seconds": budget.seconds})
    say(f"experiment: {train_path} on {bk.NAME} ({out['device']}), model={cfg['model']['name']}, "
        f"data={cfg['data']['name']}, budget {budget.seconds:.1f} s ({budget.mode}), hard limit {limit:.0f} s")
    try:
        res = proc.run([sys.executable, "train.py"], cwd=work, env=env, limit=limit,
                       log=run_dir / "train.log", echo=echo, prefix="  | ")
        out.update({k: v for k, v in summary.parse(res.output).items() if k != "val_bpb"})
        out.update(_train_status(res, model_out, limit))
        out["train_process_seconds"] = res.seconds
        if out["status"] == "ok":
            # A fresh copy of train.py (the one in `work` may have been rewritten by the run).
            _write_workdir(ev, train_src, settings)
            env_eval = child_env(bk.NAME, cfg["backend"].get("threads"), ev / "run_config.json", model_out)
            env_eval["AUTORESEARCH_KERNELS"] = "reference"
            env_eval["AUTORESEARCH_CAUSALITY"] = "1" if cfg["eval"]["causality_check"] else "0"
            (ev / "model.pt").unlink(missing_ok=True)
            os.replace(model_out, ev / "model.pt")
            say("experiment: evaluating (separate process, reference kernels) ...")
            res_e = proc.run([sys.executable, "-m", "harness.evaluate", str(ev)], cwd=ev, env=env_eval,
                             limit=float(cfg["eval"]["timeout_seconds"]), log=run_dir / "eval.log", echo=False)
            out.update(_eval_status(res_e, ev))
            out["eval_process_seconds"] = res_e.seconds
            (ev / "model.pt").unlink(missing_ok=True)
    except KeyboardInterrupt:
        out.update(status="interrupted", reason="interrupted by the user")
    finally:
        changed = guard.violations()
        if changed:
            kept = guard.restore(backup=run_dir / "tampered")
            out.update(status="refused", val_bpb=None,
                       reason=f"immutable files were modified (restored; the modified copies are in {kept}): "
                              + "; ".join(changed[:5]))
        model_out.unlink(missing_ok=True)
        out["total_seconds"] = time.time() - t_start
        out.setdefault("val_bpb", None)
        atomic.write_json(run_dir / SUMMARY_FILE, out)
    return out


def _train_status(res: proc.ChildResult, model_out: Path, limit: float) -> dict:
    tail = "\n".join(res.output.splitlines()[-30:])
    if res.timed_out:
        return {"status": "timeout", "reason": f"train.py ran past the hard limit of {limit:.0f} s and was killed",
                "log_tail": tail}
    if res.returncode != 0:
        nan = any(NAN_PATTERN.search(line) and ("loss" in line.lower() or "fail" in line.lower())
                  for line in res.output.splitlines()[-20:])
        status = "nan" if nan else "crash"
        return {"status": status, "reason": f"train.py exited with code {res.returncode}", "log_tail": tail}
    if not model_out.exists():
        return {"status": "crash", "log_tail": tail,
                "reason": "train.py finished without handing over its model: it must call "
                          "evaluate_bpb(model, tokenizer, batch_size) from prepare"}
    return {}


def _eval_status(res: proc.ChildResult, ev: Path) -> dict:
    path = ev / "eval.json"
    if res.timed_out or not path.exists():
        why = "timed out" if res.timed_out else f"exited with code {res.returncode} without a result"
        return {"status": "timeout" if res.timed_out else "crash", "reason": f"evaluation {why}",
                "log_tail": "\n".join(res.output.splitlines()[-30:])}
    result = json.loads(path.read_text())
    out = {"status": result["status"], "val_bpb": result.get("val_bpb"), "eval_seconds": result.get("eval_seconds")}
    if result.get("reason"):
        out["reason"] = result["reason"]
    if result["status"] == "crash":
        out["log_tail"] = "\n".join(res.output.splitlines()[-30:])
    return out


def ensure_prepared(data: dict) -> None:
    """Prepare the data and tokenizer on first use (cached afterwards)."""
    from trainer import prepare as P
    from trainer import tokenizer as bpe

    try:
        P.split_files("train", data)
        P.split_files("val", data)
        ready = (P.tokenizer_dir(data) / bpe.ENCODING_FILE).exists()
    except FileNotFoundError:
        ready = False
    if not ready:
        print(f"experiment: data={data['name']} is not prepared yet; preparing it now", flush=True)
        P.prepare(data)


def report(out: dict) -> int:
    """Print the outcome; return the verb's exit code."""
    if out["status"] != "ok":
        if out.get("log_tail"):
            print("---- log tail ----\n" + out["log_tail"], file=sys.stderr)
        print(f"experiment: {out['status'].upper()}: {out.get('reason', '')}", file=sys.stderr)
    v = out.get("val_bpb")
    out_print = {k: v for k, v in out.items() if k not in ("reason", "log_tail")}
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        out_print.pop("val_bpb", None)  # no val_bpb line: the contract's mark of a failed run
    print(summary.format_block(out_print), flush=True)
    print(f"experiment: summary written to {Path(out['run_dir']) / SUMMARY_FILE}", flush=True)
    return EXIT_CODES.get(out["status"], 1)
