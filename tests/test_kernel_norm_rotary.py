"""The Triton RMSNorm (kernels/rmsnorm.py) and rotary (kernels/rotary.py) kernels against
kernels/reference.py: forward, every gradient, odd shapes, strided inputs, NaN/inf parity.

The kernels run under Triton's CPU interpreter, which must be switched on before they are
decorated; this pytest process may have imported them without it, so the checks
(tests/norm_rotary_checks.py) run once in a child process with TRITON_INTERPRET=1, and
each becomes one test here. Small shapes keep the child to a few seconds. A second child
(tests/norm_rotary_compile.py) compiles the kernels for an NVIDIA and an AMD GPU, which
the interpreter never does.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")

from norm_rotary_checks import CHECKS  # noqa: E402 - after the skip: it names the tests

from kernels import reference  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _run(module: str, env: dict) -> dict:
    """Run `python -m module` from the repository root; its RESULT line, decoded."""
    proc = subprocess.run([sys.executable, "-m", module], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"{module} did not finish (rc {proc.returncode}):\n{proc.stderr[-4000:]}"
    return json.loads(lines[-1][len("RESULT "):])


@pytest.fixture(scope="module")
def results() -> dict:
    return _run("tests.norm_rotary_checks", {**os.environ, "TRITON_INTERPRET": "1"})


def test_the_child_ran_this_checkouts_kernels(results):
    assert Path(results["kernels_file"]).resolve() == ROOT / "kernels" / "rmsnorm.py"


@pytest.mark.parametrize("name", list(CHECKS))
def test_interpreted_kernel(results, name):
    assert results[name] == "ok", results[name]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_reference_without_weight_is_unchanged(dtype):
    """The weight argument leaves the parameterless reference bit for bit what it was."""
    x = torch.randn(33, 200).to(dtype)
    xf = x.float()
    before = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6)).to(x.dtype)
    assert torch.equal(reference.rms_norm(x), before)
    w = torch.randn(200).to(dtype)
    weighted = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6) * w.float()).to(dtype)
    assert torch.equal(reference.rms_norm(x, weight=w), weighted)


def test_the_kernels_compile_for_nvidia_and_amd_gpus(tmp_path):
    """sm_90 and gfx942, ahead of time: the compiled path, which the interpreter skips."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    found = _run("tests.norm_rotary_compile", {**env, "TRITON_CACHE_DIR": str(tmp_path)})
    if all(v.startswith("skip") for v in found.values()):
        pytest.skip(next(iter(found.values())))
    failed = {k: v for k, v in found.items() if v != "ok" and not v.startswith("skip")}
    assert not failed, "\n".join(f"{k}: {v}" for k, v in failed.items())


def test_a_cpu_tensor_without_the_interpreter_is_refused_in_words():
    from kernels import launch, rmsnorm, rotary
    if launch.INTERPRET:
        pytest.skip("this process runs the interpreter")
    with pytest.raises(ValueError, match="CUDA/ROCm"):
        rmsnorm.rms_norm(torch.randn(4, 8))
    with pytest.raises(ValueError, match="CUDA/ROCm"):
        rotary.apply_rotary(torch.randn(1, 2, 1, 8), torch.ones(1, 2, 1, 4), torch.zeros(1, 2, 1, 4))
