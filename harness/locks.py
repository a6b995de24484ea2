"""File locks between the harness's processes: campaigns started side by side (a Hydra
multirun, two terminals) share the project's git repository, the data cache and the
calibration cache.

    with locks.held(git_dir / "autoresearch-git.lock"):        # waits for the holder
        ...
    fd = locks.take(campaign_dir / "campaign.lock")            # None: someone holds it

An advisory lock (flock) on a file: the kernel releases it when its holder dies, however
it dies, so a killed process never leaves a stale lock behind. The lock files stay where
they are (removing one while another process waits on it would let a third one in).
"""
from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


def _open(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)


def take(path: Path) -> int | None:
    """The lock at `path` without waiting: its file descriptor (hold it for as long as the
    lock must last; closing it releases it), None when another process holds it."""
    fd = _open(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


@contextmanager
def held(path: Path, waiting: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold the lock at `path` for the block, waiting for another holder to let go;
    `waiting` is called once when it has to wait (to say so: the wait may be long)."""
    fd = _open(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting is not None:
                waiting()
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def write_owner(fd: int) -> None:
    """Note who holds a lock in its file (for the message another process gives)."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {os.uname().nodename} {time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode(), 0)


def owner(path: Path) -> str:
    """Who holds (or last held) the lock at `path`: 'pid P on HOST since TIME', or ''."""
    try:
        pid, host, since = Path(path).read_text().split()[:3]
    except (OSError, ValueError):
        return ""
    return f"pid {pid} on {host} since {since}"
