"""Child processes: their environment and their whole-tree kill."""
import subprocess
import sys
import time

from harness import proc


def test_child_env_carries_no_credentials(monkeypatch):
    """The agent's code has no business with API keys: a train.py could print one into a log."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-secret")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp-secret")
    monkeypatch.setenv("AUTORESEARCH_CPU_DTYPE", "fp32")
    env = proc.child_env("cpu", 2, None)
    assert "ANTHROPIC_API_KEY" not in env and "GITHUB_TOKEN" not in env
    assert env["AUTORESEARCH_CPU_DTYPE"] == "fp32" and env["AUTORESEARCH_THREADS"] == "2"
    assert "AUTORESEARCH_RUN_CONFIG" not in env and "AUTORESEARCH_MODEL_OUT" not in env


def test_kill_tree_takes_a_grandchild_that_left_the_group(tmp_path):
    with proc.subreaper():  # as during a training run; not left on for the rest of the session
        _kill_a_grandchild_that_left_the_group(tmp_path)


def _kill_a_grandchild_that_left_the_group(tmp_path):
    code = ("import subprocess, sys, time\n"
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], start_new_session=True)\n"
            "print(p.pid, flush=True)\n"
            "time.sleep(60)\n")
    child = proc.Child.start([sys.executable, "-c", code], cwd=tmp_path, env=proc.child_env("cpu", None, None),
                             log=tmp_path / "log")
    deadline = time.time() + 20
    while not child.tail and time.time() < deadline:  # the grandchild's pid, once printed
        time.sleep(0.05)
    grandchild = int(child.tail[0])
    child.kill_tree()
    assert child.wait(5) is not None
    time.sleep(0.2)
    alive = subprocess.run(["ps", "-o", "stat=", "-p", str(grandchild)], capture_output=True, text=True).stdout
    assert alive.strip() == ""  # dead and reaped: no zombie left for the rest of a campaign
