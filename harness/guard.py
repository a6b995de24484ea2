"""The hash guard: immutable files are hashed before a run and checked after it.

Each file's contents, its type and mode bits and its extended attributes (where the
platform and the filesystem have them) are kept. Anything changed, deleted or added is
restored to its snapshot (nothing the agent's code did survives: a chmod that would let
another user write the project, an ACL, which is an xattr, a file turned into a link)
and reported, so the harness can refuse the result.
"""
from __future__ import annotations

import errno
import os
import shutil
import site
import stat
from dataclasses import dataclass
from pathlib import Path

from trainer import atomic

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("harness", "backends", "trainer", "kernels", "conf")
EDITABLE = {ROOT / "trainer" / "train.py"}  # the agent's file (scope=train)
# Bytecode too: a planted .pyc with a matching header would be imported instead of the source.
SUFFIXES = {".py", ".pyc", ".yaml", ".yml", ".toml", ".pth", ".md"}


def immutable_files(extra: list[Path] = ()) -> list[Path]:
    """The project's code and config, minus the agent's files, plus `extra`."""
    files = [ROOT / "pyproject.toml"]
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*"):
            if path.is_file() and path.suffix in SUFFIXES and not _editable(path):
                files.append(path)
    return sorted(set(files) | set(extra))


def _editable(path: Path) -> bool:
    if path.suffix == ".pyc":  # __pycache__/train.cpython-311.pyc belongs to train.py
        return path.parent.parent / (path.name.split(".")[0] + ".py") in EDITABLE
    return path in EDITABLE


def compile_all() -> None:
    """Byte-compile the project first, so that the snapshot holds every .pyc a run uses
    (children run with PYTHONDONTWRITEBYTECODE=1: any .pyc that appears is planted)."""
    import compileall

    for pkg in PACKAGES[:-1]:
        compileall.compile_dir(ROOT / pkg, quiet=2)


def _startup_hooks() -> list[Path]:
    """Files Python runs at interpreter start-up (a .pth can execute code)."""
    dirs = [Path(d) for d in site.getsitepackages() + [site.getusersitepackages()]]
    out = []
    for d in dirs:
        if d.is_dir():
            out += [p for p in d.iterdir() if p.suffix == ".pth" or p.stem in ("sitecustomize", "usercustomize")]
    return out


@dataclass(frozen=True)
class Meta:
    """What the guard keeps of a file besides its contents."""
    mode: int  # st_mode of lstat: the file's type and its permission bits
    xattrs: dict | None  # name -> value; None where the platform or the filesystem has none

    @classmethod
    def of(cls, p: Path) -> "Meta":
        return cls(os.lstat(p).st_mode, _xattrs(p))

    def changes(self, now: "Meta", p: Path) -> list[str]:
        out = []
        if now.mode != self.mode:
            out.append(f"mode changed: {p} ({stat.filemode(self.mode)} -> {stat.filemode(now.mode)})")
        if now.xattrs != self.xattrs:
            if self.xattrs is None or now.xattrs is None:
                what = "unreadable now" if now.xattrs is None else "readable now, not before"
            else:
                before, after = self.xattrs, now.xattrs
                what = "; ".join(f"{verb} {', '.join(sorted(names))}" for verb, names in (
                    ("added", after.keys() - before.keys()), ("removed", before.keys() - after.keys()),
                    ("changed", {n for n in before.keys() & after.keys() if before[n] != after[n]})) if names)
            out.append(f"xattrs changed: {p} ({what})")
        return out


def _xattrs(p: Path) -> dict | None:
    if not hasattr(os, "listxattr"):  # Linux only in Python's os module
        return None
    try:
        return {n: os.getxattr(p, n, follow_symlinks=False) for n in sorted(os.listxattr(p, follow_symlinks=False))}
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):  # a filesystem without them
            return None
        raise


class Guard:
    def __init__(self, extra: list[Path] = ()):
        self.extra = list(extra)
        self.snapshot: dict[Path, bytes] = {}
        self.meta: dict[Path, Meta] = {}

    def _files(self) -> list[Path]:
        return sorted(set(immutable_files(self.extra)) | set(_startup_hooks()))

    def take(self) -> "Guard":
        compile_all()
        self.snapshot = {p: p.read_bytes() for p in self._files()}
        self.meta = {p: Meta.of(p) for p in self.snapshot}
        return self

    def violations(self) -> list[str]:
        """'changed: path' / 'deleted: path' / 'added: path' / 'mode changed: path (...)' /
        'xattrs changed: path (...)' lines; [] when intact."""
        out = []
        for p, data in self.snapshot.items():
            if not os.path.lexists(p):
                out.append(f"deleted: {p}")
                continue
            try:
                now = Meta.of(p)
            except OSError as e:
                out.append(f"changed: {p} (unreadable: {e.strerror})")
                continue
            if _contents(p) != data:
                out.append(f"changed: {p}")
            out += self.meta[p].changes(now, p)
        for p in self._files():
            if p not in self.snapshot:
                out.append(f"added: {p}")
        return out

    def restore(self, backup: Path | None = None) -> Path | None:
        """Put every snapshotted file back, its mode and xattrs too, and remove added ones.
        With `backup`, the modified and added files are first copied there (a person editing
        the project during a run loses nothing) and `changes.txt` there lists every change
        and anything that could not be put back; returns that folder."""
        notes = self.violations()
        for p in self._files():
            if p not in self.snapshot:
                self._keep(p, backup)
                _remove(p)
        for p, data in self.snapshot.items():
            if os.path.lexists(p) and not stat.S_ISREG(os.lstat(p).st_mode):
                _remove(p)  # a link, a FIFO, a directory: never read or chmod through it
            elif os.path.lexists(p) and _contents(p) is None:
                os.chmod(p, stat.S_IMODE(self.meta[p].mode) | stat.S_IRUSR)  # its owner's chmod 000 undone
            if not os.path.lexists(p) or _contents(p) != data:
                self._keep(p, backup)
                p.parent.mkdir(parents=True, exist_ok=True)
                atomic.write_bytes(p, data)  # a new inode: its mode and xattrs are set below
            notes += _put_meta(p, self.meta[p])
        if backup is not None and notes:
            backup.mkdir(parents=True, exist_ok=True)
            (backup / "changes.txt").write_text("".join(line + "\n" for line in notes))
        return backup

    @staticmethod
    def _keep(p: Path, backup: Path | None) -> None:
        if backup is None or not os.path.lexists(p) or not stat.S_ISREG(os.lstat(p).st_mode):
            return
        try:
            rel = p.relative_to(ROOT)
        except ValueError:
            rel = Path(*p.parts[1:])
        dest = backup / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            dest.write_bytes(p.read_bytes())
        except OSError as e:  # unreadable to the harness: said in changes.txt, restored all the same
            dest.with_name(dest.name + ".unreadable").write_text(f"{e}\n")


def _contents(p: Path) -> bytes | None:
    """A regular file's bytes, read without following a link or opening a FIFO or a device;
    None for anything else or where it cannot be read."""
    try:
        if not stat.S_ISREG(os.lstat(p).st_mode):
            return None
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read()
    finally:
        os.close(fd)


def _remove(p: Path) -> None:
    if os.path.isdir(p) and not os.path.islink(p):
        shutil.rmtree(p, ignore_errors=True)
    elif os.path.lexists(p):
        os.unlink(p)


def _put_meta(p: Path, want: Meta) -> list[str]:
    """Give the (regular) file at `p` its recorded xattrs and mode bits, touching only what
    differs (a system site-packages' .pth may not be the harness's to chmod); lines for
    what could not be put back (an xattr only a privileged process may set: security.*)."""
    notes, have = [], Meta.of(p)
    if want.xattrs is not None and have.xattrs != want.xattrs:
        now = have.xattrs or {}
        for name in sorted(now.keys() - want.xattrs.keys()):
            try:
                os.removexattr(p, name, follow_symlinks=False)
            except OSError as e:
                notes.append(f"not restored: {p}: could not remove xattr {name} ({e.strerror})")
        for name, value in want.xattrs.items():
            if now.get(name) != value:
                try:
                    os.setxattr(p, name, value, follow_symlinks=False)
                except OSError as e:
                    notes.append(f"not restored: {p}: could not set xattr {name} ({e.strerror})")
    if os.lstat(p).st_mode != want.mode:  # after the xattrs: an ACL set there also sets the group bits
        try:
            os.chmod(p, stat.S_IMODE(want.mode))
        except OSError as e:
            notes.append(f"not restored: {p}: could not chmod it back to {stat.filemode(want.mode)} ({e.strerror})")
    return notes
