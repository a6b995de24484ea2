"""kernels/linear_ce.py against reference.linear_cross_entropy, on the CPU.

The Triton kernel runs under Triton's interpreter, which must be switched on before the
module's kernels are decorated; another test in this process may already have imported
Triton modules compiled, so the checks run in one subprocess (tests/lce_checks.py) and each
of its cases is reported here as a test of its own.
"""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

import lce_checks

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton")


@pytest.fixture(scope="module")
def results() -> dict:
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "lce_checks.py")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", sorted(lce_checks.CASES))
def test_matches_the_reference(results, case):
    assert case in results, f"{case} did not run: {sorted(results)}"
    assert results[case] is None, results[case]
