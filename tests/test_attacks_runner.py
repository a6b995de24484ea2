"""The adversarial suite, the evaluation's side: compute in a model runner (training at
its first forward or at load, spinning in a class body, dynamic evaluation) and traces
that a runner or train.py leaves for a later process in file metadata or files.

Compute in a runner ends `timeout` at the runner's bound, adaptation `refused` by the
causality probe (a fresh runner scores the same rows with the unadapted model), and no
trace is ever found by the next process: the probe runner, or the next experiment."""
import re

import pytest

from tests import attacks_runner as ar
from tests import conftest, fakes
from tests.test_attacks import NO_WARMUP, needs_sandbox

pytestmark = pytest.mark.slow
BOUND = "eval.runner_seconds=20"  # each runner's bound: an honest fake's takes a few seconds


def experiment(run_dir, train_file, *extra, **kw):
    return conftest.experiment(run_dir, train_file, NO_WARMUP, *extra, **kw)


@pytest.fixture(scope="module")
def honest(cache_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("honest")
    res, s = experiment(d / "run", fakes.write(d / "t.py"), BOUND)
    assert s["status"] == "ok", res.stdout + res.stderr
    return s


def test_an_honest_evaluation_is_timed_against_its_bound(honest):
    timing = honest["eval_timing"]
    assert set(timing) == {"scored", "probe"} and honest["eval_bound_source"] == "eval.runner_seconds=20"
    for role, t in timing.items():
        assert t["bound"] == pytest.approx(20.0) and 0 < t["startup"] + t["forward"] < 20.0, (role, t)
    assert timing["scored"]["tokens"] == honest["eval_tokens"]


@pytest.mark.parametrize("where", ["first forward", "load", "class body"])
def test_compute_in_a_runner_ends_at_its_bound(cache_dir, tmp_path, where):
    kw = {"first forward": dict(forward_extra=ar.TRAIN_AT_FIRST_FORWARD),
          "load": dict(extra_defs=ar.TRAIN_AT_LOAD, before_eval=ar.SLOW_HANDOVER),
          "class body": dict(extra_defs=ar.SPIN_IN_A_CLASS_BODY)}[where]
    res, s = experiment(tmp_path / "run", fakes.write(tmp_path / "t.py", **kw), BOUND)
    assert s["status"] == "timeout" and s["val_bpb"] is None, s
    assert "scored runner was still computing" in s["reason"] and "eval.runner_seconds=20" in s["reason"], s
    assert s["eval_seconds"] < 40  # cut at the bound, not at eval.timeout_seconds
    assert res.returncode == 5


def test_the_calibrated_bound_cuts_training_at_the_first_forward(cache_dir, tmp_path):
    """No flat limit given: the bound comes from this device's calibration, which evaluated
    the frozen baseline (a tokens budget against the reference CPU: a busy machine's
    measurement serves it too)."""
    from tests.test_attacks import QUICK_CALIBRATION

    t = fakes.write(tmp_path / "t.py", forward_extra=ar.TRAIN_AT_FIRST_FORWARD)
    res, s = conftest.experiment(tmp_path / "run", t, NO_WARMUP, "budget.mode=tokens", "budget.reference_seconds=3",
                                 "budget.force=true", *QUICK_CALIBRATION, timeout=400)
    assert s["status"] == "timeout" and s["val_bpb"] is None, s
    assert "frozen baseline's runner" in s["reason"] and s["eval_timing"]["scored"]["bound"] < 40, s


def test_dynamic_evaluation_is_refused_by_the_probe(honest, tmp_path):
    res, s = experiment(tmp_path / "run", fakes.write(tmp_path / "t.py", forward_extra=ar.DYNAMIC_EVAL), BOUND)
    assert s["status"] == "refused" and s["val_bpb"] is None and "not causal" in s["reason"], s
    assert s["probe"]["max_diff"] > 1e-2  # far beyond any rounding


def test_without_a_bound_the_summary_says_so(cache_dir, tmp_path):
    res, s = experiment(tmp_path / "run", fakes.write(tmp_path / "t.py"))
    assert s["status"] == "ok" and s["eval_bound_source"].startswith("none: only eval.timeout_seconds")
    assert "no calibration times this device's evaluation" in res.stdout


@needs_sandbox
def test_no_trace_outlives_the_process_that_left_it(cache_dir, tmp_path):
    """train.py and both runners of two experiments in a row look for a mark and leave one
    everywhere they can: xattrs, times and modes of files they can name, and files in
    every directory (/dev/null included: a device node is the host's inode). The only
    marks left are in each process's own scratch, which dies with it; nothing is ever
    found."""
    t = fakes.write(tmp_path / "t.py", top=ar.TRACES, forward_extra=ar.TRACES_IN_RUNNER,
                    before_eval='traces("train.py")')
    logs = []
    for n in range(2):
        run = tmp_path / f"run{n}"
        res, s = experiment(run, t, BOUND)
        assert s["status"] == "ok", s
        logs += [(run, name, (run / name).read_text()) for name in ("train.log", "eval-scored.log", "eval-probe.log")]
    assert all("LEFT" in text or "FOUND" in text for _, _, text in logs), "every process ran the snippet"
    found = [line for _, _, text in logs for line in text.splitlines() if line.startswith("FOUND")]
    assert found == []
    for run, name, text in logs:
        own = run / ("train" if name == "train.log" else "runner")
        for line in text.splitlines():
            if line.startswith("LEFT"):
                what, path = re.match(r"LEFT [^:]+: (\w+) (.*)", line).groups()
                assert path == str(own) or path.startswith(f"{own}/"), (name, line)  # its HOME, TMPDIR
