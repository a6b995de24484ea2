"""Where a data set's files live in the cache: its training split and tokenizer under
`data/<preset>/`, its validation split apart under `heldout/<preset>/`, where no sandbox
may read it. Every function takes the data config (`trainer/prepare.py` gives the run's
as the default)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from trainer import sources


def data_dir(data: dict) -> Path:
    root = Path(os.path.expanduser(data["cache_dir"])) / "data"
    if data["name"] == "local":
        key = hashlib.blake2b(str(local_root(data)).encode(), digest_size=5).hexdigest()
        return root / f"local-{key}"
    return root / data["name"]


def heldout_dir(data: dict) -> Path:
    """Where the validation split lives: beside `data/`, never under it, so that a sandbox
    that may read the training data and the tokenizer cannot read it."""
    return data_dir(data).parent.parent / "heldout" / data_dir(data).name


def tokenizer_dir(data: dict) -> Path:
    return data_dir(data) / f"tokenizer-{data['vocab_size']}"


def local_root(data: dict) -> Path:
    if not data.get("path"):
        raise ValueError("data=local needs data.path=DIR (a directory of .txt/.jsonl/.parquet)")
    return Path(os.path.expanduser(data["path"])).resolve()


def climbmix_train(data: dict) -> list[int]:
    return [i for i in sources.climbmix_indices(data["num_shards"]) if i != sources.CLIMBMIX_VAL_SHARD]


def split_files(split: str, data: dict) -> list[Path]:
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    d = data_dir(data) if split == "train" else heldout_dir(data)
    if data["name"] == "climbmix":
        if split == "val":
            files = [d / sources.shard_name(sources.CLIMBMIX_VAL_SHARD)]
        else:
            files = [d / sources.shard_name(i) for i in climbmix_train(data)]
    else:
        files = sorted(d.glob(f"{split}_*.parquet"))
    missing = [f for f in files if not f.exists()]
    if not files or missing:
        raise FileNotFoundError(
            f"{split} data for data={data['name']} is missing under {d}: "
            f"run `autoresearch prepare data={data['name']}` first"
        )
    return files
