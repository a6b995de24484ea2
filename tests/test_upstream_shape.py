"""Scripts shaped like upstream's train.py: the definitions loader, `kernels.get_kernel`, and
tests/upstream_shape/train.py end to end through `experiment` and through a campaign."""
import math
import subprocess
import sys
import textwrap

import pytest
import torch

from harness.definitions import load_definitions
from kernels import get_kernel
from kernels.hub import KernelUnavailable
from tests.conftest import ROOT, experiment, run_cli

UPSTREAM_SHAPE = ROOT / "tests" / "upstream_shape" / "train.py"


# --------------------------------------------------------------------------- definitions

def test_definitions_keep_what_the_classes_need_and_skip_the_training(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent('''
        import torch
        LOG = []
        SCALE = 2.0
        if True:
            OFFSET = 1.0
        table = [SCALE * i for i in range(3)]      # read by a method: kept
        unused = LOG.append("unused ran")           # read by nobody: never run
        class Net(torch.nn.Module):
            def forward(self, x, model=None):       # a parameter named like the global below
                return x * table[1] + OFFSET
        def helper(step):
            return step                              # a local, not the global `step`
        with torch.device("meta"):
            model = Net()
        count = model.forward(1)                     # needs the meta model: never run
        step = 0
        while True:
            LOG.append("trained")
            break
        LOG.append("bare call")
        if __name__ == "__main__":
            LOG.append("main")
    '''))
    m = load_definitions(script, name="defs_under_test")
    assert m.Net()(torch.ones(1)).item() == 3.0
    assert m.LOG == [] and not hasattr(m, "model") and not hasattr(m, "count") and not hasattr(m, "step")


def test_a_needed_line_that_raises_is_skipped_with_its_line_number(tmp_path, capfd):
    script = tmp_path / "train.py"
    script.write_text("import torch\nCAP = torch.cuda.get_device_capability(99)\n"
                      "def f():\n    return CAP\ndef g():\n    return 7\n")
    m = load_definitions(script, name="defs_raising")
    assert m.g() == 7 and not hasattr(m, "CAP")
    assert "line 2 of train.py raised and was skipped" in capfd.readouterr().err


def test_the_upstream_shaped_script_loads_as_definitions():
    import trainer.prepare

    sys.modules.setdefault("prepare", trainer.prepare)
    m = load_definitions(UPSTREAM_SHAPE, name="upstream_shape_defs")
    assert {"GPT", "GPTConfig", "fa", "SOFTCAP", "get_lr_multiplier"} <= set(vars(m))
    assert not {"model", "optimizer", "train_loader", "param_counts", "step", "x"} & set(vars(m))
    with torch.device("meta"):
        model = m.GPT(m.GPTConfig(sequence_len=32, vocab_size=64))
    model.to_empty(device="cpu")
    model.init_weights()
    logits = model(torch.randint(0, 64, (2, 32)))
    assert logits.shape == (2, 32, 64) and torch.isfinite(logits).all()


# --------------------------------------------------------------------------- get_kernel

def _reference(q, k, v, left, scale=None):
    """Attention by its definition on (B, T, H, D): query i sees keys max(0, i-left) .. i."""
    B, T, H, D = q.shape
    s = torch.einsum("bihd,bjhd->bhij", q, k) * (scale if scale is not None else D ** -0.5)
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    allowed = (j <= i) & ((j >= i - left) if left >= 0 else torch.ones_like(j, dtype=torch.bool))
    return torch.einsum("bhij,bjhd->bihd", s.masked_fill(~allowed, -math.inf).softmax(-1), v)


@pytest.mark.parametrize("left", [-1, 0, 3, 12, 40])
def test_flash_attn_func_has_flash_attentions_window_semantics(left):
    fa = get_kernel("varunneal/flash-attention-3").flash_attn_interface
    g = torch.Generator().manual_seed(left + 2)
    q, k, v = (torch.randn(2, 13, 3, 8, generator=g) for _ in range(3))
    out = fa.flash_attn_func(q, k, v, causal=True, window_size=(left, 0))
    assert out.shape == q.shape
    torch.testing.assert_close(out, _reference(q, k, v, left), atol=1e-5, rtol=1e-5)


def test_flash_attn_func_grouped_heads_and_softmax_scale():
    fa = get_kernel("kernels-community/flash-attn3")  # the module itself exposes it too
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 9, 4, 8, generator=g)
    k, v = torch.randn(1, 9, 2, 8, generator=g), torch.randn(1, 9, 2, 8, generator=g)
    out = fa.flash_attn_func(q, k, v, softmax_scale=0.5, causal=True, window_size=(-1, -1))
    want = _reference(q, k.repeat_interleave(2, dim=2), v.repeat_interleave(2, dim=2), -1, scale=0.5)
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)


def test_get_kernel_refuses_what_it_cannot_serve():
    with pytest.raises(KernelUnavailable, match="offline"):
        get_kernel("kernels-community/activation")
    fa = get_kernel("varunneal/flash-attention-3").flash_attn_interface
    q = torch.randn(1, 4, 1, 8)
    with pytest.raises(NotImplementedError, match="causal"):
        fa.flash_attn_func(q, q, q)  # FlashAttention's default is non-causal: never served


# --------------------------------------------------------------------------- end to end

# torch.compile's first step takes ~20-30 s on a CPU: a start-up allowance that covers it
COMPILE_ALLOWANCE = "budget.allowance_seconds=120"


@pytest.mark.slow
def test_upstream_shaped_script_runs_through_experiment(cache_dir, tmp_path):
    res, out = experiment(tmp_path / "run", UPSTREAM_SHAPE, COMPILE_ALLOWANCE)
    assert res.returncode == 0 and out["status"] == "ok", res.stdout[-2000:] + res.stderr[-2000:]
    assert 0 < out["val_bpb"] < 8 and out["num_steps"] > 2 and out["startup_seconds"] > 0


@pytest.mark.slow
def test_upstream_shaped_script_runs_through_a_campaign(cache_dir, tmp_path):
    """The external agent replaces train.py with an upstream-shaped script and records it."""
    import json
    import uuid

    tag, root = f"test-up-{uuid.uuid4().hex[:8]}", tmp_path / "campaigns"
    common = ["backend=cpu", "model=tiny", "budget.mode=wall", "budget.seconds=3", "data.eval_tokens=4096",
              "keep.confirm_runs=0", "keep.baseline_runs=1", "eval.probe_tolerance=1e-4", COMPILE_ALLOWANCE, "agent=external",
              "eval.causality_check=false",  # the experiment test above runs the probe on this script
              f"campaign.tag={tag}", f"campaign.root={root}"]
    d = root / tag / "cpu"
    try:
        res = run_cli("run", *common, timeout=600)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
        # torch.compile's graph capture without inductor's C++ build (~20 s on a CPU): the
        # experiment test above compiles fully; here the campaign's path is what is tested
        eager = UPSTREAM_SHAPE.read_text().replace("torch.compile(model, dynamic=False)",
                                                   "torch.compile(model, dynamic=False, backend=\"eager\")")
        assert "backend=\"eager\"" in eager
        (d / "worktree" / "trainer" / "train.py").write_text(eager)
        res = run_cli("record", *common, "description=upstream-shaped train.py", timeout=600)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
        last = json.loads((d / "results.jsonl").read_text().splitlines()[-1])
        assert last["description"] == "upstream-shaped train.py" and last["experiment_status"] == "ok", last
        assert last["status"] in ("keep", "discard") and last["val_bpb"] > 0
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(d / "worktree")], cwd=ROOT, capture_output=True)
        subprocess.run(["git", "branch", "-D", f"autoresearch/{tag}/cpu"], cwd=ROOT, capture_output=True)
