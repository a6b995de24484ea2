"""The hash guard keeps each immutable file's mode and extended attributes with its
contents: a chmod, a setxattr, a removed or changed xattr, or a file turned into a link or
a FIFO is tampering like an edit (restored, noted, refused). Unit tests on files of a
temporary folder (the guard's file list narrowed to them), then one experiment with
isolation=off whose train.py chmods and setxattrs prepare.py."""
import errno
import os
import stat
import sys
from pathlib import Path

import pytest

from harness import guard

pytestmark = pytest.mark.skipif(not hasattr(os, "setxattr"), reason="os.setxattr is Linux-only")


@pytest.fixture()
def files(tmp_path, monkeypatch):
    """Two files, a.py (0644, with user.keep) and b.py (0755), as the only immutable files."""
    monkeypatch.setattr(guard, "immutable_files", lambda extra=(): sorted(extra))
    monkeypatch.setattr(guard, "_startup_hooks", lambda: [])
    monkeypatch.setattr(guard, "compile_all", lambda: None)
    a, b = tmp_path / "proj" / "a.py", tmp_path / "proj" / "b.py"
    a.parent.mkdir()
    a.write_text("A = 1\n")
    b.write_text("B = 2\n")
    os.chmod(a, 0o644)
    os.chmod(b, 0o755)
    try:
        os.setxattr(a, "user.keep", b"1")
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            pytest.skip(f"no user xattrs on {tmp_path}'s filesystem")
        raise
    return a, b


def xattrs(p) -> dict:
    return {n: os.getxattr(p, n) for n in os.listxattr(p)}


def test_a_chmod_is_tampering_and_is_put_back(files, tmp_path):
    a, b = files
    g = guard.Guard(extra=[a, b]).take()
    assert g.violations() == []
    os.chmod(a, 0o666)  # writable by every user: the project no longer safe from another one
    os.chmod(b, 0o4755)  # setuid
    assert g.violations() == [f"mode changed: {a} (-rw-r--r-- -> -rw-rw-rw-)",
                              f"mode changed: {b} (-rwxr-xr-x -> -rwsr-xr-x)"]
    kept = g.restore(backup=tmp_path / "tampered")
    assert stat.S_IMODE(os.stat(a).st_mode) == 0o644 and stat.S_IMODE(os.stat(b).st_mode) == 0o755
    assert g.violations() == [] and a.read_text() == "A = 1\n" and xattrs(a) == {"user.keep": b"1"}
    assert (kept / "changes.txt").read_text().splitlines() == [f"mode changed: {a} (-rw-r--r-- -> -rw-rw-rw-)",
                                                               f"mode changed: {b} (-rwxr-xr-x -> -rwsr-xr-x)"]


def test_added_removed_and_changed_xattrs_are_tampering_and_are_put_back(files, tmp_path):
    a, b = files
    g = guard.Guard(extra=[a, b]).take()
    os.removexattr(a, "user.keep")
    os.setxattr(a, "user.planted", b"x")
    os.setxattr(b, "user.planted", b"y")
    assert g.violations() == [f"xattrs changed: {a} (added user.planted; removed user.keep)",
                              f"xattrs changed: {b} (added user.planted)"]
    g.restore(backup=tmp_path / "tampered")
    assert xattrs(a) == {"user.keep": b"1"} and xattrs(b) == {} and g.violations() == []
    os.setxattr(a, "user.keep", b"2")
    assert g.violations() == [f"xattrs changed: {a} (changed user.keep)"]
    g.restore()
    assert xattrs(a) == {"user.keep": b"1"}


def test_an_edited_file_comes_back_with_its_mode_and_xattrs(files, tmp_path):
    """The contents are restored through a new inode (an atomic write): it must not come
    back 0644 and without its xattrs."""
    a, b = files
    g = guard.Guard(extra=[a, b]).take()
    a.write_text("A = 0  # planted\n")
    b.write_text("B = 0  # planted\n")
    assert g.violations() == [f"changed: {a}", f"changed: {b}"]
    kept = g.restore(backup=tmp_path / "tampered")
    assert a.read_text() == "A = 1\n" and xattrs(a) == {"user.keep": b"1"} and stat.S_IMODE(os.stat(b).st_mode) == 0o755
    assert (kept / Path(*a.parts[1:])).read_text() == "A = 0  # planted\n" and g.violations() == []  # outside ROOT


def test_a_file_turned_into_a_link_or_a_fifo_is_never_followed(files, tmp_path):
    a, b = files
    g = guard.Guard(extra=[a, b]).take()
    target = tmp_path / "elsewhere.py"
    target.write_text("A = 1\n")  # the same contents: only the type tells
    os.chmod(target, 0o600)
    a.unlink()
    a.symlink_to(target)
    b.unlink()
    os.mkfifo(b)  # reading it would block the harness for ever
    v = g.violations()
    fifo = stat.filemode(os.lstat(b).st_mode)  # prw-r--r-- under umask 022
    assert f"mode changed: {a} (-rw-r--r-- -> lrwxrwxrwx)" in v
    assert f"changed: {b}" in v and f"mode changed: {b} (-rwxr-xr-x -> {fifo})" in v
    g.restore(backup=tmp_path / "tampered")
    assert not a.is_symlink() and stat.S_ISREG(os.lstat(b).st_mode) and g.violations() == []
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600 and target.read_text() == "A = 1\n"  # not touched


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux xattrs")
def test_an_experiment_whose_train_py_chmods_and_setxattrs_prepare_py_is_refused(cache_dir, tmp_path):
    from tests import fakes
    from tests.conftest import ROOT, experiment

    target = ROOT / "trainer" / "prepare.py"
    before = (os.stat(target).st_mode, xattrs(target), target.read_bytes())
    hack = ('import trainer.prepare as tp\nos.chmod(tp.__file__, 0o777)\n'
            'os.setxattr(tp.__file__, "user.planted", b"1")')
    res, s = experiment(tmp_path / "run", fakes.write(tmp_path / "t.py", before_eval=hack), "isolation=off")
    assert s["status"] == "refused" and res.returncode == 6 and s["val_bpb"] is None, s
    assert f"mode changed: {target} ({stat.filemode(before[0])} -> -rwxrwxrwx)" in s["tampered"]
    assert f"xattrs changed: {target} (added user.planted)" in s["tampered"] and "mode changed" in s["reason"]
    assert (os.stat(target).st_mode, xattrs(target), target.read_bytes()) == before  # put back
    listed = (tmp_path / "run" / "tampered" / "changes.txt").read_text().splitlines()
    assert listed == s["tampered"]
