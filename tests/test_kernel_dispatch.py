"""The kernel dispatch (kernels/registry.py): the reference where Triton cannot run, a loud
error when Triton is asked for by name and cannot run, and one warning then the reference
when the automatic choice fails to build."""
import warnings

import pytest
import torch

import kernels
from kernels import reference, registry


def test_auto_runs_the_reference_on_a_cpu_and_the_package_functions_survive(monkeypatch):
    monkeypatch.setenv(registry.ENV_MODE, "auto")
    x = torch.randn(4, 8)
    assert registry.implementation("rms_norm", x) is reference.rms_norm
    assert callable(kernels.rms_norm) and callable(kernels.linear_cross_entropy)  # not shadowed by modules
    torch.testing.assert_close(kernels.rms_norm(x), reference.rms_norm(x))


def test_a_named_triton_mode_that_cannot_run_says_why(monkeypatch):
    monkeypatch.setenv(registry.ENV_MODE, "triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(RuntimeError, match="Triton needs a CUDA/ROCm tensor"):
        kernels.rms_norm(torch.randn(4, 8))
    monkeypatch.setenv(registry.ENV_MODE, "fast")
    with pytest.raises(ValueError, match="expected one of auto, reference, triton"):
        kernels.rms_norm(torch.randn(4, 8))


def test_an_automatic_choice_that_fails_to_build_falls_back_once_with_a_warning(monkeypatch):
    monkeypatch.setattr(registry, "_broken", {})
    monkeypatch.setattr(registry, "_proven", set())

    def broken(*args, **kwargs):
        raise RuntimeError("PTX assembly failed")

    x = torch.randn(4, 8)
    guarded = registry._guarded("rms_norm", broken, reference.rms_norm)
    with pytest.warns(RuntimeWarning, match="PTX assembly failed"):
        out = guarded(x, 1e-6, None)
    torch.testing.assert_close(out, reference.rms_norm(x))
    assert "rms_norm" in registry._broken  # from now on the reference, without asking again
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert registry.implementation("rms_norm", x) is reference.rms_norm


def test_an_unknown_kernel_name_is_refused_in_the_config():
    from harness.checks import ConfigError, validate
    from harness.config import compose_dict

    with pytest.raises(ConfigError, match="kernels.only: no kernel 'rmsnorm'"):
        validate(compose_dict("kernels", ["kernels.only=[rmsnorm]"]), log=lambda m: None)


def test_without_triton_the_kernels_run_their_references_and_the_check_says_what_is_missing(tmp_path):
    """A machine without Triton (a Mac): importing kernels and training work on the
    references; `kernels check` stops with one line saying what to install."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    code = """
import sys
sys.modules["triton"] = None  # as if not installed: `import triton` raises ImportError
import importlib.util
importlib.util.find_spec = lambda name, *a: None if name == "triton" else _find(name, *a)
import torch, kernels
from kernels import registry
x = torch.randn(4, 8)
torch.testing.assert_close(kernels.rms_norm(x), registry.reference.rms_norm(x))
try:
    registry.triton_implementation("rms_norm")
except ImportError:
    print("no triton: reference")
from harness import cli
cli.main(["kernels", "check", "backend=cpu"])
"""
    code = code.replace("import importlib.util\n", "import importlib.util\n_find = importlib.util.find_spec\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "no triton: reference" in res.stdout, res.stderr
    assert res.returncode == 2 and "kernels check needs Triton" in res.stderr.strip().splitlines()[-1], res.stderr
