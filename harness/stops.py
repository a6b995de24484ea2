"""SIGTERM and SIGHUP stop the harness as Ctrl-C does.

A job scheduler, `timeout`, systemd or a closed terminal stops a run with SIGTERM or
SIGHUP; Python's default for them is to die on the spot, leaving no summary, no message
and, in a campaign, no saved state. `install()` turns them into `Terminated`, a
KeyboardInterrupt, so every path that handles Ctrl-C (children killed, the summary
written, the campaign's state saved) handles them too; the command then exits with
128 + the signal's number, as a shell reports a process killed by it.
"""
from __future__ import annotations

import signal

received: int | None = None  # the first stopping signal this process got, if any


class Terminated(KeyboardInterrupt):
    def __init__(self, signum: int):
        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signum = signum


def _stop(signum, frame) -> None:
    global received
    if received is not None:  # a second one while cleaning up: cleaning up goes on
        return
    received = signum
    raise Terminated(signum)


def install() -> None:
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _stop)


def exit_code(default: int = 130) -> int:
    """The exit code of a command stopped by a signal: 128 + its number; Ctrl-C's 130 otherwise."""
    return 128 + received if received is not None else default


def reason(e: BaseException) -> str:
    return str(e) if isinstance(e, Terminated) else "interrupted by the user"
