"""`autoresearch ARGS` run in the test's own process (no interpreter start-up): for the many
commands that must fail early, where a subprocess would cost a second each."""
import subprocess

import pytest

from harness import cli, stops


def in_process(capsys, monkeypatch, *args) -> subprocess.CompletedProcess:
    """(exit code, stdout, stderr) of `autoresearch ARGS`, as a CompletedProcess."""
    monkeypatch.setattr(stops, "install", lambda: None)  # leave pytest's own signal handlers alone
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        cli.main(list(args))
    cap = capsys.readouterr()
    return subprocess.CompletedProcess(args, e.value.code, cap.out, cap.err)
