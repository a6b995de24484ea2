"""The scorer: val_bpb of a handed-over model, computed in the harness's own process.

    result = score(spec, launch)      # launch(name) -> Runner: a started, sandboxed runner

The scorer holds the validation rows, their targets and the byte counts; it never
imports train.py. Two runners (harness/runner.py) run the model:
1. the scored runner gets the validation inputs batch by batch and returns logits; the
   scorer checks them (shape, finite) and keeps each target's log-probability;
2. it is killed, and only then is a second runner started, alike in every way the
   model's code can see, which rebuilds the model and runs the probe batches
   (harness/probe.py): scored prefixes with random suffixes (a share of rows kept whole),
   rows mixed across batches.
   Their log-probabilities before each cut must match the scored ones within a
   tolerance the harness fixes per device and dtype; a larger change is refused.
val_bpb = summed nats / (ln 2 x summed target bytes), special-token targets excluded;
the byte counts come from the tokenizer's merge table, not from any cached file.
"""
from __future__ import annotations

import mmap
import secrets
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from harness import probe as probe_mod
from harness import proc
from harness import runner as wire
from harness.feed import shared_buffer
from harness.limits import Bound
from trainer import prepare
from trainer.feed import recv_exact


class RunnerFailed(Exception):
    """The runner reported an error, died, or sent something unexpected."""


class RunnerTimeout(Exception):
    pass


MAX_LOGITS_BYTES = 1 << 30  # one forward's float32 logits, shared with a runner


def chunk_rows(batch_rows: int, seq_len: int, vocab: int, cap: int = MAX_LOGITS_BYTES) -> int:
    """Rows per forward call: the preset's batch, or its largest divisor whose logits fit in
    `cap` bytes (the reference preset's 128 x 2048 x 8192 floats would be 8.6 GB)."""
    per_row = seq_len * vocab * 4
    return max([d for d in range(1, batch_rows + 1) if batch_rows % d == 0 and d * per_row <= cap] or [1])


@dataclass
class Spec:
    data: dict
    batch_rows: int  # rows per forward call (the preset's device_batch_size, or a divisor of it)
    eval_batch: int  # the preset's device_batch_size: which validation rows are scored
    probe_batches: int  # batches the probe runner gets (0: no causality check)
    tolerance: float  # nats: the largest allowed change of a compared log-probability
    tolerance_source: str
    timeout: float  # seconds for the whole evaluation
    bound: Bound | None = None  # each runner's own limit (None: only `timeout`)
    vocab: int = field(init=False)

    def __post_init__(self):
        self.vocab = int(self.data["vocab_size"])


class Runner:
    """The harness's end of one runner process: a socket and two shared buffers."""

    def __init__(self, name: str, rows: int, seq_len: int, vocab: int):
        self.name = name
        self.sock, self._child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.in_bytes, self.out_bytes = rows * seq_len * 4, rows * seq_len * vocab * 4
        self.in_fd, self.out_fd = shared_buffer(self.in_bytes), shared_buffer(self.out_bytes)
        self.ids = np.frombuffer(mmap.mmap(self.in_fd, self.in_bytes, access=mmap.ACCESS_WRITE), dtype=np.int32)
        self.logits = np.frombuffer(mmap.mmap(self.out_fd, self.out_bytes, access=mmap.ACCESS_WRITE),
                                    dtype=np.float32)  # written by the runner, read here
        self.vocab = vocab
        self.child: proc.Child | None = None

    def env_value(self, handover: Path, fds: dict[int, int] | None = None) -> str:
        """$AUTORESEARCH_RUNNER; `fds` maps this side's descriptors to the numbers the
        runner will find them at (the sandbox moves them there)."""
        sock, i, o = (fds or {}).get(self._child_sock.fileno(), self._child_sock.fileno()), \
            (fds or {}).get(self.in_fd, self.in_fd), (fds or {}).get(self.out_fd, self.out_fd)
        return f"{sock},{i},{self.in_bytes},{o},{self.out_bytes},{handover}"

    def fds(self) -> tuple[int, ...]:
        return self._child_sock.fileno(), self.in_fd, self.out_fd

    def started(self, child: proc.Child) -> "Runner":
        self.child = child
        self._child_sock.close()
        return self

    def _expect(self, want: bytes, deadline: float) -> None:
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            raw = recv_exact(self.sock, wire.FROM_RUNNER.size)
            op, n = wire.FROM_RUNNER.unpack(raw) if raw else (b"", 0)
            text = recv_exact(self.sock, min(n, wire.MAX_MESSAGE)) if raw and n else b""
        except socket.timeout:
            raise RunnerTimeout(f"the {self.name} runner did not answer in time") from None
        except OSError as e:
            raise RunnerFailed(f"the {self.name} runner's socket failed: {e}") from None
        if op == want:
            return
        if op == wire.FAIL:
            raise RunnerFailed((text or b"").decode("utf-8", "replace").strip())
        if not raw:
            raise RunnerFailed(f"the {self.name} runner exited without answering")
        raise RunnerFailed(f"the {self.name} runner sent {op!r}, expected {want!r}")

    def _send(self, op: bytes, rows: int = 0, seq_len: int = 0) -> None:
        try:
            self.sock.sendall(wire.TO_RUNNER.pack(op, rows, seq_len))
        except OSError:
            raise RunnerFailed(f"the {self.name} runner exited") from None

    def ready(self, deadline: float) -> None:
        self._expect(wire.READY, deadline)

    def load(self, deadline: float) -> None:
        self._send(wire.LOAD)
        self._expect(wire.LOADED, deadline)

    def forward(self, ids: np.ndarray, deadline: float) -> torch.Tensor:
        """float32 (rows, T, vocab) logits for int ids (rows, T), as a view of the buffer."""
        rows, T = ids.shape
        self.ids[: rows * T] = ids.reshape(-1)
        self._send(wire.FORWARD, rows, T)
        self._expect(wire.DONE, deadline)
        return torch.from_numpy(self.logits[: rows * T * self.vocab]).view(rows, T, self.vocab)

    def close(self) -> None:
        """Kill the runner and everything it started; release the buffers."""
        if self.child is not None:
            self.child.kill_tree()
        for closer in (self.sock.close, self._child_sock.close):
            try:
                closer()
            except OSError:
                pass


class NotFinite(Exception):
    pass


def _logprobs(logits: torch.Tensor, targets: np.ndarray) -> np.ndarray:
    if not bool(torch.isfinite(logits).all()):
        raise NotFinite("the model returned non-finite logits")
    return prepare.target_logprobs(logits, torch.from_numpy(targets).long()).numpy()


def score(spec: Spec, launch: Callable[[str], Runner], log=lambda msg: None) -> dict:
    """Score the handed-over model; a dict with status (ok|refused|nan|crash|timeout),
    val_bpb, reason and the probe's figures."""
    t0 = time.monotonic()
    end = t0 + spec.timeout
    scored = prober = None
    result: dict = {"eval_rows": 0, "eval_timing": {}}
    timing = result["eval_timing"]
    if spec.bound is not None:
        result["eval_bound_source"] = spec.bound.source
    try:
        t = time.monotonic()
        scored = launch("scored")
        rows = prepare.eval_rows(spec.eval_batch, spec.data)  # (N, T + 1), while the runner starts
        N, T = rows.shape[0], rows.shape[1] - 1
        token_bytes = prepare.token_bytes_of(spec.data).astype(np.int64)
        x, y = rows[:, :-1].astype(np.int32), rows[:, 1:]
        deadline = _loaded(spec, scored, N * T, t, end, timing)
        lp = np.empty((N, T), dtype=np.float32)
        t_fwd = time.monotonic()
        for i in range(0, N, spec.batch_rows):
            logits = scored.forward(x[i:i + spec.batch_rows], deadline)
            lp[i:i + spec.batch_rows] = _logprobs(logits, y[i:i + spec.batch_rows])
        timing["scored"]["forward"] = time.monotonic() - t_fwd
        scored.close()  # dead before the probe runner runs any of the model's code
        tb = token_bytes[y]
        nats = -float((lp.astype(np.float64) * (tb > 0)).sum())
        val_bpb = prepare.bits_per_byte(nats, int(tb.sum()))
        result.update(eval_rows=N, eval_tokens=N * T, val_bpb=val_bpb)
        log(f"experiment: scored {N * T:,} tokens in {time.monotonic() - t0:.1f} s: val_bpb {val_bpb:.6f}")
        if spec.probe_batches > 0:
            # started only now, as the scored runner was: nothing in its start (its age when
            # the model loads, its paths, its descriptors) differs from the scored one's
            probe_tokens = spec.probe_batches * spec.batch_rows * T
            t = time.monotonic()
            prober = launch("probe")
            deadline = _loaded(spec, prober, probe_tokens, t, end, timing)
            result["probe"] = _probe(spec, prober, x, y, lp, token_bytes, deadline, timing["probe"])
            worst = result["probe"]
            if not worst["max_diff"] <= spec.tolerance:  # nan fails too
                how = (f"scored row {worst['row']} kept whole" if worst["cut"] >= T else
                       f"the tokens of scored row {worst['row']} replaced from position {worst['cut']} on")
                result.update(status="refused", val_bpb=None, reason=(
                    f"the model is not causal: with {how} (and other rows of its batch swapped), the log-probability of "
                    f"the real next token at position {worst['pos']} moved by {worst['max_diff']:.3g} nats "
                    f"(tolerance {spec.tolerance:.3g}, {spec.tolerance_source}). A model must not read future "
                    f"tokens, other rows of its batch, or state left by earlier batches, and must be "
                    f"deterministic within the tolerance."))
                return result
        result.update(status="ok", reason="")
    except NotFinite as e:
        result.update(status="nan", val_bpb=None, reason=str(e))
    except RunnerTimeout as e:
        result.update(status="timeout", val_bpb=None, reason=_timeout_reason(spec, timing, end, e))
    except RunnerFailed as e:
        result.update(status="crash", val_bpb=None, reason=f"evaluation failed: {e}")
    finally:
        for r in (scored, prober):
            if r is not None:
                r.close()
        result["eval_seconds"] = time.monotonic() - t0
        for t in timing.values():
            t.pop("started", None)
    return result


def _loaded(spec: Spec, runner: Runner, tokens: int, t: float, end: float, timing: dict) -> float:
    """Wait for a runner launched at `t` to load its model; the deadline of its last answer:
    its bound from its launch, never past the whole evaluation's end."""
    role = runner.name
    deadline = min(end, t + spec.bound.seconds(role, tokens)) if spec.bound is not None else end
    timing[role] = {"tokens": tokens, "bound": round(deadline - t, 3), "started": t}
    runner.ready(deadline)
    runner.load(deadline)
    timing[role]["startup"] = time.monotonic() - t
    return deadline


def _timeout_reason(spec: Spec, timing: dict, end: float, e: Exception) -> str:
    role = next(reversed(timing), None)  # the runner that was running
    if role is None or spec.bound is None or timing[role]["started"] + timing[role]["bound"] >= end - 1e-6:
        return f"evaluation timed out after {spec.timeout:g} s (eval.timeout_seconds): {e}"
    t = timing[role]
    return (f"the {role} runner was still computing {t['bound']:.1f} s after its launch, its bound for "
            f"{t['tokens']:,} tokens ({spec.bound.source}): an evaluation runs the handed-over model "
            f"as it is; training or adapting it in the runner is compute off the clock, not credited")


def _probe(spec: Spec, prober: Runner, x: np.ndarray, y: np.ndarray, lp: np.ndarray,
           token_bytes: np.ndarray, deadline: float, timing: dict) -> dict:
    seed = secrets.randbits(63)  # drawn after the scored runner is gone; logged afterwards
    rng = np.random.default_rng(seed)
    pool = np.flatnonzero(token_bytes > 0)  # ordinary tokens (no BOS among the random ones)
    batches = probe_mod.make(x, spec.batch_rows, spec.probe_batches, pool, rng)
    t_fwd = time.monotonic()
    worst, compared = None, 0
    for b in batches:
        probe_lp = _logprobs(prober.forward(b.ids, deadline), y[b.rows])
        w = probe_mod.compare(lp, probe_lp, b)
        compared += w.compared
        if worst is None or not (w.diff <= worst.diff):
            worst = w
    timing["forward"] = time.monotonic() - t_fwd
    return {"batches": len(batches), "rows": len(batches) * spec.batch_rows, "positions_compared": compared,
            "max_diff": worst.diff, "row": worst.row, "pos": worst.pos, "cut": worst.cut,
            "tolerance": spec.tolerance, "tolerance_source": spec.tolerance_source, "seed": seed}
