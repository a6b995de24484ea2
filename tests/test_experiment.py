"""End-to-end `autoresearch experiment` runs on CPU: the honest path and every way a run can
fail (the planted cheats are in test_attacks.py)."""
import json
import math

import pytest

from tests import fakes
from tests.conftest import FAST, ROOT, experiment, run_cli

pytestmark = pytest.mark.slow


def test_tiny_baseline_end_to_end(cache_dir, tmp_path):
    """The project's own train.py, with the calibrated start-up allowance and tolerance."""
    run_dir = tmp_path / "run"
    res = run_cli("experiment", "backend=cpu", "model=tiny", "budget.mode=wall", "budget.seconds=8",
                  "data.eval_tokens=8192", "quiet=true", f"hydra.run.dir={run_dir}", timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["status"] == "ok"
    from trainer import prepare

    stats = json.loads((prepare.data_dir() / "READY.json").read_text())
    uniform = math.log2(prepare.VOCAB_SIZE) / stats["val_bytes_per_token"]
    assert 0 < s["val_bpb"] < uniform
    from harness import sandbox

    assert s["backend"] == "cpu" and s["isolation"] == (sandbox.support().label if sandbox.support().kind != "none"
                                                        else "none")
    # the harness's own figures: its clock, its feed's count, the handed-over file
    assert 8.0 <= s["training_seconds"] <= 8.0 + max(1.0, 2 * 8.0 * 0.05) + 1.0
    assert s["num_steps"] > 2 and s["total_tokens"] == s["num_steps"] * 8 * 256
    # the weights the file and train.py can hold: 7.34M parameters, the rotary tables, half a
    # weight per byte of the pickle, the zip and train.py (harness/modelfile.py)
    w = s["model_weights"]
    assert w["parameters"] == 7_340_296 and w["float_elements"] == w["parameters"] + 2 * 256 * 32
    assert w["source_bytes"] == (ROOT / "trainer" / "train.py").stat().st_size
    assert 0 < w["other_bytes"] < 64 << 10 and s["num_params_M"] == pytest.approx(7.38, abs=0.01)
    assert s["probe"]["rows"] == 64 and s["probe"]["max_diff"] <= s["probe"]["tolerance"]
    assert "calibration" in s["probe"]["tolerance_source"] or "probe noise" in s["probe"]["tolerance_source"]
    assert s["train"]["num_steps"] == s["num_steps"]  # train.py's own report, kept apart
    block = res.stdout[res.stdout.index("\n---\n") + 5:]
    keys = [line.split(":")[0] for line in block.splitlines()[:10]]
    assert keys == ["val_bpb", "training_seconds", "total_seconds", "peak_memory_mb", "mfu_percent",
                    "total_tokens_M", "num_steps", "num_params_M", "backend", "device"]
    assert not list(run_dir.rglob("model.pt")) and not (run_dir / "train").exists()


def test_honest_fake_gets_its_val_bpb(cache_dir, tmp_path):
    res, s = experiment(tmp_path / "run", fakes.write(tmp_path / "t.py"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert s["status"] == "ok" and math.isfinite(s["val_bpb"])
    assert s["num_steps"] == 5 and s["total_tokens"] == 5 * 4 * 256  # what the feed served


def test_a_script_on_its_own_clock_stops_when_the_harness_says(cache_dir, tmp_path):
    """Upstream-style: its clock skips its first 10 steps; `>= TIME_BUDGET` follows the
    harness's clock, so it stops in time instead of being cut off."""
    loop = """
total, step = 0.0, 0
while True:
    t = time.time()
    x, y, _ = next(loader)
    loss = F.cross_entropy(model(x).view(-1, VOCAB_SIZE), y.view(-1))
    opt.zero_grad(); loss.backward(); opt.step()
    time.sleep(0.05)
    if step > 10:
        total += time.time() - t
    step += 1
    if step > 10 and total >= prepare.TIME_BUDGET:
        break
print(f"own clock: {total:.2f} s after {step} steps")
"""
    res, s = experiment(tmp_path / "run", fakes.write(tmp_path / "t.py", steps=0, before_eval=loop),
                        "budget.warmup_tokens=0")
    assert s["status"] == "ok", s
    assert 5.0 <= s["training_seconds"] <= 5.0 + 1.5


@pytest.mark.parametrize("before_eval,status,code,needle", [
    ("raise RuntimeError('boom at step 3')", "crash", 3, "boom at step 3"),
    ("print('FAIL: loss is nan at step 3'); sys.exit(1)", "nan", 4, "loss is nan"),
    ("time.sleep(600)", "timeout", 5, "cut off"),
])
def test_failures_have_clear_status_and_log_tail(cache_dir, tmp_path, before_eval, status, code, needle):
    res, s = experiment(tmp_path / "run", fakes.write(tmp_path / "t.py", before_eval=before_eval),
                        "budget.allowance_seconds=5")
    assert s["status"] == status and res.returncode == code, (s, res.stderr)
    assert needle in res.stderr + s.get("reason", "")
    assert "val_bpb:" not in res.stdout


def test_syntax_error_and_no_handover_are_crashes(cache_dir, tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def broken(:\n")
    res, s = experiment(tmp_path / "a", bad)
    assert s["status"] == "crash" and "SyntaxError" in res.stderr
    quiet = fakes.write(tmp_path / "quiet.py").read_text().replace("val = evaluate_bpb(model, tok, 4)", "val = 0.5")
    (tmp_path / "quiet.py").write_text(quiet)
    res, s = experiment(tmp_path / "b", tmp_path / "quiet.py")
    assert s["status"] == "crash" and "evaluate_bpb" in s["reason"]


def test_a_model_that_fails_in_the_runner_is_a_crash_with_its_traceback(cache_dir, tmp_path):
    boom = "if not self.training:\n    raise ValueError('forward exploded at eval')"
    res, s = experiment(tmp_path / "run", fakes.write(tmp_path / "t.py", forward_extra=boom))
    assert s["status"] == "crash" and "forward exploded at eval" in s["reason"], s
    assert res.returncode == 3


def test_non_finite_logits_are_status_nan(cache_dir, tmp_path):
    nan = "if not self.training:\n    return self.out(self.emb(src)).float() * float('nan')"
    res, s = experiment(tmp_path / "run", fakes.write(tmp_path / "t.py", forward_extra=nan))
    assert s["status"] == "nan" and "non-finite" in s["reason"] and res.returncode == 4


def test_missing_train_file_is_a_clear_error(cache_dir, tmp_path):
    res = run_cli("experiment", *FAST, f"hydra.run.dir={tmp_path}", f"train_file={tmp_path}/nope.py", timeout=120)
    assert res.returncode != 0 and "nope.py" in res.stderr


def test_a_cache_under_home_is_found_from_inside_the_sandbox(tmp_path):
    """The default cache is `~/.cache/autoresearch`; a sandboxed child's HOME is its scratch
    directory, so the harness hands it absolute paths."""
    env = {"HOME": str(tmp_path), "AUTORESEARCH_CACHE": "~/cache"}
    res = run_cli("experiment", *FAST, f"hydra.run.dir={tmp_path / 'run'}",
                  f"train_file={fakes.write(tmp_path / 't.py')}", extra_env=env, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (tmp_path / "cache" / "heldout").is_dir()
