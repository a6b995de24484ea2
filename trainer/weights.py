"""The weights a live model will hand over, by the harness's count of the handed-over file.

    n = weights.count(model, source=Path("train.py"))   # what prepare.model_flops_per_token x 6

The harness counts the file `torch.save(model)` writes and the train.py the runners rebuild
the model from, without running either (harness/modelfile.py): one weight per element of a
floating-point tensor, half a weight (what a 16-bit float packs) per every other byte of
the file (integer tensors, the pickle with any bytes in it, zip headers) and of train.py.
This is train.py's side of that rule, so that a script declaring it through
`prepare.budget_progress` is stopped by the feed where the harness's check would stop it.
It saves the model into a sink that keeps only its size, with `torch.serialization.skip_data`
where torch has it (no storage is copied off the device; older torch copies and drops it).
Only the model's parameters and buffers are known here as floating tensors: a floating
tensor kept in a plain attribute counts as its bytes (more than the harness counts), never less.
"""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import torch

BYTES_PER_WEIGHT = 2  # harness/modelfile.py's rule: outside a floating tensor, a byte is half a weight


class _Sink:
    """A seekable file that keeps nothing but its end (torch.save's zip writer seeks)."""

    def __init__(self):
        self.pos = self.end = 0

    def write(self, data) -> int:
        n = memoryview(data).nbytes
        self.pos += n
        self.end = max(self.end, self.pos)
        return n

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = offset if whence == 0 else self.pos + offset if whence == 1 else self.end + offset
        self.end = max(self.end, self.pos)
        return self.pos

    def tell(self) -> int:
        return self.pos

    def flush(self) -> None:
        pass


def saved_bytes(model) -> int:
    """Size of the file torch.save(model) writes, in bytes."""
    sink = _Sink()
    with getattr(torch.serialization, "skip_data", contextlib.nullcontext)():
        torch.save(model, sink)
    return sink.end


def running_script() -> Path | None:
    """The script this process runs (train.py under the harness), if it is a file."""
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    return Path(path) if path and os.path.isfile(path) else None


def count(model, source: Path | None = None) -> int:
    """Weights of `model` as handed over with the script at `source` (default: the running one)."""
    model = getattr(model, "_orig_mod", model)  # torch.compile's wrapper: evaluate_bpb unwraps it too
    seen, floats = set(), 0
    taken: dict[int, int] = {}  # storage -> bytes of its floating elements
    limit: dict[int, int] = {}
    for t in [*model.parameters(), *model.buffers()]:
        st = t.untyped_storage()
        key = (st.data_ptr(), t.storage_offset(), tuple(t.shape), t.dtype)
        if t.is_floating_point() and key not in seen:
            seen.add(key)
            floats += t.numel()
            taken[st.data_ptr()] = taken.get(st.data_ptr(), 0) + t.numel() * t.element_size()
            limit[st.data_ptr()] = st.nbytes()
    other = saved_bytes(model) - sum(min(n, limit[k]) for k, n in taken.items())
    source = running_script() if source is None else source
    other += os.path.getsize(source) if source is not None else 0
    return floats + -(-other // BYTES_PER_WEIGHT)
