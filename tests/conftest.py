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
# Tests import this file as `tests.conftest` too: a second import must reuse the same cache.
SESSION_CACHE = Path(os.environ.get("AUTORESEARCH_TEST_SESSION_CACHE")
                     or tempfile.mkdtemp(prefix="autoresearch-test-cache-"))
os.environ["AUTORESEARCH_TEST_SESSION_CACHE"] = str(SESSION_CACHE)
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


# End-to-end experiments with fixed limits (no calibration needed): the start-up allowance
# and the probe's tolerance are given, as a user may.
FAST = ["backend=cpu", "model=tiny", "budget.mode=wall", "budget.seconds=5", "data.eval_tokens=8192", "quiet=true",
        "budget.allowance_seconds=30", "eval.probe_tolerance=1e-4"]


def experiment(run_dir: Path, train_file: Path | None, *extra, timeout: float = 300):
    """`autoresearch experiment` with FAST settings; (completed process, summary dict)."""
    import json

    args = ["experiment", *FAST, f"hydra.run.dir={run_dir}", *extra]
    if train_file is not None:
        args.append(f"train_file={train_file}")
    res = run_cli(*args, timeout=timeout)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert not list(run_dir.rglob("*.tmp*")), "half-written files left behind"
    return res, summary


def remove_campaign(tag: str, root: Path, backend: str = "cpu") -> None:
    """A test campaign's work tree and branches (its saved-work ones too) out of the project."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout

    git("worktree", "remove", "--force", str(root / tag / backend / "worktree"))
    saved = git("branch", "--list", "--format=%(refname:short)", f"autoresearch-saved/{tag}/*").split()
    for branch in [f"autoresearch/{tag}/{backend}", *saved]:
        git("branch", "-D", branch)


@pytest.fixture(autouse=True)
def _logging_as_it_was():
    """A verb run in-process (cli.main) lets Hydra configure logging: root at ERROR and every
    logger that exists disabled. Put it back after each test, so a later test that reads
    the log (caplog) does not depend on which tests ran before it."""
    import logging

    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    disabled = {name: lg.disabled for name, lg in logging.Logger.manager.loggerDict.items()
                if isinstance(lg, logging.Logger)}
    yield
    root.setLevel(level)
    root.handlers[:] = handlers
    for name, lg in logging.Logger.manager.loggerDict.items():
        if isinstance(lg, logging.Logger):
            lg.disabled = disabled.get(name, False)


@pytest.fixture()
def where(request, tmp_path):
    """(tag, campaign.root) of a campaign of this test's own, removed afterwards (its work
    tree and branches included: they live in the project's repository)."""
    import uuid

    tag = f"{request.module.__name__.rpartition('test_')[2].replace('_', '-')}-{uuid.uuid4().hex[:8]}"
    root = tmp_path / "campaigns"
    yield tag, root
    remove_campaign(tag, root)
