"""`autoresearch kernels check` (harness/kernel_check.py): the project's kernels pass it, and
planted bad kernels (an off-by-one mask, a wrong backward, a cached output, a silent torch
fallback, work on a side stream) are each caught. Each plant is the real kernel file with
one defect, in a copy of kernels/ that the check's child puts first on its path, as a
campaign's copy is. On a CPU the kernels run in Triton's interpreter."""
import shutil

import pytest

from harness import kernel_check, kernel_rules
from harness.config import compose_dict
from tests.conftest import ROOT
from tests.inproc import in_process

pytest.importorskip("triton")
pytestmark = pytest.mark.usefixtures("cache_dir")  # the sandbox's self-test reads the prepared data

RMS_FILE = "rmsnorm.py"
STORE = "tl.store(Y + rows64[:, None] * stride_y + cols[None, :], y.to(Y.dtype.element_ty), mask=mask)"
BACKWARD = "dx = (g - n * mean_gn[:, None]) * rstd[:, None]"
PUBLIC = "def rms_norm("


def cfg(*extra):
    return compose_dict("kernels", ["backend=cpu", "kernels.only=[rms_norm]", *extra])


def planted(tmp_path, old: str, new: str, count: int = 1):
    """A copy of kernels/ whose rmsnorm.py has `old` replaced by `new`."""
    d = tmp_path / "kernels"
    shutil.copytree(ROOT / "kernels", d, ignore=shutil.ignore_patterns("__pycache__"))
    text = (d / RMS_FILE).read_text()
    assert text.count(old) >= count, f"the plant's anchor {old!r} is not in kernels/{RMS_FILE}"
    (d / RMS_FILE).write_text(text.replace(old, new, count))
    return d


def problems(kernels_dir) -> str:
    report = kernel_check.run(cfg(), kernels_dir=kernels_dir, log=lambda m: None)
    assert not report.ok
    return "\n".join(report.problems)


def test_the_projects_kernels_pass_the_rules():
    for path in sorted((ROOT / "kernels").glob("*.py")):
        if path.name not in kernel_check.FIXED_FILES:
            assert kernel_rules.check_source(path.read_text(), path.name) == [], path.name


def test_the_projects_kernels_pass_the_check_through_the_cli(capsys, monkeypatch):
    res = in_process(capsys, monkeypatch, "kernels", "check", "backend=cpu")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "kernels check: 9 case(s) passed" in res.stdout and "Triton's interpreter" in res.stdout


def test_an_off_by_one_store_mask_is_caught(tmp_path):
    d = planted(tmp_path, STORE, STORE.replace("mask=mask)", "mask=mask & (rows[:, None] < n_rows - 1))"))
    assert "output (fresh inputs)" in problems(d)


def test_a_wrong_backward_is_caught(tmp_path):
    found = problems(planted(tmp_path, BACKWARD, BACKWARD.replace("g - n", "g + n")))
    assert "grad of x" in found and "output" not in found  # the forward is still right


def test_an_output_cached_by_shape_is_caught(tmp_path):
    """No rule sees this cache (a dict keyed on the shape): the fresh inputs do."""
    d = planted(tmp_path, PUBLIC, "_SEEN = {}\n\n\ndef _uncached_rms_norm(")
    (d / RMS_FILE).write_text((d / RMS_FILE).read_text() + '''

def rms_norm(x, eps=1e-6, weight=None):
    key = (tuple(x.shape), x.dtype, weight is None)
    if key not in _SEEN:
        _SEEN[key] = _uncached_rms_norm(x, eps, weight)
    return _SEEN[key]
''')
    found = problems(d)
    assert "output (fresh inputs)" in found and kernel_rules.check_source((d / RMS_FILE).read_text()) == []


def test_an_output_cached_by_address_is_caught_by_the_rules_and_by_the_overwritten_inputs(tmp_path):
    d = planted(tmp_path, PUBLIC, "_SEEN = {}\n\n\ndef _uncached_rms_norm(")
    (d / RMS_FILE).write_text((d / RMS_FILE).read_text() + '''

def rms_norm(x, eps=1e-6, weight=None):
    key = x.data_ptr()
    if key not in _SEEN:
        _SEEN[key] = _uncached_rms_norm(x, eps, weight)
    return _SEEN[key]
''')
    found = problems(d)
    assert "keys on tensor identity" in found and "inputs overwritten in place" in found


def test_a_silent_torch_fallback_is_caught_even_where_the_rules_do_not_see_it(tmp_path):
    """Operators and an allowed reduction only (no call a rule names): the torch operators
    recorded while it runs give it away."""
    d = planted(tmp_path, PUBLIC, "def _unused_rms_norm(")
    (d / RMS_FILE).write_text((d / RMS_FILE).read_text() + '''

def rms_norm(x, eps=1e-6, weight=None):
    xf = x.float()
    y = xf * ((xf * xf).sum(-1, keepdim=True) / x.shape[-1] + eps) ** -0.5
    return (y if weight is None else y * weight.float()).to(x.dtype)
''')
    found = problems(d)
    assert "torch computed on the launch path (pow" in found
    assert kernel_rules.check_source((d / RMS_FILE).read_text()) == []


def test_a_fallback_to_the_reference_and_work_on_a_side_stream_are_refused_by_the_rules(tmp_path):
    d = planted(tmp_path, PUBLIC, "def _unused_rms_norm(")
    (d / RMS_FILE).write_text((d / RMS_FILE).read_text() + '''

from kernels import reference


def rms_norm(x, eps=1e-6, weight=None):
    side = torch.cuda.Stream()
    try:
        with torch.cuda.stream(side):
            return _unused_rms_norm(x, eps, weight)
    except RuntimeError:
        return reference.rms_norm(x, eps, weight)
''')
    found = "\n".join(kernel_rules.check_source((d / RMS_FILE).read_text(), RMS_FILE))
    for what in ("creates a CUDA stream", "uses a CUDA stream", "try/except", "imports from kernels"):
        assert what in found, what


def test_a_kernel_that_rewrites_the_checks_child_is_refused_by_the_rules(tmp_path):
    """The check's child runs the candidate's code, so a cheat may rewrite the child's own
    reporting: here the kernel replaces the probe's runner with one that hands back the
    reference's answers. The outputs would then match (the comparisons are right, the
    witness lies), so the rules refuse what makes it possible: importing the harness and
    patching an imported module."""
    d = planted(tmp_path, PUBLIC, "def _unused_rms_norm(")
    (d / RMS_FILE).write_text((d / RMS_FILE).read_text() + '''

import harness.kernel_probe as probe
import harness.kernel_cases as cases

_honest = probe._run


def _lying_run(fn, case):
    spec = [c for c in cases.cases() if c.label == case["label"]][0]
    return _honest(spec.__class__.__dict__["call"].__get__(spec) and fn, case)


probe._run = _lying_run
rms_norm = _unused_rms_norm
''')
    found = "\n".join(kernel_rules.check_source((d / RMS_FILE).read_text(), RMS_FILE))
    assert "imports harness.kernel_probe" in found and "assigns to probe._run" in found
    assert "__dict__" in found
    assert "assigns to probe._run" in problems(d)  # and the check as a whole fails on it
