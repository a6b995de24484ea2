"""The data cache's manifest: each file's size, mtime and sha256, recorded in READY.json
when prepare builds the cache, so that a deleted, truncated or corrupted file is found
before a run reads it (a train.py that crashes inside pyarrow or pickle says nothing
about the cache).

A cheap check (before every experiment) looks at sizes, and hashes only the files whose
mtime moved since they were recorded: an edit in place keeps the size but not the mtime,
so only damage that leaves both alone (a failing disk) needs the full check, which hashes
everything and is what `autoresearch prepare` runs.

Paths are recorded relative to the cache directory, so a cache that is moved or reached
through another `data.cache_dir` still matches its manifest. Which files a data set's
cache holds, and how to rebuild them, is trainer/prepare.py's business; `Cache` is told.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pyarrow.parquet as pq

from trainer import atomic
from trainer import tokenizer as bpe

NO_MANIFEST = "no manifest of its files (written by an older version)"

_CHUNK = 1 << 20


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def read(ready: Path) -> dict | None:
    """READY.json's content; None when there is none (the cache is not prepared). An
    unreadable one counts as one without a manifest, whose files are checked by use."""
    try:
        obj = json.loads(ready.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return obj if isinstance(obj, dict) else {}


def record(root: Path, paths: Iterable[Path], trusted: dict) -> dict[str, dict]:
    """relative path -> {size, mtime_ns, sha256} for `paths`. A file whose size and mtime
    are those of its entry in `trusted` (entries just checked in full) keeps that entry
    instead of being read again: a 1 GB cache is hashed once per prepare, not twice."""
    out = {}
    for path in paths:
        rel = path.relative_to(root).as_posix()
        st = path.stat()
        old = trusted.get(rel)
        if old and (old["size"], old["mtime_ns"]) == (st.st_size, st.st_mtime_ns):
            out[rel] = old
        else:
            out[rel] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256(path)}
    return out


def problem(path: Path, want: dict, full: bool) -> str | None:
    """What is wrong with `path` against its entry `want` (None: nothing). full=False
    hashes it only when its mtime changed."""
    try:
        st = path.stat()
        if st.st_size < want["size"]:
            return f"truncated ({st.st_size} bytes of {want['size']})"
        if st.st_size != want["size"]:
            return f"size {st.st_size} bytes, expected {want['size']}"
        if full or st.st_mtime_ns != want["mtime_ns"]:
            got = sha256(path)
            if got != want["sha256"]:
                return f"checksum mismatch (sha256 {got[:12]}..., expected {want['sha256'][:12]}...)"
    except FileNotFoundError:
        return "missing"
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    return None


def unusable(path: Path) -> str | None:
    """Why a file the manifest does not know (a cache from an older version) cannot be used,
    or None: a parquet file must read through to the end of its `text` column, a tokenizer
    must load, and its byte-length array must be the one its merges give."""
    try:
        if path.suffix == ".parquet":
            pf = pq.ParquetFile(path)
            if "text" not in pf.schema_arrow.names:
                return f"has no 'text' column (columns: {pf.schema_arrow.names})"
            for _ in pf.iter_batches(columns=["text"]):
                pass
        elif path.name == bpe.TOKEN_BYTES_FILE:
            if not np.array_equal(bpe.load_token_bytes(path.parent),
                                  bpe.token_byte_lengths(bpe.load(path.parent))):
                return "does not match the tokenizer's merges"
        else:
            bpe.load(path.parent)
    except Exception as e:  # pyarrow, pickle and numpy each raise their own kinds
        return f"unreadable ({first_line(e)})"
    return None


def problems(root: Path, paths: Iterable[Path], recorded: dict, full: bool) -> dict[Path, str]:
    """Each of `paths` that is not as `recorded` -> what is wrong. A file with no entry is
    "missing" when absent; when present, full=True checks that it can be used and
    full=False says it is not recorded (a cheap check cannot vouch for it)."""
    out = {}
    for path in paths:
        want = recorded.get(path.relative_to(root).as_posix())
        if want is not None:
            what = problem(path, want, full)
        elif not path.exists():
            what = "missing"
        else:
            what = unusable(path) if full else "not recorded in the cache's manifest"
        if what:
            out[path] = what
    return out


def try_writing(folders: Iterable[Path]) -> None:
    """Create and remove a file in each folder: an OSError now, before any work is done,
    rather than after a rebuild or a download (a read-only or shared cache)."""
    for folder in folders:
        with tempfile.TemporaryFile(dir=folder):
            pass


def first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


@dataclass
class Cache:
    """One data set's cache as its manifest sees it."""
    name: str  # the data preset, for messages
    root: Path  # the cache directory: recorded paths are relative to it
    ready: Path  # READY.json: the stats and, under "files", the manifest
    files: Callable[[dict], list[Path]]  # the files the cache should hold, given the recorded entries

    def recorded(self, ready: dict | None) -> dict:
        files = (ready or {}).get("files")
        return files if isinstance(files, dict) else {}

    def problems(self, ready: dict | None, full: bool) -> dict[Path, str]:
        recorded = self.recorded(ready)
        return problems(self.root, self.files(recorded), recorded, full)

    def damage(self, ready: dict | None, found: dict[Path, str]) -> dict[Path, str]:
        """The problems with files the cache held (on disk, or recorded): damage to repair,
        rather than files a new configuration still needs (another vocab, more shards)."""
        recorded = self.recorded(ready)
        return {p: what for p, what in found.items()
                if p.exists() or p.relative_to(self.root).as_posix() in recorded}

    def verify(self, full: bool) -> list[str]:
        """What is wrong, one line per file, naming it ([]: nothing)."""
        ready = read(self.ready)
        if ready is None:
            return [f"{self.ready}: missing (data={self.name} is not prepared)"]
        if "files" not in ready and not full:
            return [f"{self.ready}: {NO_MANIFEST}"]
        return [f"{path}: {what}" for path, what in self.problems(ready, full).items()]

    def notice(self) -> str | None:
        """Why the cache needs `prepare` before use, in one line (None: it does not), by
        the cheap check: it is not prepared yet, has no manifest, or is damaged."""
        ready = read(self.ready)
        if ready is None:
            return f"data={self.name} is not prepared yet; preparing it now"
        if "files" not in ready:
            return f"the data cache has {NO_MANIFEST}; checking it and recording its files"
        found = self.problems(ready, full=False)
        damaged = [f"{path}: {what}" for path, what in self.damage(ready, found).items()]
        if damaged:
            more = f", and {len(damaged) - 1} more" if len(damaged) > 1 else ""
            return f"the data cache is damaged ({damaged[0]}{more}); repairing it"
        if found:
            return f"data={self.name} is not prepared yet for this configuration; preparing it now"
        return None

    def cannot(self, damaged: dict[Path, str], err: BaseException, fix: str) -> str:
        """One line: what is wrong with the cache, why it cannot be mended, the way out."""
        head = f"the data cache at {self.root} cannot be written"
        if damaged:
            (path, what), more = next(iter(damaged.items())), len(damaged) - 1
            head = (f"the data cache at {self.root} is damaged ({path}: {what}"
                    f"{f', and {more} more' if more else ''}) and cannot be repaired")
        return f"{head}: {first_line(err)}; {fix}"

    def record(self, ready: dict | None, stats: dict, damaged: dict[Path, str], log) -> None:
        """Write READY.json: `stats` and the manifest of the cache's files, keeping the
        entries of other configurations' files (another vocab's tokenizer) while they
        exist. A rebuilt file unlike its record is said: its source changed, or the
        rebuild is not deterministic. A sound cache that cannot be written (read-only,
        shared) is used as it is; otherwise the OSError is raised."""
        old = self.recorded(ready)
        trusted = {rel: e for rel, e in old.items() if self.root / rel not in damaged}
        files = record(self.root, self.files({}), trusted)
        for rel, e in files.items():
            if self.root / rel in damaged and rel in old and e["sha256"] != old[rel]["sha256"]:
                log(f"data: {self.root / rel}: rebuilt, but unlike its record (sha256 {e['sha256'][:12]}..., "
                    f"recorded {old[rel]['sha256'][:12]}...): its source changed or the rebuild is not deterministic")
        files.update({rel: e for rel, e in old.items() if rel not in files and (self.root / rel).exists()})
        new = {**stats, "files": dict(sorted(files.items()))}
        if new == ready:
            return
        try:
            atomic.write_json(self.ready, new)
        except OSError as e:
            if damaged or ready is None:
                raise
            log(f"data: the cache's manifest could not be recorded in {self.ready} ({first_line(e)})")
