"""End-to-end `autoresearch experiment` runs on CPU: honest, crashing and cheating train.py."""
import json
import math
from pathlib import Path

import pytest

from tests import fakes
from tests.conftest import ROOT, run_cli

pytestmark = pytest.mark.slow

FAST = ["backend=cpu", "model=tiny", "budget.mode=wall", "budget.seconds=5", "data.eval_tokens=8192", "quiet=true"]


def experiment(tmp_path, train_file: Path | None, *extra, timeout=240):
    run_dir = tmp_path / "run"
    args = ["experiment", *FAST, f"hydra.run.dir={run_dir}", *extra]
    if train_file is not None:
        args.append(f"train_file={train_file}")
    res = run_cli(*args, timeout=timeout)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert not list(run_dir.rglob("*.tmp*")), "half-written files left behind"
    return res, summary


def test_tiny_baseline_end_to_end(cache_dir, tmp_path):
    """The project's own train.py: a finite val_bpb below the uniform guess."""
    res, s = experiment(tmp_path, None, "budget.seconds=8")
    assert res.returncode == 0, res.stdout + res.stderr
    assert s["status"] == "ok"
    from trainer import prepare

    stats = json.loads((prepare.data_dir() / "READY.json").read_text())
    uniform = math.log2(prepare.VOCAB_SIZE) / stats["val_bytes_per_token"]
    assert 0 < s["val_bpb"] < uniform
    assert s["num_steps"] > 0 and s["backend"] == "cpu"
    block = res.stdout[res.stdout.index("---"):]
    keys = [line.split(":")[0] for line in block.splitlines()[1:11]]
    assert keys == ["val_bpb", "training_seconds", "total_seconds", "peak_memory_mb", "mfu_percent",
                    "total_tokens_M", "num_steps", "num_params_M", "backend", "device"]
    assert not (tmp_path / "run" / "model.pt").exists()


def test_honest_fake_gets_its_val_bpb(cache_dir, tmp_path):
    res, s = experiment(tmp_path, fakes.write(tmp_path / "t.py"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert s["status"] == "ok" and math.isfinite(s["val_bpb"])
    assert s["num_steps"] == 5  # train.py's own figures are kept


def test_train_py_that_edits_prepare_is_refused_and_prepare_restored(cache_dir, tmp_path):
    target = ROOT / "trainer" / "prepare.py"
    before = target.read_bytes()
    hack = 'open(prepare.__file__, "a").write("\\n# EVAL_TOKENS = 1\\n")'
    res, s = experiment(tmp_path, fakes.write(tmp_path / "t.py", before_eval=hack))
    assert s["status"] == "refused" and "prepare.py" in s["reason"]
    assert s["val_bpb"] is None and res.returncode == 6
    assert "val_bpb:" not in res.stdout
    assert target.read_bytes() == before


def test_non_causal_model_is_refused(cache_dir, tmp_path):
    res, s = experiment(tmp_path, fakes.write(tmp_path / "t.py", peek=1))
    assert s["status"] == "refused" and "not causal" in s["reason"], s
    assert res.returncode == 6


def test_real_train_py_with_non_causal_attention_is_refused(cache_dir, tmp_path):
    src = (ROOT / "trainer" / "train.py").read_text()
    old = "y = backends.attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), w)"
    assert old in src
    bad = tmp_path / "train.py"
    bad.write_text(src.replace(old, "y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), "
                                    "v.transpose(1, 2), is_causal=False)"))
    res, s = experiment(tmp_path, bad)
    assert s["status"] == "refused" and "not causal" in s["reason"], s
    assert s["val_bpb"] is None and "val_bpb:" not in res.stdout


def test_patching_the_metric_at_train_time_gets_the_honest_value(cache_dir, tmp_path):
    res, honest = experiment(tmp_path / "a", fakes.write(tmp_path / "a.py"))
    hack = "prepare.score_bpb = lambda *a, **k: 0.01\nimport trainer.prepare\ntrainer.prepare.score_bpb = prepare.score_bpb"
    res, s = experiment(tmp_path / "b", fakes.write(tmp_path / "b.py", before_eval=hack))
    assert s["status"] == "ok", s
    # Same seedless-but-short training: close to the honest run, nowhere near the patch.
    assert s["val_bpb"] == pytest.approx(honest["val_bpb"], rel=0.1)
    assert abs(s["val_bpb"] - 0.01) > 1


def test_replacing_evaluate_bpb_gets_no_value(cache_dir, tmp_path):
    hack = "global evaluate_bpb\nevaluate_bpb = lambda *a, **k: 0.01"
    res, s = experiment(tmp_path, fakes.write(tmp_path / "t.py", before_eval=hack))
    assert s["status"] == "crash" and s["val_bpb"] is None and "evaluate_bpb" in s["reason"]


def test_patching_the_loss_inside_forward_is_refused(cache_dir, tmp_path):
    patch = "if not self.training:\n    F.cross_entropy = lambda *a, **k: torch.zeros(a[0].shape[0])"
    res, s = experiment(tmp_path, fakes.write(tmp_path / "t.py", forward_extra=patch))
    assert s["status"] == "refused" and "cross_entropy" in s["reason"], s


def test_patching_the_metric_at_definition_time_is_refused(cache_dir, tmp_path):
    sneaky = "def _sneak(_=setattr(prepare, 'score_bpb', lambda *a, **k: 0.01)):\n    pass\n"
    res, s = experiment(tmp_path, fakes.write(tmp_path / "t.py", extra_defs=sneaky))
    assert s["status"] == "refused" and "score_bpb" in s["reason"], s


def test_tensor_subclass_logits_are_refused(cache_dir, tmp_path):
    defs = "class Sneaky(torch.Tensor):\n    pass\n"
    res, s = experiment(tmp_path, fakes.write(
        tmp_path / "t.py", extra_defs=defs,
        forward_extra="return self.out(self.emb(src)).float().as_subclass(Sneaky)"))
    assert s["status"] == "refused" and "plain torch.Tensor" in s["reason"], s


@pytest.mark.parametrize("before_eval,status,code,needle", [
    ("raise RuntimeError('boom at step 3')", "crash", 3, "boom at step 3"),
    ("print('FAIL: loss is nan at step 3'); sys.exit(1)", "nan", 4, "loss is nan"),
    ("time.sleep(600)", "timeout", 5, "hard limit"),
])
def test_failures_have_clear_status_and_log_tail(cache_dir, tmp_path, before_eval, status, code, needle):
    res, s = experiment(tmp_path, fakes.write(tmp_path / "t.py", before_eval=before_eval),
                        "budget.allowance_seconds=10")
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


def test_missing_train_file_is_a_clear_error(cache_dir, tmp_path):
    res = run_cli("experiment", *FAST, f"hydra.run.dir={tmp_path}", f"train_file={tmp_path}/nope.py", timeout=120)
    assert res.returncode != 0 and "nope.py" in res.stderr
