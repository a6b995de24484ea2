"""One training run: train.py in its sandbox, fed and timed by the harness.

    outcome = training.run(ctx)     # ctx: the experiment's paths, budget, limits, isolation

train.py gets its batches from the harness's feed (harness/feed.py), which keeps the
clock. The run ends at the first of: the model is handed over (the clock stops; the
whole process tree is killed at once, before anything else happens), train.py exits,
or the deadline passes (cut off: the run is not credited). The handed-over file is then
moved out of the run's scratch directory by the harness: a regular file only, never
through a link.
"""
from __future__ import annotations

import os
import re
import signal
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import proc, stops, summary
from harness.feed import Feed
from harness.telemetry import Telemetry

NAN_PATTERN = re.compile(r"\bnan\b|\binf\b", re.IGNORECASE)
MAX_MODEL_BYTES = 64 << 30
HANDOVER_FILE = "model.pt"


@dataclass
class Outcome:
    status: str = "ok"  # ok | crash | nan | timeout | interrupted
    reason: str = ""
    log_tail: str = ""
    model: Path | None = None  # the handed-over model, moved into the handover directory
    fields: dict = field(default_factory=dict)  # the harness's measurements for the summary
    reported: dict = field(default_factory=dict)  # train.py's own `---` block, kept as its claims


def run(cmd: list[str], *, scratch: Path, handover: Path, env: dict, feed: Feed, log: Path, echo: bool,
        backend: str, on_start=None) -> Outcome:
    out = Outcome()
    # the harness is its descendants' subreaper meanwhile: a process train.py orphans (a double
    # fork) comes back to it, to be measured (harness/telemetry.py) and killed with the rest
    with proc.subreaper():
        child = proc.Child.start(cmd, cwd=scratch, env={**env, **feed.env()}, log=log, echo=echo, prefix="  | ",
                                 pass_fds=feed.child_fds())
        t_spawn = child.t0
        if on_start is not None:
            on_start(child.pid)
        feed.on_handover = lambda: _kill_group(child.pid)
        feed.start(t_spawn)
        tel = Telemetry(child.pid, backend, device_hint=_device_hint(env)).start()
        cut_off = False
        try:
            while True:
                code = child.wait(0.05)
                if code is not None or feed.handed_over.is_set():
                    break
                if time.monotonic() > feed.deadline():
                    cut_off = True
                    break
        except KeyboardInterrupt as e:
            out.status, out.reason = "interrupted", stops.reason(e)
        finally:
            child.kill_tree()  # before anything else: nothing train.py started outlives this line
            tel.stop()
    text = child.output()
    out.log_tail = "\n".join(text.splitlines()[-30:])
    out.reported = summary.parse(text)
    out.fields = {
        "training_seconds": feed.training_seconds(), "startup_seconds": _startup(feed, t_spawn),
        "peak_memory_mb": tel.peak_memory_mb(), "total_tokens_M": feed.tokens / 1e6, "total_tokens": feed.tokens,
        "timed_tokens": feed.timed_tokens, "warmup_tokens_served": feed.warmup_served,
        "num_steps": feed.batches, "train_process_seconds": child.seconds,
        "overshoot_seconds": feed.overshoot(), "slowest_step_seconds": feed.slowest_step,
        "telemetry": tel.summary(_timed_window(feed), feed.timed_tokens),
    }
    if out.status == "interrupted":
        return out
    if feed.error:
        out.status, out.reason = "crash", f"harness error: {feed.error}"
    elif feed.handed_over.is_set() and feed.training_seconds() <= feed.seconds_limit():
        _take_model(scratch / HANDOVER_FILE, handover / HANDOVER_FILE, out)
    elif cut_off or feed.handed_over.is_set():
        out.status = "timeout"
        if feed.t_warm is not None:
            out.reason = (f"train.py was still training {feed.seconds_limit():.1f} s after its clock started "
                          f"(budget {feed.budget_seconds():.1f} s + room for its last step and the handover "
                          f"{feed.room():.1f} s: 1.5 x its slowest step before the budget ran out, "
                          f"{feed.slowest_step:.1f} s, + grace {feed.grace:.1f} s): cut off, not credited")
        else:
            out.reason = (f"train.py had not finished its warm-up ({feed.warmup_served:,} of {feed.warmup_tokens:,} "
                          f"tokens served) when its start-up allowance of {feed.allowance:.1f} s and then its budget ran "
                          f"out: cut off, not credited")
    elif child.popen.returncode != 0:
        nan = any(NAN_PATTERN.search(line) and ("loss" in line.lower() or "fail" in line.lower())
                  for line in text.splitlines()[-20:])
        out.status = "nan" if nan else "crash"
        out.reason = f"train.py exited with code {child.popen.returncode}"
    else:
        out.status = "crash"
        out.reason = ("train.py finished without handing over its model: it must call "
                      "evaluate_bpb(model, tokenizer, batch_size) from prepare")
    return out


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _timed_window(feed: Feed) -> tuple[float, float] | None:
    """The timed training by the feed's clock (monotonic seconds): its energy is the run's."""
    start = feed.clock_start()
    if start is None:
        return None
    return start, start + feed.training_seconds()


def _device_hint(env: dict) -> int | None:
    """The GPU the child was given, where one index is (a hint for telemetry until the
    child shows up on a GPU: the driver's numbering may differ from CUDA's)."""
    for key in ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES"):
        value = str(env.get(key, "")).strip()
        if value.isdigit():
            return int(value)
    return None


def _startup(feed: Feed, t_spawn: float) -> float | None:
    start = feed.clock_start()
    return None if start is None else start - t_spawn


def _take_model(src: Path, dest: Path, out: Outcome) -> None:
    """Copy the handed-over file into the harness's handover directory: only a regular
    file in the scratch directory itself (a link could point at anything the harness can
    read), at most MAX_MODEL_BYTES."""
    try:
        # no link followed, no FIFO waited on
        fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        out.status, out.reason = "crash", f"train.py handed over no readable model file ({src.name}: {e.strerror})"
        return
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_MODEL_BYTES:
            why = "not a regular file" if not stat.S_ISREG(st.st_mode) else f"{st.st_size / 2**30:.1f} GB"
            out.status, out.reason = "crash", f"the handed-over model file is unusable ({why})"
            return
        with os.fdopen(os.dup(fd), "rb") as f, open(dest, "wb") as g:
            while chunk := f.read(16 << 20):
                g.write(chunk)
        os.chmod(dest, 0o444)
        out.model = dest
        out.fields["model_file_mb"] = st.st_size / 2**20
    finally:
        os.close(fd)

