"""Building the data cache, and checking and repairing a built one (`autoresearch prepare`).

`prepare(data)` builds the data set's splits and tokenizer, or checks a built cache in
full (every checksum in its manifest, trainer/manifest.py) and rebuilds what is damaged,
one log line per file; it records the cache's files in READY.json. Before each
experiment the harness asks `cache_notice(data)`, the cheap check, whether that is needed.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from trainer import atomic, manifest, sources
from trainer import tokenizer as bpe
from trainer.layout import climbmix_train, data_dir, heldout_dir, local_root, split_files, tokenizer_dir

READY_FILE = "READY.json"  # the stats and the manifest of the cache's files; written last
_UNWRITABLE = "make it writable or set data.cache_dir / AUTORESEARCH_CACHE elsewhere"
_REFETCH = "check the network and data.base_url, then run `autoresearch prepare` again"


class CacheError(RuntimeError):
    """The data cache cannot be built or repaired (unwritable, a failed download): one line
    naming it and the way out, rather than a traceback or the next experiment's crash."""


def cache_files(data: dict, recorded: dict | None = None) -> list[Path]:
    """The files a prepared cache for `data` holds: training and validation parquet files,
    then the tokenizer's. Climbmix's are its configured shards; the other presets' are
    those on disk or `recorded` (a deleted one is missed), else each split's first."""
    d, held = data_dir(data), heldout_dir(data)
    if data["name"] == "climbmix":
        splits = [d / sources.shard_name(i) for i in climbmix_train(data)]
        splits.append(held / sources.shard_name(sources.CLIMBMIX_VAL_SHARD))
    else:
        splits = []
        for folder, split in ((d, "train"), (held, "val")):
            known = (d.parent.parent / rel for rel in recorded or {})
            found = {*folder.glob(f"{split}_*.parquet"),
                     *(p for p in known if p.parent == folder and p.match(f"{split}_*.parquet"))}
            splits += sorted(found) or [folder / f"{split}_00000.parquet"]
    tok = tokenizer_dir(data)
    return splits + [tok / bpe.ENCODING_FILE, tok / bpe.TOKEN_BYTES_FILE]


def _cache(data: dict) -> manifest.Cache:
    d = data_dir(data)
    return manifest.Cache(data["name"], d.parent.parent, d / READY_FILE, lambda rec: cache_files(data, rec))


def verify(data: dict, full: bool = False) -> list[str]:
    """What is wrong with the prepared cache for `data`: one line per file, naming it ([]:
    nothing). full=False checks existence and sizes, and checksums only where an mtime
    moved: cheap enough before every experiment, even for climbmix's GB. full=True checks
    every checksum (and, in a cache without a manifest, that each file opens)."""
    return _cache(data).verify(full)


def cache_notice(data: dict) -> str | None:
    """Why the cache for `data` needs `prepare` before use, in one line; None: it does not."""
    return _cache(data).notice()


def prepare(data: dict, log=print) -> dict:
    """Build the data set and tokenizer for `data`, or check a built one in full (every
    checksum) and rebuild what is damaged, one log line per damaged file; record the
    cache's files in READY.json; return the stats. CacheError when that cannot be done."""
    d, held, cache = data_dir(data), heldout_dir(data), _cache(data)
    t0 = time.time()
    try:
        for folder in (d, held):
            folder.mkdir(parents=True, exist_ok=True)
        _move_legacy_validation(data, d, held, log)
    except OSError as e:
        raise CacheError(cache.cannot({}, e, _UNWRITABLE)) from None
    ready = manifest.read(cache.ready)
    found = cache.problems(ready, full=True)
    damaged = cache.damage(ready, found)
    for path, what in damaged.items():
        log(f"data: {path}: {what}; rebuilding")
    _build(data, cache, found, damaged, ready is None, log)
    stats = _stats(data, d)
    try:
        cache.record(ready, stats, damaged, log)
    except OSError as e:
        raise CacheError(cache.cannot(damaged, e, _UNWRITABLE)) from None
    log(f"prepare: done in {time.time() - t0:.1f} s ({stats['val_bytes'] / 1e6:.2f} MB validation"
        f"{' sampled' if stats['val_sampled'] else ''}, {stats['val_bytes_per_token']:.3f} bytes/token)")
    return stats


def _build(data: dict, cache: manifest.Cache, found: dict, damaged: dict, fresh: bool, log) -> None:
    """Build what is missing or damaged: builtin and local write every split file again
    (deterministically), climbmix deletes the damaged shards and fetches what is not there.
    Writing is tried first, so that an unwritable cache fails at once, not after a download."""
    d, held, tok = data_dir(data), heldout_dir(data), tokenizer_dir(data)
    bad = [p for p in found if p.suffix == ".parquet"]
    try:
        if found or fresh:
            manifest.try_writing([d, held, *([tok] if tok.is_dir() else [])])
        if not (fresh or bad):
            log(f"data: cached at {d} (validation: {held})")
        elif data["name"] == "climbmix":
            for path in bad:
                path.unlink(missing_ok=True)
            base = data.get("base_url") or sources.CLIMBMIX_BASE_URL
            sources.download_shards(d, climbmix_train(data), base, workers=data["workers"])
            sources.download_shards(held, [sources.CLIMBMIX_VAL_SHARD], base, workers=1)
        else:
            _write_splits(data, d, held, log)
        _build_tokenizer(data, found, log)
    except OSError as e:
        if isinstance(e, FileNotFoundError) or not Path(str(e.filename or cache.root)).is_relative_to(cache.root):
            raise  # the local source's (`data.path`), whose own message names the file
        raise CacheError(cache.cannot(damaged, e, _UNWRITABLE)) from None
    except sources.DownloadError as e:
        raise CacheError(cache.cannot(damaged, e, _REFETCH)) from None


def _build_tokenizer(data: dict, found: dict[Path, str], log) -> None:
    """Train the tokenizer when its merges are missing or damaged (training is deterministic:
    the same text gives the same bytes); when only its byte lengths are, write them again."""
    tok = tokenizer_dir(data)
    merges, lengths = tok / bpe.ENCODING_FILE, tok / bpe.TOKEN_BYTES_FILE
    if merges in found:
        log(f"tokenizer: training BPE, vocab {data['vocab_size']} ...")
        t1 = time.time()
        texts = (t for f in split_files("train", data) for t in sources.read_parquet_texts(f))
        enc = bpe.train(bpe.capped(texts, data["tokenizer_chars"]), data["vocab_size"], name=data_dir(data).name)
        bpe.save(enc, tok)
        log(f"tokenizer: trained in {time.time() - t1:.1f} s -> {tok}")
    elif lengths in found:
        bpe.save(bpe.load(tok), tok)
        log(f"tokenizer: {lengths.name} written again from {merges}")
    else:
        log(f"tokenizer: cached at {tok}")


def _move_legacy_validation(data: dict, d: Path, held: Path, log) -> None:
    """Caches from before the validation split had its own directory kept it in `data/`."""
    if data["name"] == "climbmix":
        old = [d / sources.shard_name(sources.CLIMBMIX_VAL_SHARD)]
    else:
        old = sorted(d.glob("val_*.parquet"))
    for path in (p for p in old if p.exists()):
        os.replace(path, held / path.name)
        log(f"data: moved {path.name} to {held} (the validation split lives apart from the training data)")


def _write_splits(data: dict, d: Path, held: Path, log) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if data["name"] == "builtin":
        docs = ((doc_id, text, is_val) for doc_id, text, is_val in sources.builtin_documents())
    elif data["name"] == "local":
        root = local_root(data)
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
            with atomic.replacing((d if split == "train" else held) / f"{split}_{k:05d}.parquet") as tmp:
                pq.write_table(pa.table({"text": texts}), tmp)
    log(f"data: {sum(map(len, shards['train']))} train documents -> {d}, "
        f"{sum(map(len, shards['val']))} validation documents -> {held}")


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

