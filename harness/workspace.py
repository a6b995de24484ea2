"""Scope-confined file access: the only way an agent touches the campaign's work tree.

The scope (`scope=train|kernels|all`) is a list of relative paths or glob patterns
that may be edited, e.g. ["train.py"] or ["kernels/*.py"], plus immutable files that may be
read but never written. Every path an agent hands us is checked here, before any I/O:
absolute paths, `..` traversal, symlinks that resolve outside the root, paths outside the
editable set and immutable files are refused with a `ScopeError` whose message tells the
agent what is allowed, and the refusal is recorded in `self.refusals` (and logged) so the
campaign's ledger can show what was attempted.

Patterns match whole relative paths, one `/`-separated segment at a time (so "kernels/*.py"
does not reach into kernels/sub/), with `**` matching any number of segments.

Usage:
    ws = Workspace(worktree, editable=["train.py"], immutable=["prepare.py"])
    ws.replace("train.py", "MATRIX_LR = 0.04", "MATRIX_LR = 0.05")
"""
from __future__ import annotations

import logging
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath

log = logging.getLogger(__name__)


class ScopeError(PermissionError):
    """A path outside what the agent may read or write; the message says what is allowed."""


class EditError(ValueError):
    """An edit that is in scope but cannot be applied (text not found, ambiguous, no file)."""


def _match(parts: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    # Segment-wise glob: fnmatch alone lets "*" cross "/" and would widen the scope.
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_match(parts[i:], pattern[1:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatchcase(parts[0], pattern[0]) and _match(parts[1:], pattern[1:])


def matches(path: str, patterns) -> bool:
    """Whether the relative POSIX `path` matches one of `patterns`."""
    parts = PurePosixPath(path).parts
    return any(_match(parts, PurePosixPath(p).parts) for p in patterns)


def _read(path: Path) -> str:
    # newline="": CRLF files round-trip through replace() unchanged.
    with open(path, encoding="utf-8", newline="") as f:
        return f.read()


class Workspace:
    """File access confined to `root`: writes to `editable`, reads also from `immutable`."""

    def __init__(self, root: Path | str, editable: list[str], immutable=()):
        self.root = Path(root).resolve()
        self.editable = [str(p) for p in editable]
        self.immutable = [str(p) for p in immutable]
        self.refusals: list[str] = []

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r}, editable={self.editable})"

    def describe(self) -> str:
        """The scope in words, for an agent's instructions."""
        text = f"You may edit: {', '.join(self.editable) or '(nothing)'}."
        if self.immutable:
            text += f" Read-only (immutable): {', '.join(self.immutable)}."
        return text

    # ------------------------------------------------------------------ checking
    def _refuse(self, message: str):
        self.refusals.append(message)
        log.warning("scope: %s", message)
        raise ScopeError(message)

    def _check(self, path, write: bool) -> tuple[Path, str]:
        """The absolute path and the normalized relative one, or ScopeError."""
        raw = str(path).replace("\\", "/")  # one separator whatever the agent's habits
        if not raw.strip():
            self._refuse("empty path")
        pure = PurePosixPath(raw)
        if pure.is_absolute() or Path(str(path)).is_absolute() or ":" in pure.parts[0]:
            self._refuse(f"{path}: absolute paths are not allowed; use a path relative to the "
                         f"work tree")
        if ".." in pure.parts:
            self._refuse(f"{path}: path traversal ('..') is not allowed")
        rel = PurePosixPath(*[p for p in pure.parts if p != "."]).as_posix()
        full = self.root / rel
        resolved = full.resolve()
        if resolved != self.root and self.root not in resolved.parents:
            self._refuse(f"{path}: resolves outside the work tree (symlink)")
        real = resolved.relative_to(self.root).as_posix()
        # Check the name given and the file it really is: a symlink inside the tree must not
        # turn an editable name into a way to write an immutable file.
        names = {rel, real}
        if any(matches(n, self.immutable) for n in names) and write:
            self._refuse(f"{path}: is immutable and may not be edited")
        allowed = self.editable if write else self.editable + self.immutable
        if not all(matches(n, allowed) for n in names):
            verb = "edit" if write else "read"
            self._refuse(f"{path}: outside the scope; you may {verb} only: "
                         f"{', '.join(allowed) or '(nothing)'}")
        return full, rel

    def allowed(self, path, write: bool = True) -> bool:
        """A check without a recorded refusal, for callers that only ask."""
        saved = list(self.refusals)
        try:
            self._check(path, write)
            return True
        except ScopeError:
            return False
        finally:
            self.refusals[:] = saved

    # ------------------------------------------------------------------ access
    def list_files(self) -> list[str]:
        """Editable files that exist, relative POSIX paths, sorted."""
        found = set()
        for pattern in self.editable:
            for p in self.root.glob(pattern):
                rel = p.relative_to(self.root).as_posix()
                if p.is_file() and self.allowed(rel, write=True):
                    found.add(rel)
        return sorted(found)

    def read(self, path) -> str:
        full, rel = self._check(path, write=False)
        if not full.is_file():
            raise EditError(f"{rel}: no such file (editable files: "
                            f"{', '.join(self.list_files()) or 'none'})")
        return _read(full)

    def write(self, path, text: str) -> None:
        full, _ = self._check(path, write=True)
        full.parent.mkdir(parents=True, exist_ok=True)
        # newline="": keep the text's own line endings, never translate them.
        with open(full, "w", encoding="utf-8", newline="") as f:
            f.write(text)

    def replace(self, path, old: str, new: str) -> None:
        """Replace the one occurrence of `old` in an editable file."""
        full, rel = self._check(path, write=True)
        if not full.is_file():
            raise EditError(f"{rel}: no such file")
        if not old:
            raise EditError(f"{rel}: old text is empty; use write to create or overwrite a file")
        text = _read(full)
        n = text.count(old)
        if n == 0:
            raise EditError(f"{rel}: old text not found; read the file and copy the text "
                            f"exactly, including whitespace")
        if n > 1:
            raise EditError(f"{rel}: old text occurs {n} times; include more surrounding "
                            f"lines so that it occurs exactly once")
        with open(full, "w", encoding="utf-8", newline="") as f:
            f.write(text.replace(old, new, 1))
