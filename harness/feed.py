"""The harness's data feed and training clock: the only source of training data a run has.

    feed = Feed(data, budget, warmup_tokens=4096, allowance=6.0, grace=2.0)
    child = Child.start(cmd, env={**env, **feed.env()}, pass_fds=feed.child_fds(), ...)
    feed.start(t_spawn)                    # serves batches in a thread from now on
    ... feed.handed_over.is_set(), feed.deadline(), feed.training_seconds() ...
    feed.close()

The training process asks for batches over a socket (`trainer/feed.py` is its end) and
reads them from a shared buffer this side writes. What the harness counts here is what
the run is credited with, whatever train.py prints:
- tokens served (tokens and flops budgets stop serving when they are used up);
- warm-up: at most `warmup_tokens` tokens are served before the clock starts (compile,
  allocator), and they carry nothing of the data set: each warm-up row is BOS followed
  by random ordinary tokens drawn here from a fixed seed (the same rows every run, so a
  rerun of the same train.py is the same computation; random tokens say nothing of the
  text whatever the seed, and no row of the split is among them), and the training
  split's stream does not advance meanwhile (the first timed batch is the split's first
  rows). However many steps train.py takes on them before the clock, it learns nothing
  about the text;
- the training clock: it starts at the first batch request that would take the tokens
  served past `warmup_tokens` (before that batch is served: it is timed, so a first
  request bigger than the warm-up starts the clock at once; one that exactly reaches it
  is still warm-up) or when the start-up allowance measured on the frozen baseline runs
  out, whichever comes first; it stops when the model is handed over (the save is part
  of training);
- the deadline: clock start + budget (tokens/flops: 1.5 x their estimate in seconds) +
  the room its last step needs: 1.5 x its slowest step before the budget ran out (a
  step: `requests_per_step` consecutive requests, the preset's micro-batches per
  optimizer step) + `grace` for the handover (the save), at least `grace`, at most the
  budget again. A run that finishes its last step and hands over inside that room is
  credited with the seconds it used (`overshoot_seconds` says how many past the budget);
  one still training at the deadline is cut off, never credited. A run that keeps
  training on its own after the budget went by is stopped by the same rule: its room is
  its own steps', frozen when the budget ran out;
- tokens and flops budgets: a request that would take the run past the budget is not
  served (the client's loader ends), so the count never exceeds it.
"""
from __future__ import annotations

import mmap
import os
import socket
import tempfile
import threading
import time
from collections import deque

import numpy as np

from harness.budget import Budget
from trainer import feed as wire
from trainer import prepare
from trainer import tokenizer as bpe

MAX_BATCH_TOKENS = 16 << 20  # int32 tokens in one batch: 64 MB of shared buffer
MAX_SOURCES = 4  # row lengths packed at once (one per distinct seq_len asked for)
WARMUP_SEED = 20261207  # the warm-up rows' generator: fixed, so reruns are identical
FIRST_EPOCH = 1  # the epoch the training split's stream starts in (it does not advance during warm-up)


def shared_buffer(size: int) -> int:
    """An anonymous, inheritable-on-request file descriptor of `size` bytes (memfd on
    Linux, an unlinked temporary file elsewhere): shared with one child, no path to open."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("autoresearch", os.MFD_CLOEXEC)
    else:
        fd, path = tempfile.mkstemp(prefix="autoresearch-shm-")
        os.unlink(path)
    os.ftruncate(fd, size)
    return fd


class _Rows:
    """Packed training rows of one length, produced ahead of the requests in a thread."""

    def __init__(self, data: dict, seq_len: int, tokenizer):
        self._it = prepare.packed_rows("train", seq_len, data, tokenizer)
        self._buf: deque = deque()
        self._cv = threading.Condition()
        self._want, self._closed, self.error = 1, False, None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                with self._cv:
                    self._cv.wait_for(lambda: self._closed or len(self._buf) < self._want)
                    if self._closed:
                        return
                row = next(self._it)  # the training split loops forever
                with self._cv:
                    self._buf.append(row)
                    self._cv.notify_all()
        except BaseException as e:  # noqa: BLE001 - reported to the requester
            with self._cv:
                self.error = e
                self._cv.notify_all()

    def prime(self, n: int) -> None:
        """Start producing `n` rows before anyone asks."""
        with self._cv:
            self._want = max(self._want, n)
            self._cv.notify_all()

    def take(self, n: int) -> tuple[np.ndarray, int]:
        with self._cv:
            self._want = max(self._want, 2 * n)  # keep a batch ahead of the next request
            self._cv.notify_all()
            self._cv.wait_for(lambda: len(self._buf) >= n or self.error is not None or self._closed)
            if self._closed:
                raise ConnectionAbortedError("the feed is closed")  # an OSError: the server ends quietly
            if self.error is not None:
                raise RuntimeError(f"the training data could not be read: {self.error}") from self.error
            rows = [self._buf.popleft() for _ in range(n)]
            self._cv.notify_all()
        return np.stack([r for r, _ in rows]), max(e for _, e in rows)

    def close(self) -> None:
        """Stop producing, and wait for the row in hand: a thread still inside pyarrow or the
        tokenizer when the interpreter exits aborts the whole process (std::terminate)."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join(timeout=30)


class Feed:
    def __init__(self, data: dict, budget: Budget, *, warmup_tokens: int, allowance: float, grace: float,
                 baseline_flops_per_token: float | None = None, first_rows: int | None = None,
                 keep_times: bool = False, requests_per_step: int = 1):
        self.data, self.budget = data, budget
        self.warmup_tokens, self.allowance, self.grace = warmup_tokens, allowance, grace
        self.baseline_fpt = baseline_flops_per_token
        self._parent, self._child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.shm_bytes = MAX_BATCH_TOKENS * np.dtype(wire.TOKEN_DTYPE).itemsize
        self.shm_fd = shared_buffer(self.shm_bytes)
        self._mm = mmap.mmap(self.shm_fd, self.shm_bytes, access=mmap.ACCESS_WRITE)
        self._tok = prepare.Tokenizer.from_directory(prepare.tokenizer_dir(data))
        # warm-up rows: BOS, then tokens drawn uniformly from the ordinary ones (those with
        # bytes in the merge table, as the probe's random suffixes), the same every run
        self._pool = np.flatnonzero(bpe.token_byte_lengths(self._tok.enc) > 0)
        self._rng = np.random.default_rng(WARMUP_SEED)
        self._rows: dict[int, _Rows] = {}
        if first_rows:  # start packing before the child asks: its start-up hides it
            self._source(data["max_seq_len"]).prime(2 * first_rows)
        self.t_spawn: float | None = None
        self.t_warm: float | None = None  # the request that would take the tokens past the warm-up (clock start)
        self.t_handover: float | None = None
        # tokens = warmup_served (random rows, before the clock) + timed_tokens (the split's rows, timed)
        self.tokens = self.batches = self.timed_tokens = self.warmup_served = 0
        self.declared_fpt = 0.0
        self.error: str | None = None  # a harness-side failure (unreadable data), not the agent's
        self.requests_per_step = max(1, int(requests_per_step))
        self._window: deque = deque(maxlen=self.requests_per_step + 1)  # the last timed request times
        self.slowest_step = 0.0  # the longest run of requests_per_step timed requests, before the budget end
        self.keep_times = keep_times
        self.request_times: list[tuple[float, int]] = []  # (time, tokens) of every timed request, if kept
        self.handed_over = threading.Event()
        self.on_handover = None  # called at once, from the serving thread (the harness kills there)
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ the child's side
    def child_fds(self) -> tuple[int, int]:
        return self._child.fileno(), self.shm_fd

    def env(self) -> dict[str, str]:
        return {wire.ENV_FEED: f"{self._child.fileno()},{self.shm_fd},{self.shm_bytes}"}

    def start(self, t_spawn: float) -> None:
        self.t_spawn = t_spawn
        self._child.close()  # the child holds its end; EOF here when its last holder dies
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ the clock
    def clock_start(self, now: float | None = None) -> float | None:
        """Monotonic time the training clock started (None: not yet, as of `now`)."""
        if self.t_spawn is None:
            return None
        by_allowance = self.t_spawn + self.allowance
        start = min(self.t_warm, by_allowance) if self.t_warm is not None else by_allowance
        end = self.t_handover if self.t_handover is not None else (now if now is not None else time.monotonic())
        return start if start <= end else None

    def training_seconds(self, now: float | None = None) -> float:
        start = self.clock_start()
        if start is None:
            return 0.0
        end = self.t_handover if self.t_handover is not None else (now or time.monotonic())
        return max(0.0, end - start)

    def budget_seconds(self) -> float:
        """Training seconds the budget stands for (tokens/flops: 1.5 x their estimate)."""
        b = self.budget
        return b.seconds * (1.5 if b.mode in ("tokens", "flops") else 1.0)

    def room(self, now: float | None = None) -> float:
        """Seconds past the budget that the run's last step and its handover may take."""
        step = self.slowest_step
        if step <= 0.0:  # no whole step before the budget ran out: the one in progress took all of it
            step = self.budget_seconds() if self.clock_start(now) is not None else 0.0
        return max(self.grace, min(1.5 * step + self.grace, self.budget.seconds))

    def seconds_limit(self, now: float | None = None) -> float:
        """Training seconds after which the run is cut off."""
        return self.budget_seconds() + self.room(now)

    def deadline(self) -> float:
        start = self.clock_start() or (self.t_spawn or time.monotonic()) + self.allowance
        return start + self.seconds_limit()

    def overshoot(self) -> float:
        """Training seconds past the budget (wall and normalized budgets; 0 otherwise)."""
        if self.budget.mode not in ("wall", "normalized"):
            return 0.0
        return max(0.0, self.training_seconds() - self.budget.seconds)

    def _timed_request(self, now: float) -> None:
        start = self.clock_start(now)
        self._window.append(now)
        # steps that ended after the budget ran out do not count: the room is frozen then
        if start is not None and now - start <= self.budget_seconds() and len(self._window) == self._window.maxlen:
            self.slowest_step = max(self.slowest_step, now - self._window[0])

    def flops_per_token(self) -> float:
        return self.declared_fpt or self.baseline_fpt or 0.0

    def _share(self, tokens: int) -> float | None:
        """The fraction of a tokens or flops budget that `tokens` served would use; None
        when the budget is counted in seconds."""
        b = self.budget
        if b.mode == "tokens" and b.tokens:
            return tokens / b.tokens
        if b.mode == "flops" and b.flops:
            return tokens * self.flops_per_token() / b.flops
        return None

    def progress(self, now: float | None = None) -> float:
        share = self._share(self.tokens)
        return share if share is not None else self.training_seconds(now) / self.budget.seconds

    def _exhausted(self, more: int) -> bool:
        """Whether serving `more` tokens would take the run past a tokens or flops budget
        (never served, whatever the size of the request: a budget is never overrun)."""
        share = self._share(self.tokens + more)
        return share is not None and share > 1.0

    # ------------------------------------------------------------------ serving
    def _source(self, seq_len: int) -> _Rows:
        if seq_len not in self._rows:
            if len(self._rows) >= MAX_SOURCES:  # bounded memory, whatever lengths are asked for
                oldest = next(iter(self._rows))
                self._rows.pop(oldest).close()
            self._rows[seq_len] = _Rows(self.data, seq_len, self._tok)
        else:
            self._rows[seq_len] = self._rows.pop(seq_len)  # most recently used last
        return self._rows[seq_len]

    def _reply(self, status: int, rows: int = 0, seq_len: int = 0, epoch: int = 0) -> None:
        now = time.monotonic()
        budget_s = self.budget.seconds if self.budget.mode in ("wall", "normalized") else 0.0
        self._parent.sendall(wire.REPLY.pack(status, epoch, rows, seq_len, self.training_seconds(now),
                                             self.progress(now), budget_s, self.tokens))

    def _serve(self) -> None:
        try:
            while True:
                raw = wire.recv_exact(self._parent, wire.REQUEST.size)
                if raw is None:
                    return  # every process holding the child's end has exited
                op, rows, seq_len, fpt = wire.REQUEST.unpack(raw)
                now = time.monotonic()
                if op == wire.OP_HANDOVER:
                    if self.on_handover is not None:
                        self.on_handover()  # nothing of the run goes on after this
                    self.t_handover = time.monotonic()
                    self.handed_over.set()
                    return
                if op != wire.OP_BATCH:
                    self._reply(wire.BAD_REQUEST)
                    continue
                if fpt > 0 and fpt == fpt and fpt < 1e15:  # a finite, plausible declaration
                    self.declared_fpt = float(fpt)
                self._batch(now, rows, seq_len)
        except OSError:
            return  # the child's end is gone
        except RuntimeError as e:  # unreadable training data: the harness's failure
            self.error = str(e)
            self._parent.close()

    def _batch(self, now: float, rows: int, seq_len: int) -> None:
        if not (0 < rows and 0 < seq_len <= self.data["max_seq_len"]):
            return self._reply(wire.BAD_REQUEST)
        if rows * (seq_len + 1) > MAX_BATCH_TOKENS:
            return self._reply(wire.TOO_BIG)
        tokens = rows * seq_len  # what the batch counts for (its inputs; the targets add one per row)
        timed = self.clock_start(now) is not None
        if not timed and self.tokens + tokens > self.warmup_tokens:
            self.t_warm, timed = now, True  # the clock starts before this batch is served: it is timed
        if self._exhausted(tokens):
            return self._reply(wire.EXHAUSTED)
        if timed:
            batch, epoch = self._source(seq_len).take(rows)
        else:
            batch, epoch = self._warmup_rows(rows, seq_len), FIRST_EPOCH
        n = rows * (seq_len + 1)
        np.frombuffer(self._mm, dtype=wire.TOKEN_DTYPE, count=n)[:] = batch.reshape(-1)
        self.tokens += tokens
        self.batches += 1
        if timed:
            self.timed_tokens += tokens
            self._timed_request(now)
            if self.keep_times:
                self.request_times.append((now, tokens))
        else:
            self.warmup_served += tokens
        self._reply(wire.OK, rows, seq_len, epoch)

    def _warmup_rows(self, rows: int, seq_len: int) -> np.ndarray:
        """(rows, seq_len + 1) int32 like a packed batch: BOS, then random ordinary tokens."""
        out = np.empty((rows, seq_len + 1), dtype=wire.TOKEN_DTYPE)
        out[:, 0] = self._tok.get_bos_token_id()
        out[:, 1:] = self._rng.choice(self._pool, size=(rows, seq_len))
        return out

    def close(self) -> None:
        for src in self._rows.values():
            src.close()
        for s in (self._parent, self._child):
            try:
                s.shutdown(socket.SHUT_RDWR)  # wakes a server blocked in recv
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=10)  # it ends on the closed socket or the closed rows
        try:
            self._mm.close()
        except (BufferError, ValueError):
            pass
        try:
            os.close(self.shm_fd)
        except OSError:
            pass
