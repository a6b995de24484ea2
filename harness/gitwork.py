"""Git plumbing for campaigns: a branch and a work tree per campaign, never the project's
own checkout (docs/architecture.md, "One campaign"). The branch `autoresearch/<tag>/<slot>`
(harness/slot.py) holds the kept commits; a candidate is committed on it and reset away
when it is not kept. A replay (harness/replay.py) reads commits and builds trees without
any work tree or branch: a patch is applied in a temporary index, and files are read
straight from a tree.

Campaigns side by side (a Hydra multirun) share one repository: `git worktree add` picks
a free name under .git/worktrees, commits and resets move refs, and either may pack refs
or collect garbage. Two at once can collide on those (`worktree add` failing on a name the
other just took, a `*.lock` file held), so every git call that writes holds one lock,
`autoresearch-git.lock` in the repository's common git dir; reading calls run freely.
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from pathlib import Path

from harness import locks

IDENTITY = ["-c", "user.name=autoresearch", "-c", "user.email=autoresearch@localhost",
            "-c", "commit.gpgsign=false",
            # an automatic gc runs inside the call (and its lock), never detached in the background
            "-c", "gc.autoDetach=false"]
# the calls that need no lock: reading ones, and `init` (no shared repository yet)
UNLOCKED = {"rev-parse", "status", "log", "diff", "ls-tree", "init"}
LOCK_FILE = "autoresearch-git.lock"


class GitError(RuntimeError):
    pass


def git(repo: Path, *args: str, check: bool = True, strip: bool = True) -> str:
    if args[0] in UNLOCKED:
        res = subprocess.run(["git", *IDENTITY, *args], cwd=repo, capture_output=True, text=True)
    else:
        with locks.held(common_dir(repo) / LOCK_FILE):
            res = subprocess.run(["git", *IDENTITY, *args], cwd=repo, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise GitError(f"git {' '.join(args)} failed in {repo}: {res.stderr.strip() or res.stdout.strip()}")
    return res.stdout.strip() if strip else res.stdout


@functools.lru_cache(maxsize=64)
def common_dir(repo: Path) -> Path:
    """The git dir a repository and all its work trees share (where the lock lives)."""
    res = subprocess.run(["git", "rev-parse", "--git-common-dir"], cwd=repo, capture_output=True, text=True)
    if res.returncode != 0:
        raise GitError(f"git rev-parse --git-common-dir failed in {repo}: {res.stderr.strip()}")
    path = Path(res.stdout.strip())
    return path if path.is_absolute() else (Path(repo) / path).resolve()


def project_repo(root: Path) -> Path:
    if shutil.which("git") is None:
        raise GitError("campaigns need git, and no `git` command is on PATH: install git or fix PATH")
    try:
        return Path(git(root, "rev-parse", "--show-toplevel"))
    except (GitError, FileNotFoundError) as e:
        raise GitError(f"campaigns need the project to be a git checkout ({root}): {e}") from None


def branch_name(tag: str, slot: str) -> str:
    return f"autoresearch/{tag}/{slot}"


def open_worktree(repo: Path, path: Path, branch: str, start: str = "HEAD") -> Path:
    """The campaign's work tree at `path` on `branch` (a new branch starts at `start`: the
    project's HEAD, or for a replay's new target the commit the source started from)."""
    if (path / ".git").exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    git(repo, "worktree", "prune")  # forget trees whose folders were deleted
    exists = git(repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}", check=False)
    if exists:
        git(repo, "worktree", "add", str(path), branch)
    else:
        git(repo, "worktree", "add", "-b", branch, str(path), start)
    return path


def head(tree: Path) -> str:
    return git(tree, "rev-parse", "HEAD")


def clear_stale_lock(tree: Path) -> None:
    """A process killed mid-commit leaves index.lock behind; nothing else writes here."""
    gitdir = Path(git(tree, "rev-parse", "--git-dir"))
    lock = (gitdir if gitdir.is_absolute() else tree / gitdir) / "index.lock"
    lock.unlink(missing_ok=True)


def reset_to(tree: Path, commit: str) -> None:
    """Branch and files back to `commit`; untracked files (an agent's new files) removed."""
    git(tree, "reset", "--hard", commit)
    git(tree, "clean", "-fdq")


def changed_files(tree: Path) -> list[str]:
    """Paths changed, added or deleted in the work tree, exactly as named (NUL-separated
    output: no quoting of spaces, quotes or newlines in a name)."""
    entries = git(tree, "status", "--porcelain", "-z", "--untracked-files=all", strip=False).split("\0")
    out, i = [], 0
    while i < len(entries):
        entry = entries[i]
        if len(entry) > 3:
            out.append(entry[3:])  # "XY path"
            if entry[0] in "RC":
                i += 1  # a rename's or copy's next entry is its source
        i += 1
    return out


def commit_all(tree: Path, message: str) -> str:
    git(tree, "add", "-A")
    git(tree, "commit", "-q", "--no-verify", "-m", message)
    return head(tree)


def diff_files(tree: Path, parent: str, commit: str) -> list[str]:
    """Paths that differ between two commits, exactly as named."""
    if parent == commit:
        return []
    return [p for p in git(tree, "diff", "--name-only", "-z", parent, commit, strip=False).split("\0") if p]


def diff_stats(tree: Path, parent: str, commit: str) -> dict:
    files = ins = dels = 0
    for line in git(tree, "diff", "--numstat", parent, commit).splitlines():
        a, d, _ = line.split("\t", 2)
        files += 1
        ins += int(a) if a.isdigit() else 0
        dels += int(d) if d.isdigit() else 0
    return {"files": files, "insertions": ins, "deletions": dels}


def set_aside(tree: Path, files: list[str], patch: Path) -> None:
    """Move `files`' uncommitted changes out of the work tree into `patch` (a binary git
    patch: `git apply PATCH` in the work tree brings them back); the files return to HEAD,
    the rest of the work tree is left as it is."""
    git(tree, "add", "-A", "--", *files)
    text = git(tree, "diff", "--cached", "--binary", "HEAD", "--", *files, strip=False)
    patch.parent.mkdir(parents=True, exist_ok=True)
    patch.write_text(text)
    git(tree, "reset", "-q", "HEAD", "--", *files)
    tracked = set(git(tree, "ls-tree", "-r", "--name-only", "HEAD", "--", *files).splitlines())
    for f in files:
        if f in tracked:
            git(tree, "checkout", "HEAD", "--", f)
        else:
            (tree / f).unlink(missing_ok=True)


def save_work(tree: Path, known: set[str], branch: str) -> str | None:
    """Keep what the work tree holds beyond the commits in `known` on a new `branch`
    before the tree is reset: uncommitted edits (committed onto it) and commits made by
    hand. Returns a description of what was kept, None when there was nothing."""
    dirty, what = changed_files(tree), []
    current = head(tree)
    if not dirty and current in known:
        return None
    if current not in known:
        what.append(f"commit {current[:12]} ({git(tree, 'log', '-1', '--format=%s', current)})")
    if dirty:
        git(tree, "add", "-A")
        git(tree, "commit", "-q", "--no-verify", "-m", "uncommitted work found in the campaign's work tree")
        what.append("uncommitted changes to " + ", ".join(dirty[:5]) + (" ..." if len(dirty) > 5 else ""))
    git(tree, "branch", branch, "HEAD")
    return "; ".join(what)


# ---------------------------------------------------------------------- trees, for a replay
def is_commit(repo: Path, commit: str) -> bool:
    """Whether `commit`, a full hash (nothing git could read as an option or a revision
    expression: it may come from a ledger), names a commit in the repository."""
    if not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", commit or ""):
        return False
    return subprocess.run(["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=repo, capture_output=True).returncode == 0


def tree_of(repo: Path, commit: str) -> str:
    return git(repo, "rev-parse", f"{commit}^{{tree}}")


def changed_between(repo: Path, a: str, b: str) -> list[str]:
    """Paths that differ between two commits or trees, exactly as named."""
    return [p for p in git(repo, "diff", "--name-only", "-z", "--no-renames", a, b, strip=False).split("\0") if p]


def apply_on(repo: Path, base: str, parent: str, commit: str, index: Path) -> tuple[str | None, str]:
    """The tree of `base` with the diff parent..commit applied (in the temporary index file
    `index`: no work tree, no branch touched): (tree, "") or (None, why git refused it)."""
    env = {**os.environ, "GIT_INDEX_FILE": str(index)}
    patch = git(repo, "diff", "--binary", "--no-renames", parent, commit, strip=False)

    def run(*args: str, data: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *IDENTITY, *args], cwd=repo, env=env, input=data, capture_output=True,
                              text=True)

    try:
        # it writes objects (blobs, a tree) into the shared repository: under the lock, as any writing call
        with locks.held(common_dir(repo) / LOCK_FILE):
            steps = [run("read-tree", base), run("apply", "--cached", "--check", "-", data=patch)]
            if steps[-1].returncode == 0:
                steps += [run("apply", "--cached", "-", data=patch), run("write-tree")]
        failed = next((r for r in steps if r.returncode != 0), None)
        if failed is not None:
            said = (failed.stderr.strip() or failed.stdout.strip()).splitlines()
            return None, said[0] if said else "git could not apply it"
        return steps[-1].stdout.strip(), ""
    finally:
        index.unlink(missing_ok=True)


def export(repo: Path, tree: str, paths: list[str], dest: Path) -> list[str]:
    """Write the files of `tree` under `paths` (files or folders) into `dest`, byte for
    byte; returns the paths written."""
    names = [n for n in git(repo, "ls-tree", "-r", "-z", "--name-only", tree, "--", *paths, strip=False).split("\0")
             if n]
    for name in names:
        blob = subprocess.run(["git", "cat-file", "blob", f"{tree}:{name}"], cwd=repo, capture_output=True,
                              check=True).stdout
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(blob)
    return names
