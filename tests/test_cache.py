"""The data cache checks and repairs itself: READY.json's manifest, `verify`, `prepare`
rebuilding what is damaged, `ensure_prepared` before an experiment, and one-line
CacheErrors when the cache cannot be written. Small data=local caches (a tokenizer of
300 tokens), built in-process in a temporary directory of each test's own."""
from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness.config import compose_dict
from tests.conftest import ROOT
from trainer import manifest, sources
from trainer import prepare as P
from trainer import tokenizer as bpe

WORDS = "the of and to in a is that for it as was with be by on not he this are or his".split()
STATS_KEYS = {"data", "dir", "vocab_size", "val_bytes", "val_tokens", "val_sampled", "val_bytes_per_token"}


def _doc(seed: int) -> str:
    return " ".join(WORDS[(seed * 31 + i * i) % len(WORDS)] for i in range(60 + seed % 50)) + f" café {seed}."


def _local(tmp_path: Path, cache: Path | None = None) -> dict:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    for i in range(40):
        (src / f"doc{i:02d}.txt").write_text(_doc(i), encoding="utf-8")
    return compose_dict("prepare", ["data=local", f"data.path={src}", f"data.cache_dir={cache or tmp_path / 'cache'}",
                                    "data.vocab_size=300", "data.val_fraction=0.2"])["data"]


def _files(data: dict) -> dict[str, Path]:
    tok = P.tokenizer_dir(data)
    return {"train": P.split_files("train", data)[0], "val": P.split_files("val", data)[0],
            "merges": tok / bpe.ENCODING_FILE, "lengths": tok / bpe.TOKEN_BYTES_FILE}


@pytest.fixture()
def prepared(tmp_path):
    """(data, its files by role, their bytes as first built)."""
    data = _local(tmp_path)
    P.prepare(data, log=lambda _: None)
    files = _files(data)
    return data, files, {k: p.read_bytes() for k, p in files.items()}


def _repair(data: dict) -> list[str]:
    lines: list[str] = []
    P.prepare(data, log=lines.append)
    return lines


def _truncate(path: Path) -> int:
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[: size // 2])
    return size


def _flip(path: Path, keep_mtime: bool) -> None:
    """Flip a byte in the middle; the mtime is put back, or moved a second on (set, as a
    write within the same clock tick as prepare's might leave it unchanged)."""
    st = path.stat()
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + (0 if keep_mtime else 10**9)))


def _ready(data: dict) -> dict:
    return json.loads((P.data_dir(data) / P.READY_FILE).read_text())


def test_ready_json_records_every_file_beside_the_stats(prepared):
    data, files, _ = prepared
    ready = _ready(data)
    assert STATS_KEYS <= set(ready) and ready["vocab_size"] == 300
    root = Path(data["cache_dir"])
    assert sorted(ready["files"]) == sorted(p.relative_to(root).as_posix() for p in files.values())
    for path in files.values():
        entry = ready["files"][path.relative_to(root).as_posix()]
        assert entry == {"size": path.stat().st_size, "mtime_ns": path.stat().st_mtime_ns,
                         "sha256": manifest.sha256(path)}
    assert P.verify(data) == [] and P.verify(data, full=True) == [] and P.cache_notice(data) is None
    assert _repair(data)[:2] == [f"data: cached at {P.data_dir(data)} (validation: {P.heldout_dir(data)})",
                                 f"tokenizer: cached at {P.tokenizer_dir(data)}"]


def test_a_deleted_training_file_is_rebuilt(prepared):
    data, files, original = prepared
    files["train"].unlink()
    assert P.verify(data) == [f"{files['train']}: missing"]
    lines = _repair(data)
    assert f"data: {files['train']}: missing; rebuilding" in lines
    assert files["train"].read_bytes() == original["train"]
    assert P.verify(data, full=True) == []


def test_a_truncated_validation_file_is_rebuilt(prepared):
    data, files, original = prepared
    size = _truncate(files["val"])
    problem = f"{files['val']}: truncated ({size // 2} bytes of {size})"
    assert P.verify(data) == [problem]
    assert f"data: {problem}; rebuilding" in _repair(data)
    assert files["val"].read_bytes() == original["val"]
    assert P.verify(data, full=True) == []


def test_a_truncated_tokenizer_is_retrained_to_the_same_bytes(prepared):
    data, files, original = prepared
    size = _truncate(files["merges"])
    lines = _repair(data)
    assert f"data: {files['merges']}: truncated ({size // 2} bytes of {size}); rebuilding" in lines
    assert any(line.startswith("tokenizer: trained") for line in lines)
    assert not any("unlike its record" in line for line in lines)  # retraining is deterministic
    assert files["merges"].read_bytes() == original["merges"]
    assert files["lengths"].read_bytes() == original["lengths"]


def test_a_tokenizer_trained_again_in_another_process_has_the_same_bytes(prepared, tmp_path):
    """Retraining is how a damaged tokenizer is repaired: it must not depend on the process
    (a hash seed, thread timing), or a repaired cache would score differently."""
    data, files, original = prepared
    code = ("import sys; from pathlib import Path; from trainer import sources, tokenizer as bpe; "
            "texts = (t for f in sys.argv[1:-1] for t in sources.read_parquet_texts(Path(f))); "
            f"bpe.save(bpe.train(texts, {data['vocab_size']}, name={P.data_dir(data).name!r}), Path(sys.argv[-1]))")
    train = [str(f) for f in P.split_files("train", data)]
    subprocess.run([sys.executable, "-c", code, *train, str(tmp_path / "again")], cwd=ROOT, check=True)
    assert (tmp_path / "again" / bpe.ENCODING_FILE).read_bytes() == original["merges"]
    assert (tmp_path / "again" / bpe.TOKEN_BYTES_FILE).read_bytes() == original["lengths"]


def test_a_damaged_byte_length_array_is_rewritten_from_the_merges(prepared):
    data, files, original = prepared
    files["lengths"].write_bytes(b"not numpy")
    lines = _repair(data)
    assert not any(line.startswith("tokenizer: trained") for line in lines)
    assert files["lengths"].read_bytes() == original["lengths"]
    assert P.verify(data, full=True) == []


def test_same_size_corruption(prepared):
    """A flipped byte with the mtime moved is caught by the cheap check; with the mtime put
    back (a failing disk) only the full check, which prepare runs, finds it."""
    data, files, original = prepared
    _flip(files["train"], keep_mtime=False)
    [problem] = P.verify(data)
    assert problem.startswith(f"{files['train']}: checksum mismatch (sha256 ")
    _flip(files["train"], keep_mtime=True)  # flipped back: the bytes are as recorded again
    assert P.verify(data, full=True) == []
    _flip(files["val"], keep_mtime=True)
    assert P.verify(data) == []
    [problem] = P.verify(data, full=True)
    assert problem.startswith(f"{files['val']}: checksum mismatch")
    assert f"data: {problem}; rebuilding" in _repair(data)
    assert files["val"].read_bytes() == original["val"]


def test_a_cache_from_an_older_version_gets_its_manifest(prepared):
    """READY.json without "files": the files are checked by opening them, the sound ones
    are kept as they are, a broken one is rebuilt, and the manifest is written."""
    data, files, original = prepared
    ready_path = P.data_dir(data) / P.READY_FILE
    old = {k: v for k, v in _ready(data).items() if k != "files"}
    ready_path.write_text(json.dumps(old))
    assert P.verify(data) == [f"{ready_path}: {manifest.NO_MANIFEST}"]
    assert "older version" in P.cache_notice(data)
    kept = {k: (p.stat().st_ino, p.stat().st_mtime_ns) for k, p in files.items()}
    assert _repair(data)[:2] == [f"data: cached at {P.data_dir(data)} (validation: {P.heldout_dir(data)})",
                                 f"tokenizer: cached at {P.tokenizer_dir(data)}"]
    assert {k: (p.stat().st_ino, p.stat().st_mtime_ns) for k, p in files.items()} == kept  # nothing rewritten
    assert _ready(data)["files"] and P.verify(data) == []

    ready_path.write_text(json.dumps(old))
    files["val"].write_bytes(b"PAR1" + b"\0" * 64)  # not parquet, and no size on record to compare
    files["merges"].write_bytes(b"\x80\x04 broken pickle")
    lines = _repair(data)
    assert any(line.startswith(f"data: {files['val']}: unreadable (") and line.endswith("; rebuilding")
               for line in lines)
    assert any(line.startswith(f"data: {files['merges']}: unreadable (") for line in lines)
    assert {k: p.read_bytes() for k, p in files.items()} == original
    assert P.verify(data, full=True) == []


def test_a_new_vocab_is_prepared_beside_the_old_one(prepared):
    data, files, _ = prepared
    other = dict(data, vocab_size=320)
    assert P.cache_notice(other) == "data=local is not prepared yet for this configuration; preparing it now"
    P.prepare(other, log=lambda _: None)
    recorded = _ready(data)["files"]
    root = Path(data["cache_dir"])
    assert {files["merges"].relative_to(root).as_posix(),
            (P.tokenizer_dir(other) / bpe.ENCODING_FILE).relative_to(root).as_posix()} <= set(recorded)
    assert P.verify(data, full=True) == [] and P.verify(other, full=True) == []


def _one_line_cache_error(data: dict, *needles: str) -> str:
    with pytest.raises(P.CacheError) as info:
        P.prepare(data, log=lambda _: None)
    msg = str(info.value)
    assert "\n" not in msg and isinstance(info.value, RuntimeError)
    assert "set data.cache_dir / AUTORESEARCH_CACHE elsewhere" in msg
    for needle in needles:
        assert needle in msg, msg
    return msg


def _modes_bind(tmp_path: Path) -> bool:
    """Whether a directory's read-only mode stops this process (not so for root, unless it
    runs without CAP_DAC_OVERRIDE)."""
    probe = tmp_path / "mode-probe"
    probe.mkdir(mode=0o555)
    try:
        (probe / "x").touch()
    except PermissionError:
        return True
    return False


def test_a_read_only_damaged_cache_raises_one_line(prepared, tmp_path):
    if not _modes_bind(tmp_path):
        pytest.skip("this user writes through read-only modes (root)")
    data, files, _ = prepared
    _truncate(files["val"])
    dirs = [P.data_dir(data), P.heldout_dir(data), P.tokenizer_dir(data)]
    for d in dirs:
        d.chmod(0o555)
    try:
        _one_line_cache_error(data, f"the data cache at {data['cache_dir']} is damaged ({files['val']}: truncated",
                              "cannot be repaired", "Permission denied")
    finally:
        for d in dirs:
            d.chmod(0o755)


def test_a_cache_that_cannot_be_rewritten_raises_one_line(prepared):
    """Root-proof: the damaged file is replaced by a directory, which no rename replaces."""
    data, files, _ = prepared
    files["merges"].unlink()
    (files["merges"] / "in-the-way").mkdir(parents=True)
    _one_line_cache_error(data, f"is damaged ({files['merges']}: ", "cannot be repaired", "Is a directory")


def test_an_unwritable_empty_cache_raises_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("the cache's parent is a file")
    data = _local(tmp_path, cache=blocker / "cache")
    _one_line_cache_error(data, f"the data cache at {blocker / 'cache'} cannot be written", "Not a directory")
    if _modes_bind(tmp_path):
        ro = tmp_path / "read-only"
        ro.mkdir(mode=0o555)
        _one_line_cache_error(dict(data, cache_dir=str(ro)), "cannot be written", "Permission denied")


@pytest.mark.parametrize("junk", [os.urandom(2000), b"just some text, renamed\n"], ids=["random", "text"])
def test_a_junk_parquet_file_in_local_data_is_named(tmp_path, junk):
    data = _local(tmp_path)
    bad = Path(data["path"]) / "zz-junk.parquet"
    bad.write_bytes(junk)
    with pytest.raises(ValueError) as info:
        P.prepare(data, log=lambda _: None)
    msg = str(info.value)
    assert msg.startswith(f"{bad}: not a readable parquet file with a 'text' column (") and "\n" not in msg
    with pytest.raises(ValueError, match="zz-junk.parquet"):
        list(sources.local_documents(Path(data["path"])))


def test_ensure_prepared_repairs_a_truncated_file(prepared, capsys):
    from harness.workdir import ensure_prepared

    data, files, original = prepared
    size = _truncate(files["train"])
    ensure_prepared(data)
    out = capsys.readouterr().out
    assert (f"experiment: the data cache is damaged ({files['train']}: truncated ({size // 2} bytes of {size})); "
            "repairing it") in out.splitlines()
    assert files["train"].read_bytes() == original["train"]
    ensure_prepared(data)  # sound now: nothing to say, nothing done
    assert capsys.readouterr().out == ""


@pytest.fixture()
def shard_server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    for i in (0, sources.CLIMBMIX_VAL_SHARD):
        pq.write_table(pa.table({"text": [_doc(i + r) for r in range(200)]}), root / sources.shard_name(i))
    handler = functools.partial(type("Quiet", (SimpleHTTPRequestHandler,), {"log_message": lambda *a: None}),
                                directory=str(root))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_climbmix_fetches_a_damaged_shard_again(shard_server, tmp_path):
    served, url = shard_server
    data = compose_dict("prepare", ["data=climbmix", f"data.base_url={url}", "data.num_shards=1",
                                    "data.vocab_size=300", "data.eval_tokens=4096",
                                    f"data.cache_dir={tmp_path / 'cache'}"])["data"]
    P.prepare(data, log=lambda _: None)
    shard = P.split_files("train", data)[0]
    _flip(shard, keep_mtime=True)
    lines = _repair(data)
    assert any(line.startswith(f"data: {shard}: checksum mismatch") for line in lines)
    assert shard.read_bytes() == (served / shard.name).read_bytes()

    (served / shard.name).unlink()  # the server no longer has it: 404
    _truncate(shard)
    with pytest.raises(P.CacheError) as info:
        P.prepare(data, log=lambda _: None)
    msg = str(info.value)
    assert "\n" not in msg and f"({shard}: truncated" in msg and "404" in msg and "data.base_url" in msg
