"""The evaluation process: rebuild the agent's model, check it, compute val_bpb.

    python -m harness.evaluate RUN_DIR     (started by the harness after training)

Runs in its own process with kernels forced to their references, after train.py has
exited, so nothing train.py did at run time is present here. What remains is the code
of train.py's model class, which runs here when the model is loaded and called; so:
- the modules the metric relies on are snapshotted before that code loads and checked
  after every forward call (a monkeypatch is refused before it can touch a loss);
- logits must be a plain torch.Tensor (no subclass overriding the loss arithmetic);
- the model must be causal: on one randomly chosen evaluation batch, tokens from a
  random position on are replaced and the logits before it must not move (beyond the
  model's own run-to-run noise on an unchanged input, which is zero for deterministic
  kernels).
Writes eval.json: {status: ok|refused|nan|crash, val_bpb, reason, eval_seconds}.
"""
from __future__ import annotations

import ast
import json
import math
import os
import pickle
import secrets
import sys
import time
import traceback
import types
from pathlib import Path

import torch

import backends
import kernels
import trainer.packing
import trainer.prepare as prepare
import trainer.sources
import trainer.tokenizer
from trainer import atomic

EVAL_FILE = "eval.json"
MODEL_FILE = "model.pt"


class Refused(Exception):
    """The model or its code broke the contract; the result is refused."""


# --------------------------------------------------------------------------- integrity

def _watched() -> list:
    import builtins
    import math as _math

    import numpy
    import torch.nn.functional as F

    mods = [builtins, _math, numpy, torch, F, torch.nn.modules.module, prepare, trainer.packing,
            trainer.sources, trainer.tokenizer, kernels, kernels.registry, kernels.reference,
            backends, sys.modules[__name__]]
    mods += [sys.modules[n] for n in list(sys.modules) if n.startswith("backends.")]
    return mods + [torch.Tensor, torch.nn.Module]


class Integrity:
    """Identity of every attribute of the metric's modules and classes, and a check."""

    def __init__(self):
        self.objs = _watched()
        self.base = [dict(vars(o)) for o in self.objs]
        self.kernel_mode = os.environ.get(kernels.ENV_MODE)

    def check(self) -> None:
        if os.environ.get(kernels.ENV_MODE) != self.kernel_mode:
            raise Refused(f"{kernels.ENV_MODE} was changed by the model's code")
        for obj, base in zip(self.objs, self.base):
            now = vars(obj)
            for key, value in base.items():
                if now.get(key, _MISSING) is not value and key not in _VOLATILE:
                    raise Refused(f"the model's code replaced {obj.__name__}.{key}")
            if len(now) != len(base):
                # New names are fine only as lazily imported submodules (torch does that).
                added = [k for k in now if k not in base and not isinstance(now[k], types.ModuleType)]
                if added:
                    raise Refused(f"the model's code added {obj.__name__}.{added[0]}")


_MISSING = object()
_VOLATILE = {"__warningregistry__", "_abc_impl"}  # legitimately rebound by Python itself


# --------------------------------------------------------------------------- loading

def load_definitions(path: Path, name: str = "train") -> types.ModuleType:
    """Import train.py's definitions without running its training.

    Keeps imports, function and class definitions, and simple name assignments (the
    UPPER_CASE constants and anything the classes read); drops loops, bare calls and
    `if __name__ == "__main__":` blocks, so an upstream-style script with top-level
    training code loads too.
    """
    tree = ast.parse(Path(path).read_text(), filename=str(path))
    keep = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    body = []
    for node in tree.body:
        if isinstance(node, keep):
            body.append(node)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if all(isinstance(t, ast.Name) for t in targets):
                body.append(node)
        elif isinstance(node, ast.Try) and all(isinstance(n, keep + (ast.Assign, ast.Pass)) for n in node.body):
            body.append(node)
    module = types.ModuleType(name)
    module.__file__ = str(path)
    sys.modules[name] = module
    exec(compile(ast.Module(body=body, type_ignores=[]), str(path), "exec"), module.__dict__)
    return module


class _Unpickler(pickle.Unpickler):
    """Classes pickled from a script live in `__main__`; here they live in `train`."""

    def find_class(self, module, name):
        return super().find_class("train" if module == "__main__" else module, name)


_pickle = types.SimpleNamespace(Unpickler=_Unpickler, load=pickle.load, __name__="pickle")


def load_model(run_dir: Path, device) -> torch.nn.Module:
    load_definitions(run_dir / "train.py")
    model = torch.load(run_dir / MODEL_FILE, map_location=device, weights_only=False, pickle_module=_pickle)
    if not isinstance(model, torch.nn.Module):
        raise Refused(f"model.pt holds a {type(model).__name__}, not a torch.nn.Module")
    return model.to(device).eval()


# --------------------------------------------------------------------------- checks

def causality(model, x: torch.Tensor, logits: torch.Tensor, autocast) -> None:
    """Replace tokens from a random position on; earlier logits must not change.

    A causal model's prefix logits come out bitwise identical (same kernels, same shapes,
    rows independent); the tolerance is the model's own run-to-run noise on an unchanged
    input (zero for deterministic kernels), so even a weak dependence on the future shows.
    """
    B, T = x.shape
    t0 = 1 + secrets.randbelow(T - 1) if T > 1 else 0
    x2 = x.clone()
    x2[:, t0:] = x.roll(1, dims=0)[:, t0:]  # other rows' real text: plausible, different
    if B == 1:
        x2[:, t0:] = (x[:, t0:] + 1) % prepare.VOCAB_SIZE

    def logits_of(inp):
        with autocast():
            out = model(inp)
        return (out[0] if isinstance(out, (tuple, list)) else out).float()

    ref = logits.float()
    noise = max((logits_of(x) - ref).abs().max().item() for _ in range(2))
    diff = (logits_of(x2)[:, :t0] - ref[:, :t0]).abs().max().item()
    tol = max(10 * noise, 1e-6 * max(1.0, ref.abs().max().item()))
    if not diff <= tol:  # also catches nan
        raise Refused(f"model is not causal: changing tokens from position {t0} on moved earlier "
                      f"logits by {diff:.3g} (tolerance {tol:.3g}: 10x its own run-to-run noise {noise:.3g})")


def evaluate(run_dir: Path) -> dict:
    bk = backends.current()  # before the snapshot: it imports the backend module
    integrity = Integrity()
    device = bk.device()
    batch = int(prepare.MODEL["device_batch_size"])
    model = load_model(run_dir, device)
    integrity.check()
    steps = max(1, prepare.EVAL_TOKENS // (batch * prepare.MAX_SEQ_LEN))
    probe = secrets.randbelow(steps)  # which batch gets the causality probe
    calls = [0]
    check_causality = os.environ.get("AUTORESEARCH_CAUSALITY", "1") == "1"

    def on_batch(x, logits):
        integrity.check()
        if type(logits) is not torch.Tensor:
            raise Refused(f"forward returned a {type(logits).__name__}, not a plain torch.Tensor")
        if check_causality and calls[0] == min(probe, steps - 1):
            causality(model, x, logits, bk.autocast)
            integrity.check()
        calls[0] += 1

    val_bpb = prepare.score_bpb(model, batch, device=device, on_batch=on_batch)
    integrity.check()
    if check_causality and calls[0] <= min(probe, steps - 1):  # the split ended first
        raise Refused("causality probe did not run")
    return {"val_bpb": val_bpb, "eval_batches": calls[0]}


def main(argv: list[str]) -> int:
    run_dir = Path(argv[0])
    os.environ[kernels.ENV_MODE] = "reference"  # the metric never depends on agent kernels
    t0 = time.time()
    try:
        with torch.no_grad():
            result = evaluate(run_dir)
        status = "ok" if math.isfinite(result["val_bpb"]) else "nan"
        result.update(status=status, reason="" if status == "ok" else "val_bpb is not finite")
    except Refused as e:
        result = {"status": "refused", "val_bpb": None, "reason": str(e)}
    except Exception as e:  # noqa: BLE001 - reported, not hidden
        traceback.print_exc()
        result = {"status": "crash", "val_bpb": None, "reason": f"evaluation failed: {type(e).__name__}: {e}"}
    result["eval_seconds"] = time.time() - t0
    atomic.write_json(run_dir / EVAL_FILE, result)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
