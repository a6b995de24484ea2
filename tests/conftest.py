"""Shared fixtures: a prepared builtin data set in a temporary cache, once per session."""
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Tests never touch the user's cache: one temporary cache for the whole session, set
# before anything imports trainer.prepare (whose constants are read at import).
SESSION_CACHE = Path(tempfile.mkdtemp(prefix="autoresearch-test-cache-"))
os.environ["AUTORESEARCH_CACHE"] = str(SESSION_CACHE)


def pytest_unconfigure(config):
    shutil.rmtree(SESSION_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    """The session cache with data=builtin prepared (corpus + tokenizer)."""
    subprocess.run([sys.executable, "-m", "harness", "prepare", "data=builtin"], cwd=ROOT,
                   check=True, capture_output=True, text=True)
    return SESSION_CACHE


@pytest.fixture()
def use_cache(cache_dir):
    return cache_dir


def run_cli(*args, timeout: float = 300, cwd: Path = ROOT, extra_env=None):
    env = dict(os.environ, **(extra_env or {}))
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
