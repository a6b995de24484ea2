"""The training data feed's wire format and its client (immutable, like prepare.py).

Under the harness, train.py never reads the training split: the harness serves every
batch over a socket and a shared-memory buffer it created, counts the tokens it served
and keeps the clock. This module is the training process's end of that link; the
harness's end is `harness/feed.py`. Both sides use the structs below.

    client = Client.from_env()                       # None when not under the harness
    rows, epoch = client.batch(B, T)                 # int32 (B, T + 1) rows, BOS first
    client.progress()                                # fraction of the budget the harness counts as used
    client.handover()                                # after saving the model: the harness takes over

The batches served before the training clock starts (at most budget.warmup_tokens: for
compile and allocator warm-up) are random rows, BOS then random ordinary tokens, of the
same shape; the training split's first rows come with the first timed batch.

The client's figures only steer an honest train.py (when to stop, its LR schedule):
the harness measures the budget itself and cuts a run off at its own deadline, so
nothing this side reports is ever credited.
"""
from __future__ import annotations

import mmap
import os
import socket
import struct
import time
from dataclasses import dataclass

import numpy as np

ENV_FEED = "AUTORESEARCH_FEED"  # "<socket fd>,<shared-memory fd>,<shared-memory bytes>"

# Requests, client -> harness: op, rows, seq_len, declared FLOPs per token (flops mode; 0 = none).
REQUEST = struct.Struct("<4sIId")
OP_BATCH, OP_HANDOVER = b"BTCH", b"HAND"
# Replies, harness -> client: status, epoch, rows, seq_len, training seconds so far (harness
# clock; 0 during warm-up), progress (fraction of the budget used, in the budget's own
# measure), the budget in seconds (0 when it is counted in tokens or FLOPs), tokens served.
REPLY = struct.Struct("<IIIIdddQ")
OK, EXHAUSTED, TOO_BIG, BAD_REQUEST, CLOSED = 0, 1, 2, 3, 4
WHY = {
    EXHAUSTED: "the token budget is used up (a batch that would overrun it is not served): stop training "
               "once prepare.budget_progress() >= 1",
    TOO_BIG: "batch too large for the feed's shared buffer",
    BAD_REQUEST: "bad batch request (rows and seq_len must be positive, seq_len at most MAX_SEQ_LEN)",
    CLOSED: "the harness closed the feed",
}
TOKEN_DTYPE = np.int32


class FeedError(RuntimeError):
    pass


@dataclass
class Reply:
    status: int
    epoch: int
    rows: int
    seq_len: int
    training_seconds: float
    progress: float
    budget_seconds: float
    tokens: int
    received: float  # this process's monotonic clock when the reply arrived


def recv_exact(sock: socket.socket, n: int) -> bytes | None:
    """n bytes from a stream socket, or None when the peer closed it first."""
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


class Client:
    """The training process's end of the feed (one per process, shared by its loaders)."""

    _instance: "Client | None" = None

    def __init__(self, sock_fd: int, shm_fd: int, shm_bytes: int):
        self.sock = socket.socket(fileno=sock_fd)
        self.shm = mmap.mmap(shm_fd, shm_bytes, access=mmap.ACCESS_READ)
        self.last: Reply | None = None
        self.flops_per_token = 0.0

    @classmethod
    def from_env(cls) -> "Client | None":
        if cls._instance is None and os.environ.get(ENV_FEED):
            sock_fd, shm_fd, size = (int(v) for v in os.environ[ENV_FEED].split(","))
            cls._instance = cls(sock_fd, shm_fd, size)
        return cls._instance

    def _ask(self, op: bytes, rows: int = 0, seq_len: int = 0) -> Reply:
        self.sock.sendall(REQUEST.pack(op, rows, seq_len, float(self.flops_per_token)))
        raw = recv_exact(self.sock, REPLY.size)
        if raw is None:
            raise FeedError(WHY[CLOSED])
        self.last = Reply(*REPLY.unpack(raw), received=time.monotonic())
        return self.last

    def batch(self, rows: int, seq_len: int) -> tuple[np.ndarray, int] | None:
        """(int32 (rows, seq_len + 1) copy of the next packed rows, epoch); None when the
        token budget is used up."""
        r = self._ask(OP_BATCH, rows, seq_len)
        if r.status == EXHAUSTED:
            return None
        if r.status != OK:
            raise FeedError(f"{WHY.get(r.status, 'feed error')} (asked for {rows} x {seq_len + 1} tokens)")
        n = rows * (seq_len + 1)
        out = np.frombuffer(self.shm, dtype=TOKEN_DTYPE, count=n).reshape(rows, seq_len + 1).copy()
        return out, r.epoch

    def progress(self) -> float:
        """The budget used, as the harness counted it at the last reply; time-based budgets
        add the seconds elapsed since (this clock only steers: the harness keeps its own)."""
        r = self.last
        if r is None:
            return 0.0
        if r.budget_seconds > 0 and r.training_seconds > 0:  # wall / normalized: the clock runs on
            return r.progress + (time.monotonic() - r.received) / r.budget_seconds
        return r.progress

    def handover(self) -> None:
        """Tell the harness the model is saved; it stops the clock and ends this process."""
        try:
            self.sock.sendall(REQUEST.pack(OP_HANDOVER, 0, 0, 0.0))
            recv_exact(self.sock, REPLY.size)  # the harness ends this process before replying
        except OSError:
            pass
