"""A model runner: the sandboxed process that runs the agent's model for the scorer.

    python -m harness.runner      (started by harness/score.py, inside the sandbox)

It receives token ids and returns logits, nothing else: the targets, the byte counts
and the loss stay in the harness's scorer, which never imports train.py. Protocol over
the socket and the two shared buffers named in $AUTORESEARCH_RUNNER:
  runner -> READY (imports done; no agent code has run yet)
  harness -> LOAD; runner rebuilds the model from the handed-over file -> LOADED or FAIL
  harness -> FRWD rows seq_len (int32 ids in the input buffer);
  runner -> DONE (float32 logits (rows, seq_len, vocab) in the output buffer) or FAIL
The harness closes the socket when it is done; the runner then exits. Whatever this
process writes is only "the model's output": the scorer checks shapes and finiteness
itself, and decides causality by comparing this runner with a fresh one.
"""
from __future__ import annotations

import os
import pickle
import socket
import struct
import sys
import traceback
import types
from pathlib import Path

from harness.definitions import load_definitions

ENV_RUNNER = "AUTORESEARCH_RUNNER"  # "<socket fd>,<in fd>,<in bytes>,<out fd>,<out bytes>,<handover dir>"
TO_RUNNER = struct.Struct("<4sII")  # op, rows, seq_len
FROM_RUNNER = struct.Struct("<4sI")  # op, bytes of message that follow
LOAD, FORWARD = b"LOAD", b"FRWD"
READY, LOADED, DONE, FAIL = b"REDY", b"LODD", b"DONE", b"FAIL"
MAX_MESSAGE = 16 << 10
MODEL_FILE, TRAIN_FILE = "model.pt", "train.py"


# --------------------------------------------------------------------------- loading

class _Unpickler(pickle.Unpickler):
    """Classes pickled from a script live in `__main__`; here they live in `train`."""

    def find_class(self, module, name):
        return super().find_class("train" if module == "__main__" else module, name)


_pickle = types.SimpleNamespace(Unpickler=_Unpickler, load=pickle.load, __name__="pickle")


def load_model(handover: Path, device):
    import torch

    load_definitions(handover / TRAIN_FILE)
    model = torch.load(handover / MODEL_FILE, map_location=device, weights_only=False, pickle_module=_pickle)
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"{MODEL_FILE} holds a {type(model).__name__}, not a torch.nn.Module")
    return model.to(device).eval()


# --------------------------------------------------------------------------- serving

def _send(sock: socket.socket, op: bytes, text: str = "") -> None:
    data = text.encode("utf-8", "replace")[-MAX_MESSAGE:]
    sock.sendall(FROM_RUNNER.pack(op, len(data)) + data)


def _recv(sock: socket.socket) -> tuple[bytes, int, int] | None:
    from trainer.feed import recv_exact

    raw = recv_exact(sock, TO_RUNNER.size)
    return None if raw is None else TO_RUNNER.unpack(raw)


def _scratch_dirs() -> None:
    """The cache and temporary directories the environment names: a runner's scratch
    starts empty (a fresh tmpfs where the sandbox has namespaces)."""
    from harness.sandbox.policy import SCRATCH_VARS

    for var in SCRATCH_VARS:
        if os.environ.get(var):
            os.makedirs(os.environ[var], exist_ok=True)


def main() -> int:
    import mmap

    _scratch_dirs()
    sock_fd, in_fd, in_bytes, out_fd, out_bytes, handover = os.environ[ENV_RUNNER].split(",", 5)
    in_bytes, out_bytes = int(in_bytes), int(out_bytes)
    sock = socket.socket(fileno=int(sock_fd))
    ids_buf = mmap.mmap(int(in_fd), in_bytes, access=mmap.ACCESS_READ)
    out_buf = mmap.mmap(int(out_fd), out_bytes, access=mmap.ACCESS_WRITE)

    import numpy as np
    import torch

    import backends
    import trainer.prepare as prepare

    sys.modules["prepare"] = prepare  # train.py's `import prepare`
    bk = backends.current()
    device = bk.device()
    vocab = prepare.VOCAB_SIZE
    _send(sock, READY)
    msg = _recv(sock)
    if msg is None or msg[0] != LOAD:
        return 0
    try:
        model = load_model(Path(handover), device)
    except BaseException:  # noqa: BLE001 - the model's own code failed: reported, not hidden
        _send(sock, FAIL, "could not rebuild the model: " + traceback.format_exc(limit=8))
        return 1
    _send(sock, LOADED)
    out_all = torch.frombuffer(out_buf, dtype=torch.float32)
    while (msg := _recv(sock)) is not None:
        op, rows, seq_len = msg
        if op != FORWARD or rows * seq_len * vocab * 4 > out_bytes or rows * seq_len * 4 > in_bytes:
            _send(sock, FAIL, f"bad request {op!r} {rows}x{seq_len}")
            return 1
        try:
            ids = np.frombuffer(ids_buf, dtype=np.int32, count=rows * seq_len).reshape(rows, seq_len)
            x = torch.from_numpy(ids.astype(np.int64)).to(device)
            with torch.no_grad(), bk.autocast():
                out = model(x)
            if isinstance(out, (tuple, list)):
                out = out[0]
            if not isinstance(out, torch.Tensor) or out.dim() != 3 or tuple(out.shape[:2]) != (rows, seq_len) \
                    or out.shape[2] < vocab:
                what = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise ValueError(f"forward returned {what}; expected logits of shape ({rows}, {seq_len}, >={vocab})")
            out_all[: rows * seq_len * vocab].view(rows, seq_len, vocab).copy_(out[..., :vocab].detach().float())
        except BaseException:  # noqa: BLE001
            _send(sock, FAIL, "the model's forward failed: " + traceback.format_exc(limit=8))
            return 1
        _send(sock, DONE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
