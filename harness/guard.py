"""The hash guard: immutable files are hashed before a run and checked after it.

Anything changed, deleted or added is restored to its snapshot (nothing the agent's
code did survives) and reported, so the harness can refuse the result.
"""
from __future__ import annotations

import site
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


class Guard:
    def __init__(self, extra: list[Path] = ()):
        self.extra = list(extra)
        self.snapshot: dict[Path, bytes] = {}

    def _files(self) -> list[Path]:
        return sorted(set(immutable_files(self.extra)) | set(_startup_hooks()))

    def take(self) -> "Guard":
        compile_all()
        self.snapshot = {p: p.read_bytes() for p in self._files()}
        return self

    def violations(self) -> list[str]:
        """'changed: path' / 'deleted: path' / 'added: path' lines; [] when intact."""
        out = []
        for p, data in self.snapshot.items():
            if not p.exists():
                out.append(f"deleted: {p}")
            elif p.read_bytes() != data:
                out.append(f"changed: {p}")
        for p in self._files():
            if p not in self.snapshot:
                out.append(f"added: {p}")
        return out

    def restore(self, backup: Path | None = None) -> Path | None:
        """Put every snapshotted file back and remove added ones. With `backup`, the modified
        and added files are first copied there (a person editing the project during a run
        loses nothing); returns that folder."""
        for p in self._files():
            if p not in self.snapshot:
                self._keep(p, backup)
                p.unlink(missing_ok=True)
        for p, data in self.snapshot.items():
            if not p.exists() or p.read_bytes() != data:
                self._keep(p, backup)
                p.parent.mkdir(parents=True, exist_ok=True)
                atomic.write_bytes(p, data)
        return backup

    @staticmethod
    def _keep(p: Path, backup: Path | None) -> None:
        if backup is None or not p.exists():
            return
        try:
            rel = p.relative_to(ROOT)
        except ValueError:
            rel = Path(*p.parts[1:])
        dest = backup / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(p.read_bytes())
