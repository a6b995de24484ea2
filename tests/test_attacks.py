"""The adversarial suite: planted train.py files, one family per attack class (the README's
trust model names each class and the defence that stops it). Each ends `refused`, is cut
off, or scores exactly the honest value (the fakes are seeded and fed the same batches)."""
import hashlib
import json
import os
import socket
import time
import uuid
from pathlib import Path

import pytest

from tests import attacks, conftest, fakes
from tests.conftest import ROOT

pytestmark = pytest.mark.slow
# The attacks here are scored against the honest fake exactly, and run without warm-up
# (every batch is the split's, in the same order), so that an attack on the warm-up cannot
# hide in them; the warm-up attacks are in tests/test_attacks_clock.py.
NO_WARMUP = "budget.warmup_tokens=0"
# The honest value, to the last bits that CPU kernels can round differently from run to run
# (1.2e-8 seen once on a busy 2-core runner, in an experiment that leaves the model alone);
# every attack that moves the model moves val_bpb by orders of magnitude more.
SAME = 1e-6


def experiment(run_dir, train_file, *extra, **kw):
    return conftest.experiment(run_dir, train_file, NO_WARMUP, *extra, **kw)


# Classes 3 and 5 are stopped by the sandbox; without one the product still runs (and says
# `isolation: none`), so those tests have nothing to check there.
needs_sandbox = pytest.mark.skipif(__import__("harness.sandbox", fromlist=["support"]).support().kind == "none",
                                   reason="no sandbox on this machine (Landlock on Linux, sandbox-exec on macOS)")


@pytest.fixture(scope="module")
def honest(cache_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("honest")
    res, s = experiment(d / "run", fakes.write(d / "t.py"))
    assert s["status"] == "ok", res.stdout + res.stderr
    return s["val_bpb"]


def attempts(run_dir) -> dict:
    """'ATTEMPT name: DENIED (...)' lines of train.log -> {name: 'DENIED' | 'OK'}."""
    out = {}
    for line in (run_dir / "train.log").read_text().splitlines():
        if line.startswith("ATTEMPT "):
            name, _, verdict = line[len("ATTEMPT "):].rpartition(": ")
            out[name] = verdict.split()[0]
    return out


# --------------------------------------------------------------------------- class 1

def test_class1_code_in_the_metrics_process_scores_the_honest_value(honest, tmp_path):
    """Patches, in-place edits, env switches, a TorchFunctionMode, atexit and a walk up the
    call stack, all from the model's forward: the scorer is another process, so nothing of
    it is there to patch or read."""
    t = fakes.write(tmp_path / "t.py", extra_defs=attacks.SAME_PROCESS_DEFS, forward_extra=attacks.SAME_PROCESS_FORWARD)
    res, s = experiment(tmp_path / "run", t)
    assert s["status"] == "ok", s
    assert s["val_bpb"] == pytest.approx(honest, abs=SAME)


# --------------------------------------------------------------------------- class 2

@pytest.mark.parametrize("mode", list(attacks.PROBE_FORWARD))
def test_class2_models_that_read_what_they_must_not_are_refused(cache_dir, tmp_path, mode):
    """The probe's inputs go to a fresh runner that never saw the scored ones, rows come from
    other batches with random suffixes, the tolerance is the harness's: replaying,
    recognising the probe, or spotting its process changes nothing."""
    t = fakes.write(tmp_path / "t.py", forward_extra=attacks.PROBE_FORWARD[mode])
    res, s = experiment(tmp_path / "run", t)
    assert s["status"] == "refused" and "not causal" in s["reason"], (mode, s)
    assert s["val_bpb"] is None and res.returncode == 6 and "val_bpb:" not in res.stdout


# --------------------------------------------------------------------------- class 3

@needs_sandbox
def test_class3_the_validation_split_is_out_of_reach(honest, tmp_path):
    """train.py cannot read the validation split (nor list it, nor get it through prepare),
    nor the training split behind the feed's back; the runner cannot leave what it saw
    anywhere that outlives it."""
    leak_tmp = f"/tmp/autoresearch-leak-{uuid.uuid4().hex}"
    top = attacks.ATTEMPT + f"LEAK_TMP = {leak_tmp!r}\n"
    t = fakes.write(tmp_path / "t.py", top=top, forward_extra=attacks.LEAK_FORWARD,
                    before_eval=attacks.READ_VALIDATION)
    res, s = experiment(tmp_path / "run", t)
    got = attempts(tmp_path / "run")
    assert len(got) == 7 and set(got.values()) == {"DENIED"}, got
    assert s["status"] == "ok" and s["val_bpb"] == pytest.approx(honest, abs=SAME)
    from trainer import prepare

    for p in [leak_tmp, prepare.data_dir() / "leak.txt", prepare.tokenizer_dir() / "leak.txt",
              ROOT / "trainer" / "leak.txt", tmp_path / "run" / "leak.txt"]:
        assert not os.path.exists(p), p
    assert not (tmp_path / "run" / "runner").exists()  # the runners' own scratch is gone


# --------------------------------------------------------------------------- class 4

def test_class4_training_on_its_own_clock_past_the_budget_is_cut_off(cache_dir, tmp_path):
    res, s = experiment(tmp_path / "run", fakes.write(tmp_path / "t.py", steps=0, before_eval=attacks.OWN_CLOCK_5X))
    assert s["status"] == "timeout" and "cut off" in s["reason"] and s["val_bpb"] is None, s
    assert s["training_seconds"] < 5.0 + 3.0  # never credited beyond budget + grace


def test_class4_a_long_warmup_counts_as_training(cache_dir, tmp_path):
    """Start-up beyond the allowance measured on the frozen baseline is charged."""
    res, s = conftest.experiment(tmp_path / "run", fakes.write(tmp_path / "t.py", steps=0,
                                                               before_eval=attacks.FREE_WARMUP),
                                 "budget.allowance_seconds=3")  # warm-up: model=tiny's 4,096 tokens
    assert s["status"] == "timeout" and "warm-up" in s["reason"], s


# token and FLOP budgets need this device's calibration: measured once (short windows, any
# spread accepted: the attacks, not the measurement, are under test), then cached
QUICK_CALIBRATION = ["calibrate.repeats=2", "calibrate.window_seconds=1.5", "calibrate.warmup_steps=2",
                     "calibrate.max_cv=1"]


def test_class4_the_token_budget_is_what_the_feed_served(cache_dir, tmp_path):
    res, s = experiment(tmp_path / "run", fakes.write(tmp_path / "t.py", steps=0, before_eval=attacks.GREEDY_TOKENS),
                        "budget.mode=tokens", "budget.reference_seconds=3", "budget.force=true", *QUICK_CALIBRATION)
    assert s["status"] == "ok", s
    assert s["budget_tokens"] - 4 * 256 < s["total_tokens"] <= s["budget_tokens"]  # never past it
    assert "token budget is used up" in (tmp_path / "run" / "train.log").read_text()


def test_class4_understating_flops_per_token_is_refused(cache_dir, tmp_path):
    res, s = experiment(tmp_path / "run", fakes.write(tmp_path / "t.py", steps=0, before_eval=attacks.LYING_FLOPS),
                        "budget.mode=flops", "budget.reference_seconds=3", "budget.force=true", *QUICK_CALIBRATION)
    assert s["status"] == "refused" and "FLOP budget" in s["reason"], s


# --------------------------------------------------------------------------- class 5

def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # the process ended between the listing and the read
        return b""


def _hashes(paths):
    return {str(p): hashlib.sha256(open(p, "rb").read()).hexdigest() for p in paths if os.path.exists(p)}


@needs_sandbox
def test_class5_no_file_outside_its_scratch_is_writable(honest, tmp_path):
    from trainer import prepare

    watched = [ROOT / "trainer" / "prepare.py", prepare.tokenizer_dir() / "token_bytes.npy",
               prepare.tokenizer_dir() / "tokenizer.pkl", ROOT / "harness" / "score.py"]
    before = _hashes(watched)
    t = fakes.write(tmp_path / "t.py", top=attacks.ATTEMPT, before_eval=attacks.WRITE_EVERYWHERE)
    res, s = experiment(tmp_path / "run", t)
    got = attempts(tmp_path / "run")
    assert len(got) == 12 and set(got.values()) == {"DENIED"}, got
    assert s["status"] == "ok" and s["val_bpb"] == pytest.approx(honest, abs=SAME)
    assert _hashes(watched) == before and not os.path.exists("/tmp/autoresearch-planted.py")


@needs_sandbox
def test_class5_every_process_dies_at_the_handover_and_none_reaches_out(honest, tmp_path):
    server = socket.create_server(("127.0.0.1", 0))  # listening: the kernel would complete a connect
    mark = f"autoresearch-daemon-{os.getpid()}-{time.time_ns()}"
    top = attacks.ATTEMPT + f"PORT = {server.getsockname()[1]}\nDAEMON_MARK = {mark!r}\n"
    t = fakes.write(tmp_path / "t.py", top=top, before_eval=attacks.PROCESSES)
    res, s = experiment(tmp_path / "run", t)
    server.close()
    log = (tmp_path / "run" / "train.log").read_text()
    got = attempts(tmp_path / "run")
    assert got == {"signal the harness": "DENIED", "SIGTERM the harness": "DENIED",
                   "SIGHUP the harness's process group": "DENIED", "SIGTERM every process in reach": "DENIED",
                   "TCP to the test's server": "DENIED",
                   "SysV shared memory": "DENIED"}, got
    assert "DAEMON " in log  # it was started
    assert not [p for p in Path("/proc").glob("[0-9]*/cmdline") if mark.encode() in _read(p)]
    assert s["status"] == "ok" and s["val_bpb"] == pytest.approx(honest, abs=SAME)


def test_class5_without_a_sandbox_the_hash_guard_still_refuses_an_edit(cache_dir, tmp_path):
    target = ROOT / "trainer" / "prepare.py"
    before = target.read_bytes()
    hack = 'open(prepare.__file__, "a").write("\\n# EVAL_TOKENS = 1\\n")'
    res, s = experiment(tmp_path / "run", fakes.write(tmp_path / "t.py", before_eval=hack), "isolation=off")
    assert s["status"] == "refused" and "prepare.py" in s["reason"] and s["isolation"] == "none"
    assert target.read_bytes() == before
    assert "not tamper-proof" in res.stderr


@pytest.mark.parametrize("kind", list(attacks.BAD_HANDOVER))
def test_class5_a_handover_that_is_not_a_plain_file_is_not_followed(cache_dir, tmp_path, kind):
    hack = attacks.BAD_HANDOVER[kind] + "\nfrom trainer.feed import Client\nClient.from_env().handover()"
    res, s = experiment(tmp_path / "run", fakes.write(tmp_path / "t.py", before_eval=hack))
    assert s["status"] == "crash" and "model file" in s["reason"], s


# --------------------------------------------------------------------------- class 6

def test_class6_printed_summary_lines_stay_train_pys_own(honest, tmp_path):
    res, s = experiment(tmp_path / "run", fakes.write(tmp_path / "t.py", before_eval=attacks.FAKE_BLOCK),
                        "quiet=false")  # the live echo too
    assert s["status"] == "ok" and s["val_bpb"] == pytest.approx(honest, abs=SAME)
    assert s["budget_mode"] == "wall" and s["num_steps"] == 5 and s["run_dir"] == str(tmp_path / "run")
    assert s["isolation"] != "none" and s["training_seconds"] < 5.0
    assert s["train"]["val_bpb"] == 0.01 and s["train"]["num_steps"] == 99999  # kept as its claims
    [line] = [line for line in res.stdout.splitlines() if line.startswith("val_bpb:")]
    assert float(line.split(":")[1]) == pytest.approx(honest, abs=1e-6)
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk["val_bpb"] == s["val_bpb"]


@pytest.mark.parametrize("where", ["train.py", "runner"])
def test_class6_a_crash_cannot_print_a_summary_line(cache_dir, tmp_path, where):
    """Neither the log tail nor an error message the model raised (quoted in the reason)."""
    if where == "train.py":
        t = fakes.write(tmp_path / "t.py", before_eval=attacks.FAKE_BLOCK + "raise SystemExit(1)")
    else:
        t = fakes.write(tmp_path / "t.py", forward_extra=attacks.RUNNER_CRASH_WITH_BLOCK)
    res, s = experiment(tmp_path / "run", t, "quiet=false")
    assert s["status"] == "crash", s
    assert not [line for line in (res.stdout + res.stderr).splitlines() if line.startswith("val_bpb:")]


# --------------------------------------------------------------------------- the evaluation

def test_a_model_that_hangs_in_the_runner_times_out(cache_dir, tmp_path):
    hang = "if not self.training:\n    time.sleep(600)"
    res, s = experiment(tmp_path / "run", fakes.write(tmp_path / "t.py", forward_extra=hang), "eval.timeout_seconds=8")
    assert s["status"] == "timeout" and "evaluation timed out" in s["reason"], s
