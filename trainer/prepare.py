"""Data, tokenizer, dataloader and the metric. IMMUTABLE: the agent must not edit this.

Under the harness, train.py runs in a sandbox that cannot write this file, cannot read
the validation split (it lives in its own directory, `heldout/`, beside `data/`) and
gets its training batches from the harness's feed (`trainer/feed.py`), which counts
the tokens and keeps the clock. Constants come from the run's config, which the harness
writes to `$AUTORESEARCH_RUN_CONFIG`; by hand, the default config is composed and the
data is read from the cache directly.

Upstream-compatible names (a train.py written for the reference script imports these):
MAX_SEQ_LEN, TIME_BUDGET, Tokenizer, get_token_bytes, make_dataloader, evaluate_bpb.

    autoresearch prepare data=builtin                 # offline corpus + tokenizer (~10 s)
    autoresearch prepare data=climbmix data.num_shards=4
    autoresearch prepare data=local data.path=~/my_text
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from trainer import atomic, build, layout, sources
from trainer import feed as _feed
from trainer import tokenizer as bpe
from trainer import weights as _weights
from trainer.build import READY_FILE, CacheError  # noqa: F401 (re-exported)
from trainer.packing import BestFitPacker

ENV_RUN_CONFIG = "AUTORESEARCH_RUN_CONFIG"  # JSON written by the harness for this run
ENV_HANDOVER = "AUTORESEARCH_MODEL_OUT"  # where evaluate_bpb hands the model over

__all__ = [
    "MAX_SEQ_LEN", "VOCAB_SIZE", "EVAL_TOKENS", "TIME_BUDGET", "TOKEN_BUDGET", "FLOP_BUDGET",
    "MODEL", "budget_progress", "model_flops_per_token", "Tokenizer",
    "get_token_bytes", "make_dataloader", "evaluate_bpb", "score_bpb",
]


def _settings() -> dict:
    path = os.environ.get(ENV_RUN_CONFIG)
    if path:
        return json.loads(Path(path).read_text())
    from harness.config import compose_dict  # by hand: the default config

    return compose_dict("experiment", [])


SETTINGS = _settings()
DATA: dict = SETTINGS["data"]
MODEL: dict = SETTINGS["model"]
MAX_SEQ_LEN: int = DATA["max_seq_len"]  # tokens per row
VOCAB_SIZE: int = DATA["vocab_size"]  # BPE vocabulary incl. special tokens
EVAL_TOKENS: int = DATA["eval_tokens"]  # validation tokens scored (upper bound)
BUDGET: dict = SETTINGS["budget"]  # the budget the harness resolved for this run
TOKEN_BUDGET: int | None = BUDGET.get("tokens")  # budget.mode=tokens: training tokens, else None
FLOP_BUDGET: float | None = BUDGET.get("flops")  # budget.mode=flops: training FLOPs (see model_flops_per_token), else None


class _Budget(float):
    """TIME_BUDGET: training seconds, as a float; under the harness its comparisons also
    say "reached" once the harness's own clock has used the budget up.

    A script written for the upstream project stops on its own clock
    (`if total_training_time >= TIME_BUDGET: break`), which excludes warm-up steps of its
    choosing; the harness's clock is the one that counts, and it cuts a run off at its
    deadline. Comparing through this class makes such a script stop in time instead of
    being cut off. Arithmetic on it gives plain floats.
    """

    def _reached(self) -> bool:
        client = _feed.Client.from_env()
        return client is not None and client.progress() >= 1.0

    def __le__(self, other):  # `other >= TIME_BUDGET`
        return float.__le__(self, other) or self._reached()

    def __lt__(self, other):  # `other > TIME_BUDGET`
        return float.__lt__(self, other) or self._reached()

    def __ge__(self, other):  # `other <= TIME_BUDGET`
        return float.__ge__(self, other) and not self._reached()

    def __gt__(self, other):  # `other < TIME_BUDGET`
        return float.__gt__(self, other) and not self._reached()

    __hash__ = float.__hash__


TIME_BUDGET: float = _Budget(BUDGET["seconds"])  # training seconds on this device (tokens/flops: an estimate)


def model_flops_per_token(model, source=None) -> float:
    """Training FLOPs per token by the rule a flops budget counts, which the harness applies to
    the handed-over file and train.py (harness/modelfile.py): 6 x the weights they can hold,
    one per floating-point element of the model (parameters and buffers, each storage once)
    and half a weight per other byte (integer tensors, the pickle, a bytes attribute, the
    source of `source`: the running script by default). See trainer/weights.py."""
    return 6.0 * _weights.count(model, None if source is None else Path(source))


def budget_progress(training_seconds: float, tokens: int, flops: float = 0.0) -> float:
    """Fraction of this run's budget used, in the budget's own measure: training seconds
    (wall, normalized), tokens (tokens) or FLOPs (flops). Training ends at >= 1.

    Under the harness the answer is the harness's own count (its clock, the tokens its
    feed served) and the arguments only declare this script's FLOPs per token for the
    flops mode; by hand it is computed from the arguments.
    """
    client = _feed.Client.from_env()
    if client is not None:
        if FLOP_BUDGET and tokens > 0:
            client.flops_per_token = flops / tokens
        return client.progress()
    if TOKEN_BUDGET:
        return tokens / TOKEN_BUDGET
    if FLOP_BUDGET:
        return flops / FLOP_BUDGET
    return training_seconds / TIME_BUDGET


# --------------------------------------------------------------------------- paths
# (trainer/layout.py; here with the run's data config as the default)

def data_dir(data: dict = DATA) -> Path:
    return layout.data_dir(data)


def heldout_dir(data: dict = DATA) -> Path:
    return layout.heldout_dir(data)


def tokenizer_dir(data: dict = DATA) -> Path:
    return layout.tokenizer_dir(data)


def split_files(split: str, data: dict = DATA) -> list[Path]:
    return layout.split_files(split, data)


# --------------------------------------------------------------------------- tokenizer

class Tokenizer:
    """The run's BPE tokenizer (a tiktoken Encoding with a BOS special token)."""

    def __init__(self, enc):
        self.enc = enc
        self.bos_token_id = enc.encode_single_token(bpe.BOS)

    @classmethod
    def from_directory(cls, directory: str | Path | None = None) -> "Tokenizer":
        return cls(bpe.load(Path(directory) if directory else tokenizer_dir()))

    def get_vocab_size(self) -> int:
        return self.enc.n_vocab

    def get_bos_token_id(self) -> int:
        return self.bos_token_id

    def encode(self, text, prepend=None, num_threads: int = 8):
        """str -> list[int]; list[str] -> list[list[int]]. prepend: a token id or special string."""
        pre = []
        if prepend is not None:
            pre = [prepend if isinstance(prepend, int) else self.enc.encode_single_token(prepend)]
        if isinstance(text, str):
            return pre + self.enc.encode_ordinary(text)
        return [pre + ids for ids in self.enc.encode_ordinary_batch(list(text), num_threads=num_threads)]

    def decode(self, ids) -> str:
        return self.enc.decode(list(ids))


def get_token_bytes(device="cpu") -> torch.Tensor:
    """int32 (vocab,): exact UTF-8 bytes each token contributes; 0 for special tokens."""
    return torch.from_numpy(bpe.load_token_bytes(tokenizer_dir())).to(device)


def token_bytes_of(data: dict = DATA) -> np.ndarray:
    """The same as get_token_bytes, computed from the tokenizer's merge table rather than
    read from its cached array (what the harness's scorer uses)."""
    return bpe.token_byte_lengths(bpe.load(tokenizer_dir(data)))


# --------------------------------------------------------------------------- dataloader

def _documents(tokenizer: Tokenizer, split: str, data: dict = DATA) -> Iterator[tuple[int, np.ndarray]]:
    """(epoch, token array with BOS first) per document; the train split loops forever."""
    files = split_files(split, data)
    epoch = 1
    while True:
        for path in files:
            batch: list[str] = []
            for text in sources.read_parquet_texts(path):
                batch.append(text)
                if len(batch) == 256:
                    yield from _encode(tokenizer, batch, epoch)
                    batch = []
            yield from _encode(tokenizer, batch, epoch)
        if split == "val":
            return
        epoch += 1


def _encode(tokenizer: Tokenizer, texts: list[str], epoch: int) -> Iterator[tuple[int, np.ndarray]]:
    for ids in tokenizer.encode(texts, prepend=tokenizer.bos_token_id) if texts else []:
        yield epoch, np.asarray(ids, dtype=np.int64)


def packed_rows(split: str, T: int, data: dict = DATA, tokenizer: Tokenizer | None = None) -> Iterator[tuple[np.ndarray, int]]:
    """(int64 row of T + 1 tokens, epoch): rows best-fit packed from the split's documents
    (BOS first, no padding). The val split is read once, in a fixed order, and ends; the
    train split loops over epochs."""
    tokenizer = tokenizer or Tokenizer(bpe.load(tokenizer_dir(data)))
    packer = BestFitPacker(_documents(tokenizer, split, data), T + 1, tagged=True)
    while (row := packer.next_row()) is not None:
        yield row, packer.last_tag


def make_dataloader(tokenizer: Tokenizer, B: int, T: int, split: str, device=None):
    """Yield (x, y, epoch): contiguous int64 (B, T) inputs and next-token targets on the device.

    Under the harness the training split comes from the harness's feed (it counts what
    it serves) and the validation split is not available: the harness scores the model.
    By hand, rows are packed here from the cache.
    """
    import backends

    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    bk = backends.current()
    device = device or bk.device()
    pin = bk.pin_memory()
    client = _feed.Client.from_env()
    if client is not None and split == "val":
        raise RuntimeError("the validation split is held by the harness: hand the model over with "
                           "evaluate_bpb(model, tokenizer, batch_size) and the harness scores it")
    rows = None if client is not None else packed_rows(split, T, DATA, tokenizer)
    while True:
        if client is not None:
            got = client.batch(B, T)
            if got is None:  # the token budget is used up
                print(f"prepare: {_feed.WHY[_feed.EXHAUSTED]}", flush=True)
                return
            batch, epoch = torch.from_numpy(got[0]).long(), got[1]
        else:
            part = [r for _, r in zip(range(B), rows)]
            if len(part) < B:
                return
            batch, epoch = torch.from_numpy(np.stack([r for r, _ in part])), max(e for _, e in part)
        if pin:
            batch = batch.pin_memory()
        batch = batch.to(device, non_blocking=pin)
        yield batch[:, :-1].contiguous(), batch[:, 1:].contiguous(), epoch


# --------------------------------------------------------------------------- the metric

def eval_rows(batch_size: int, data: dict = DATA) -> np.ndarray:
    """int64 (N, MAX_SEQ_LEN + 1): the validation rows the metric scores, in order:
    max(1, EVAL_TOKENS // (batch_size * MAX_SEQ_LEN)) batches of `batch_size` rows
    (fewer when the split ends first)."""
    T = data["max_seq_len"]
    steps = max(1, data["eval_tokens"] // (batch_size * T))
    rows = [r for _, (r, _) in zip(range(steps * batch_size), packed_rows("val", T, data))]
    rows = rows[: len(rows) // batch_size * batch_size]
    if not rows:
        raise RuntimeError(f"the validation split of data={data['name']} has fewer than {batch_size} rows "
                           f"of {T + 1} tokens")
    return np.stack(rows)


def target_logprobs(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """float32 (B, T): log-probability of each target under the logits (B, T, V), in fp32."""
    logits = logits.float()
    return -torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="none").view(y.shape)


def bits_per_byte(nats: float, nbytes: int) -> float:
    if nbytes == 0:
        raise RuntimeError("validation split produced no scorable tokens")
    return nats / (math.log(2) * nbytes)


@torch.no_grad()
def score_bpb(model, batch_size: int, device=None, autocast=None, tokenizer=None) -> float:
    """Bits per byte on the pinned validation split: summed nats / (ln 2 * summed bytes),
    with the model in this process (by hand; the harness scores in its own process).

    `model(idx)` must return logits (B, T, V>=vocab). Targets that are special tokens
    (0 bytes) are excluded from both sums. Scores the rows of `eval_rows(batch_size)`.
    """
    import contextlib

    import backends

    bk = backends.current()
    device = device or bk.device()
    autocast = autocast or bk.autocast
    token_bytes = torch.from_numpy(token_bytes_of()).long().to(device)
    rows = torch.from_numpy(eval_rows(batch_size)).to(device)
    nats, nbytes = 0.0, 0
    for batch in rows.split(batch_size):
        x, y = batch[:, :-1], batch[:, 1:]
        with autocast() if callable(autocast) else contextlib.nullcontext():
            logits = model(x)
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        lp = target_logprobs(logits[..., :VOCAB_SIZE], y)
        tb = token_bytes[y]
        nats -= (lp.double() * (tb > 0)).sum().item()
        nbytes += int(tb.sum().item())
    return bits_per_byte(nats, nbytes)


def evaluate_bpb(model, tokenizer, batch_size: int) -> float:
    """The metric. Under the harness: hands the model over and returns nan.

    The harness saves nothing of this process but the model: it stops its clock, ends
    the training process and everything it started, then scores the saved model in
    fresh sandboxed processes that receive token ids and return logits, while the
    targets and the byte counts stay in the harness. By hand: scores it here.
    """
    out = os.environ.get(ENV_HANDOVER)
    if out:
        model = getattr(model, "_orig_mod", model)  # torch.compile wrapper
        with atomic.replacing(out) as tmp:
            with open(tmp, "wb") as f:  # a file object: the archive is named as trainer/weights.py counts it
                torch.save(model, f)
        client = _feed.Client.from_env()
        if client is not None:
            client.handover()
        return float("nan")
    was_training = model.training
    model.eval()
    try:
        return score_bpb(model, batch_size, tokenizer=tokenizer)
    finally:
        model.train(was_training)


# --------------------------------------------------------------------------- preparation
# (trainer/build.py; here with the run's data config as the default)

def prepare(data: dict = DATA, log=print) -> dict:
    """Build the data set and tokenizer for `data`, or check a built cache in full and
    rebuild what is damaged; return the stats. CacheError when that cannot be done."""
    return build.prepare(data, log)


def verify(data: dict = DATA, full: bool = False) -> list[str]:
    return build.verify(data, full)


def cache_notice(data: dict = DATA) -> str | None:
    return build.cache_notice(data)
