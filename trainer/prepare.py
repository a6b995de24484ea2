"""Data, tokenizer, dataloader and the metric. IMMUTABLE: the agent must not edit this.

The harness hashes this file (and the rest of the installed code) before and after every
run and refuses a result when it changed. Constants come from the run's config, which
the harness writes to `$AUTORESEARCH_RUN_CONFIG`; by hand, the default config is composed.

Upstream-compatible names (a train.py written for the reference script imports these):
MAX_SEQ_LEN, TIME_BUDGET, Tokenizer, get_token_bytes, make_dataloader, evaluate_bpb.

    autoresearch prepare data=builtin                 # offline corpus + tokenizer (~10 s)
    autoresearch prepare data=climbmix data.num_shards=4
    autoresearch prepare data=local data.path=~/my_text
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from trainer import atomic, sources
from trainer import tokenizer as bpe
from trainer.packing import BestFitPacker

ENV_RUN_CONFIG = "AUTORESEARCH_RUN_CONFIG"  # JSON written by the harness for this run
ENV_HANDOVER = "AUTORESEARCH_MODEL_OUT"  # where evaluate_bpb hands the model over

__all__ = [
    "MAX_SEQ_LEN", "VOCAB_SIZE", "EVAL_TOKENS", "TIME_BUDGET", "TOKEN_BUDGET", "FLOP_BUDGET",
    "MODEL", "budget_progress", "Tokenizer",
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
TIME_BUDGET: float = float(BUDGET["seconds"])  # training seconds on this device (tokens/flops: an estimate)
TOKEN_BUDGET: int | None = BUDGET.get("tokens")  # budget.mode=tokens: training tokens, else None
FLOP_BUDGET: float | None = BUDGET.get("flops")  # budget.mode=flops: training FLOPs, else None


def budget_progress(training_seconds: float, tokens: int, flops: float = 0.0) -> float:
    """Fraction of this run's budget used, in the budget's own measure: training seconds
    (wall, normalized), tokens (tokens) or FLOPs (flops). Training ends at >= 1."""
    if TOKEN_BUDGET:
        return tokens / TOKEN_BUDGET
    if FLOP_BUDGET:
        return flops / FLOP_BUDGET
    return training_seconds / TIME_BUDGET


# --------------------------------------------------------------------------- paths

def data_dir(data: dict = DATA) -> Path:
    root = Path(os.path.expanduser(data["cache_dir"])) / "data"
    if data["name"] == "local":
        key = hashlib.blake2b(str(_local_root(data)).encode(), digest_size=5).hexdigest()
        return root / f"local-{key}"
    return root / data["name"]


def tokenizer_dir(data: dict = DATA) -> Path:
    return data_dir(data) / f"tokenizer-{data['vocab_size']}"


def _local_root(data: dict) -> Path:
    if not data.get("path"):
        raise ValueError("data=local needs data.path=DIR (a directory of .txt/.jsonl/.parquet)")
    return Path(os.path.expanduser(data["path"])).resolve()


def split_files(split: str, data: dict = DATA) -> list[Path]:
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    d = data_dir(data)
    if data["name"] == "climbmix":
        val = d / sources.shard_name(sources.CLIMBMIX_VAL_SHARD)
        if split == "val":
            files = [val]
        else:
            files = [d / sources.shard_name(i) for i in sources.climbmix_indices(data["num_shards"])]
            files = [f for f in files if f != val]
    else:
        files = sorted(d.glob(f"{split}_*.parquet"))
    missing = [f for f in files if not f.exists()]
    if not files or missing:
        raise FileNotFoundError(
            f"{split} data for data={data['name']} is missing under {d}: "
            f"run `autoresearch prepare data={data['name']}` first"
        )
    return files


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


# --------------------------------------------------------------------------- dataloader

def _documents(tokenizer: Tokenizer, split: str) -> Iterator[tuple[int, np.ndarray]]:
    """(epoch, token array with BOS first) per document; the train split loops forever."""
    files = split_files(split)
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


def make_dataloader(tokenizer: Tokenizer, B: int, T: int, split: str, device=None):
    """Yield (x, y, epoch): int64 (B, T) inputs and next-token targets on the device.

    Rows are best-fit packed (BOS first, no padding). The val split is read once, in a
    fixed order, and ends; the train split loops over epochs.
    """
    import backends

    bk = backends.current()
    device = device or bk.device()
    pin = bk.pin_memory()
    packer = BestFitPacker(_documents(tokenizer, split), T + 1, tagged=True)
    while True:
        rows, epoch = [], 1
        for _ in range(B):
            rows.append(packer.next_row())
            if rows[-1] is None:
                return
            epoch = max(epoch, packer.last_tag)
        batch = torch.from_numpy(np.stack(rows))
        if pin:
            batch = batch.pin_memory()
        batch = batch.to(device, non_blocking=pin)
        yield batch[:, :-1], batch[:, 1:], epoch


# --------------------------------------------------------------------------- the metric

@torch.no_grad()
def score_bpb(model, batch_size: int, device=None, autocast=None, tokenizer=None,
              on_batch=None) -> float:
    """Bits per byte on the pinned validation split: summed nats / (ln 2 * summed bytes).

    `model(idx)` must return logits (B, T, V>=vocab). Targets that are special tokens
    (0 bytes) are excluded from both sums. Scores min(EVAL_TOKENS, the split) tokens.
    `on_batch(x, logits)` runs after each forward call, before its loss is computed
    (the harness's evaluator checks integrity and causality there).
    """
    import contextlib

    import backends

    bk = backends.current()
    device = device or bk.device()
    autocast = autocast or bk.autocast
    tokenizer = tokenizer or Tokenizer.from_directory()
    token_bytes = get_token_bytes(device).long()
    steps = max(1, EVAL_TOKENS // (batch_size * MAX_SEQ_LEN))
    nats = torch.zeros((), dtype=torch.float64, device=device)
    nbytes = torch.zeros((), dtype=torch.int64, device=device)
    loader = make_dataloader(tokenizer, batch_size, MAX_SEQ_LEN, "val", device)
    for _, (x, y, _) in zip(range(steps), loader):
        with autocast() if callable(autocast) else contextlib.nullcontext():
            logits = model(x)
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        if on_batch is not None:
            on_batch(x, logits)
        logits = logits.float()
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="none"
        )
        tb = token_bytes[y.reshape(-1)]
        nats += (loss.double() * (tb > 0)).sum()
        nbytes += tb.sum()
    if nbytes.item() == 0:
        raise RuntimeError("validation split produced no scorable tokens")
    return nats.item() / (math.log(2) * nbytes.item())


def evaluate_bpb(model, tokenizer, batch_size: int) -> float:
    """The metric. Under the harness, hands the model to its evaluator and returns nan.

    The harness computes val_bpb itself, in a separate process that rebuilds the model
    from train.py's class with reference kernels: nothing train.py does can touch it.
    """
    out = os.environ.get(ENV_HANDOVER)
    if out:
        model = getattr(model, "_orig_mod", model)  # torch.compile wrapper
        with atomic.replacing(out) as tmp:
            torch.save(model, tmp)
        return float("nan")
    was_training = model.training
    model.eval()
    try:
        return score_bpb(model, batch_size, tokenizer=tokenizer)
    finally:
        model.train(was_training)


# --------------------------------------------------------------------------- preparation

def prepare(data: dict = DATA, log=print) -> dict:
    """Build the data set and tokenizer for `data` unless cached; return their stats."""
    d = data_dir(data)
    d.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    ready = d / "READY.json"
    if data["name"] == "climbmix":
        base = data.get("base_url") or sources.CLIMBMIX_BASE_URL
        sources.download_shards(d, sources.climbmix_indices(data["num_shards"]), base, workers=data["workers"])
    elif ready.exists():
        log(f"data: cached at {d}")
    else:
        _write_splits(data, d, log)
    tok_dir = tokenizer_dir(data)
    if (tok_dir / bpe.ENCODING_FILE).exists():
        log(f"tokenizer: cached at {tok_dir}")
    else:
        log(f"tokenizer: training BPE, vocab {data['vocab_size']} ...")
        t1 = time.time()
        texts = (t for f in split_files("train", data) for t in sources.read_parquet_texts(f))
        enc = bpe.train(bpe.capped(texts, data["tokenizer_chars"]), data["vocab_size"], name=d.name)
        bpe.save(enc, tok_dir)
        log(f"tokenizer: trained in {time.time() - t1:.1f} s -> {tok_dir}")
    stats = _stats(data, d)
    if data["name"] == "climbmix" or not ready.exists():
        atomic.write_json(ready, stats)
    log(f"prepare: done in {time.time() - t0:.1f} s ({stats['val_bytes'] / 1e6:.2f} MB validation"
        f"{' sampled' if stats['val_sampled'] else ''}, {stats['val_bytes_per_token']:.3f} bytes/token)")
    return stats


def _write_splits(data: dict, d: Path, log) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if data["name"] == "builtin":
        docs = ((doc_id, text, is_val) for doc_id, text, is_val in sources.builtin_documents())
    elif data["name"] == "local":
        root = _local_root(data)
        docs = ((i, t, sources.is_validation(i, data["val_fraction"])) for i, t in sources.local_documents(root))
    else:
        raise ValueError(f"unknown data preset {data['name']!r}")
    shards = {"train": [[]], "val": [[]]}
    for n, (_, text, is_val) in enumerate(docs, 1):
        cur = shards["val" if is_val else "train"]
        if len(cur[-1]) >= 50_000:
            cur.append([])
        cur[-1].append(text)
        if n % 50_000 == 0:
            log(f"data: {n} documents read ...")
    for split, parts in shards.items():
        if not parts[0]:
            raise ValueError(f"data={data['name']}: the {split} split is empty")
        for k, texts in enumerate(parts):
            with atomic.replacing(d / f"{split}_{k:05d}.parquet") as tmp:
                pq.write_table(pa.table({"text": texts}), tmp)
    log(f"data: {sum(map(len, shards['train']))} train / {sum(map(len, shards['val']))} val documents -> {d}")


def _stats(data: dict, d: Path) -> dict:
    enc = bpe.load(tokenizer_dir(data))
    val_bytes = val_tokens = 0
    sampled = False
    for text in (t for f in split_files("val", data) for t in sources.read_parquet_texts(f)):
        val_bytes += len(text.encode("utf-8"))
        val_tokens += len(enc.encode_ordinary(text))
        if val_tokens > 4 * data["eval_tokens"]:  # enough for the ratio (climbmix's shard is large)
            sampled = True
            break
    return {"data": data["name"], "dir": str(d), "vocab_size": enc.n_vocab, "val_bytes": val_bytes,
            "val_tokens": val_tokens, "val_sampled": sampled, "val_bytes_per_token": val_bytes / max(1, val_tokens)}

