"""Calibration times the frozen baseline's own training step, and the frozen baseline is the
baseline train.py: what calibration measures is what an experiment of the baseline trains.

No data cache and no subprocess: the baseline's own step runs on random tokens, on
whatever device the backend picks (the CPU here), with a model smaller than any preset (the
tiny preset's takes seconds a step on two busy cores; the step's code is the same).
"""
import ast
import sys
from pathlib import Path

import pytest
import torch

from harness.definitions import load_definitions

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "trainer" / "train.py"
BASELINE = ROOT / "harness" / "baseline_train.py"
WORKLOAD = ROOT / "harness" / "workload.py"


def _after_docstring(path: Path) -> str:
    source = path.read_text()
    first = ast.parse(source).body[0]
    assert isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant), f"{path.name}: no docstring"
    return "".join(source.splitlines(keepends=True)[first.end_lineno:])


def test_the_frozen_baseline_is_train_py_apart_from_its_docstring():
    # A difference means one of them was edited alone: the baseline now trains (or times)
    # something else than the experiments it calibrates. Change both, and accept that the
    # cached calibrations are invalidated (the workload's version hashes the frozen file).
    assert _after_docstring(BASELINE) == _after_docstring(TRAIN)


def test_the_workload_has_no_training_step_of_its_own():
    tree = ast.parse(WORKLOAD.read_text())
    called = [n.func for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)]
    names = {f.attr for f in called}
    assert not names & {"backward", "zero_grad", "step"}, "the workload steps the model itself"
    steps = [f for f in called if f.attr == "train_step"]
    assert steps and all(isinstance(f.value, ast.Name) and f.value.id == "base" for f in steps)
    # ... and `base` is the frozen baseline, loaded as definitions
    loads = [n for n in ast.walk(tree) if isinstance(n, ast.Assign) and isinstance(n.value, ast.Call)
             and getattr(n.value.func, "id", None) == "load_definitions"]
    assert [(t.id, n.value.args[0].id) for n in loads for t in n.targets] == [("base", "BASELINE")]


@pytest.fixture()
def baseline(monkeypatch):
    import trainer.prepare as prepare

    monkeypatch.setitem(sys.modules, "prepare", prepare)  # the frozen file imports `prepare`
    name = "test_workload_baseline"
    try:
        yield load_definitions(BASELINE, name=name)
    finally:
        sys.modules.pop(name, None)


def test_the_baseline_step_trains_one_step(baseline):
    import backends

    base, bk = baseline, backends.current()
    V, B, T = 128, 2, 32
    torch.manual_seed(0)
    with torch.device(bk.device()):
        model = base.GPT(base.GPTConfig(sequence_len=T, vocab_size=V, n_layer=2, n_embd=64, head_dim=32))
    optimizers = base.build_optimizers(model)
    taken = []

    def batches(n):
        g = torch.Generator().manual_seed(1)
        for _ in range(n):
            taken.append(1)
            x = torch.randint(0, V, (B, T + 1), generator=g).to(bk.device())
            yield x[:, :-1], x[:, 1:], 7

    def before_update():  # after every batch of the step, before any optimizer moved
        seen.append((len(taken), all(p.grad is not None for p in model.parameters())))

    before = [p.detach().clone() for p in model.parameters()]
    seen = []
    loss, epoch, ended = base.train_step(model, model, optimizers, bk.grad_scaler(), batches(2), 2, bk,
                                         before_update)
    assert seen == [(2, True)] and len(taken) == 2 and epoch == 7 and not ended
    assert abs(loss - torch.log(torch.tensor(float(V))).item()) < 0.5  # near-uniform at init
    assert all(p.grad is None for p in model.parameters())
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    # a loader that runs out mid-step: the step is finished with what was accumulated
    taken.clear()
    assert base.train_step(model, model, optimizers, None, batches(1), 2, bk)[2] is True
    assert len(taken) == 1
    # none left at all: nothing is stepped
    after = [p.detach().clone() for p in model.parameters()]
    assert base.train_step(model, model, optimizers, None, iter(()), 2, bk) is None
    assert all(torch.equal(a, p) for a, p in zip(after, model.parameters()))
