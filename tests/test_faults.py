"""Faults and bad input end with one clear line and the documented exit code, and lose
nothing: the CLI's error mapping, signals, a campaign's fixed settings, the git plumbing
that sets work aside, and the commands that must fail before they make anything."""
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import cli, fixed, gitwork, stops
from harness.agents import StopCampaign
from harness.config import compose, compose_dict
from tests.conftest import FAST, ROOT
from tests.inproc import in_process


def one_line_error(res, code: int, *words: str) -> str:
    """The command's last stderr line, checked: the exit code, no traceback, the words."""
    assert res.returncode == code, res.stdout + res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    last = res.stderr.strip().splitlines()[-1]
    for w in words:
        assert w in last, last
    return last


# ----------------------------------------------------------------- the CLI's mapping

def _verb(exc):
    def _probe(cfg):
        raise exc
    return cli._user_errors(_probe)


@pytest.mark.parametrize("exc, code, words", [
    (OSError(errno.ENOSPC, "No space left on device", "/data/x.parquet"), 2,
     ["no space left", "/data/x.parquet", "run the same command again"]),
    (PermissionError(errno.EACCES, "Permission denied", "/cache"), 2, ["cannot write (/cache)", "data.cache_dir"]),
    (StopCampaign("the agent cannot work"), 7, ["the agent cannot work"]),
    (StopCampaign("a setting", code=2), 2, ["a setting"]),
    (KeyboardInterrupt(), 130, ["interrupted by the user", "run the same command again"]),
    (stops.Terminated(signal.SIGTERM), 143, ["terminated by SIGTERM"]),
])
def test_errors_end_with_one_line_and_their_exit_code(exc, code, words, capsys, monkeypatch):
    monkeypatch.setattr(stops, "received", signal.SIGTERM if isinstance(exc, stops.Terminated) else None)
    cfg = compose("experiment", ["backend=cpu"])
    with pytest.raises(SystemExit) as e:
        _verb(exc)(cfg)
    assert e.value.code == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and all(w in err[0] for w in words), err


def test_record_takes_its_description_as_written():
    text = "lr 0.3, (warm-up) 'a' \"b\" x=y"
    for args in (["-m", text], ["--message", text], [f"--message={text}"], [f"description={text}"]):
        rest, got = cli.take_description(["campaign.tag=t", *args, "backend=cpu"])
        assert got == text and rest == ["campaign.tag=t", "backend=cpu"]
    assert cli.take_description(["backend=cpu"]) == (["backend=cpu"], None)


# ----------------------------------------------------------------- fixed settings

def test_a_campaign_keeps_its_settings_unless_a_call_asks_for_others():
    start = compose_dict("run", ["model=tiny", "budget.mode=wall", "budget.seconds=5"])
    saved = fixed.settings(start)
    later = compose_dict("run", ["model=tiny"])  # the default budget: 17 s normalized
    cfg, taken = fixed.reconcile(later, saved, fixed.override_keys(["model=tiny"]), "t")
    assert (cfg["budget"]["mode"], cfg["budget"]["seconds"]) == ("wall", 5.0)
    assert set(taken) == {"budget.mode", "budget.seconds"}
    with pytest.raises(fixed.SettingsConflict, match=r"budget.seconds=5.0.*asks for budget.seconds=20"):
        fixed.reconcile(compose_dict("run", ["model=tiny", "budget.mode=wall", "budget.seconds=20"]), saved,
                        fixed.override_keys(["budget.mode=wall", "budget.seconds=20"]), "t")
    with pytest.raises(fixed.SettingsConflict, match=r"kernels.mode=auto.*asks for kernels.mode=reference"):
        fixed.reconcile(compose_dict("run", ["model=tiny", "kernels.mode=reference"]), saved,
                        fixed.override_keys(["kernels.mode=reference"]), "t")
    with pytest.raises(fixed.SettingsConflict, match="model.depth"):  # a group names all its keys
        fixed.reconcile(compose_dict("run", ["model=small"]), saved, fixed.override_keys(["model=small"]), "t")
    same, none = fixed.reconcile(start, saved, fixed.override_keys(["budget.seconds=5"]), "t")
    assert none == [] and same == start
    # where things live, and a one-off force, are not the campaign's to fix
    moved = compose_dict("run", ["model=tiny", "budget.mode=wall", "budget.seconds=5", "data.cache_dir=/elsewhere",
                                 "budget.force=true"])
    assert fixed.reconcile(moved, saved, fixed.override_keys(["data.cache_dir=/x", "budget.force=true"]), "t")[1] == []


# ----------------------------------------------------------------- setting work aside

def _repo(tmp_path: Path) -> Path:
    tree = tmp_path / "repo"
    tree.mkdir()
    for args in (["init", "-q"], ["config", "user.email", "t@t"], ["config", "user.name", "t"]):
        gitwork.git(tree, *args)
    (tree / "in.py").write_text("a = 1\n")
    (tree / "out.py").write_text("b = 1\n")
    gitwork.commit_all(tree, "start")
    return tree


def test_set_aside_moves_only_the_named_files_into_a_patch_that_applies_back(tmp_path):
    tree = _repo(tmp_path)
    (tree / "in.py").write_text("a = 2\n")
    (tree / "out.py").write_text("b = 2\n")
    (tree / "new_out.py").write_text("c = 1\n")
    patch = tmp_path / "aside" / "x.patch"
    gitwork.set_aside(tree, ["out.py", "new_out.py"], patch)
    assert (tree / "in.py").read_text() == "a = 2\n"  # kept
    assert (tree / "out.py").read_text() == "b = 1\n" and not (tree / "new_out.py").exists()
    assert gitwork.changed_files(tree) == ["in.py"]
    gitwork.git(tree, "apply", str(patch))
    assert (tree / "out.py").read_text() == "b = 2\n" and (tree / "new_out.py").read_text() == "c = 1\n"


def test_set_aside_handles_hostile_names_and_links_without_following_them(tmp_path):
    """An agent's file names (spaces, quotes, a newline) and a link out of the tree: the
    link itself is set aside, never what it points at."""
    tree = _repo(tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("outside the tree\n")
    (tree / "link out").symlink_to(victim)
    odd = 'we"ird\nname.py'
    (tree / odd).write_text("z = 1\n")
    (tree / "in.py").write_text("a = 5\n")
    assert sorted(gitwork.changed_files(tree)) == sorted(["in.py", "link out", odd])
    patch = tmp_path / "x.patch"
    gitwork.set_aside(tree, ["link out", odd], patch)
    assert victim.read_text() == "outside the tree\n" and not os.path.lexists(tree / "link out")
    assert not (tree / odd).exists() and gitwork.changed_files(tree) == ["in.py"]
    assert str(victim) in patch.read_text() and "outside the tree" not in patch.read_text()


def test_save_work_keeps_commits_and_edits_on_a_branch(tmp_path):
    tree = _repo(tmp_path)
    known = {gitwork.head(tree)}
    assert gitwork.save_work(tree, known, "saved/none") is None  # nothing to keep: no branch
    (tree / "in.py").write_text("a = 3\n")
    gitwork.commit_all(tree, "by hand")
    (tree / "notes.txt").write_text("n\n")
    what = gitwork.save_work(tree, known, "saved/one")
    assert "by hand" in what and "notes.txt" in what
    assert gitwork.git(tree, "show", "saved/one:notes.txt") == "n"
    assert gitwork.git(tree, "show", "saved/one:in.py") == "a = 3"


# ----------------------------------------------------------------- commands that must fail early

def test_commands_that_cannot_work_fail_before_making_anything(tmp_path, capsys, monkeypatch):
    root = tmp_path / "campaigns"
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    res = in_process(capsys, monkeypatch, "run", "backend=cpu", "agent=claude", f"campaign.root={root}")
    one_line_error(res, 2, "ANTHROPIC_API_KEY")
    afile = tmp_path / "afile"
    afile.write_text("")
    one_line_error(in_process(capsys, monkeypatch, "run", "backend=cpu", f"campaign.root={afile}"), 2,
                   "is a file, not a directory")
    one_line_error(in_process(capsys, monkeypatch, "record", "-m", "x", "backend=cpu", f"campaign.root={root}"), 2,
                   "no campaign at")
    monkeypatch.setenv("PATH", str(tmp_path))  # no git on it
    one_line_error(in_process(capsys, monkeypatch, "run", "backend=cpu", f"campaign.root={root}"), 2,
                   "no `git` command is on PATH")
    assert not root.exists()


def test_bad_values_and_unknown_keys_stop_at_once(capsys, monkeypatch):
    res = in_process(capsys, monkeypatch, "experiment", "backend=cpu", "budget.mode=wall", "budget.seconds=0")
    one_line_error(res, 2, "budget.seconds=0")
    one_line_error(in_process(capsys, monkeypatch, "experiment", "backend=cpu", "+foo=1"), 1, "unknown config key 'foo'")
    res = in_process(capsys, monkeypatch, "experiment", "backend=cpu", "budget.reference=nosuchdevice")
    one_line_error(res, 2, "budget.reference='nosuchdevice'")
    assert "calibrate" not in res.stdout  # said before half a minute of calibration, not after
    res = in_process(capsys, monkeypatch, "ledger", "backend=cpu", "backend.threads=4096", "campaign.root=/nonexistent")
    assert "backend.threads=4096 is more than the" in res.stderr and "no campaign at" in res.stderr


def test_sigterm_stops_an_experiment_with_its_summary(use_cache, tmp_path):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "harness", "experiment", *FAST, "budget.seconds=60", f"hydra.run.dir={run_dir}"]
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run_dir / "train.log").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 143, out + err
    assert "INTERRUPTED: terminated by SIGTERM" in err and "Traceback" not in err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["reason"] == "terminated by SIGTERM"
    assert not (run_dir / "train").exists()  # the scratch cleaned up: the children are gone
