"""`autoresearch prepare` for data=climbmix (against a local HTTP server) and data=local."""
import functools
import json
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import run_cli
from trainer.sources import CLIMBMIX_VAL_SHARD, shard_name

WORDS = "the of and to in a is that for it as was with be by on not he this are or his".split()


def _doc(seed: int) -> str:
    n = 40 + seed * 7 % 120
    return " ".join(WORDS[(seed * 31 + i * i) % len(WORDS)] for i in range(n)) + f" — café №{seed}."


@pytest.fixture()
def shard_server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    for i in [0, 1, CLIMBMIX_VAL_SHARD]:
        pq.write_table(pa.table({"text": [_doc(i * 1000 + r) for r in range(400)]}), root / shard_name(i))
    requests = []

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, *a):
            requests.append(self.path)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", requests
    httpd.shutdown()
    httpd.server_close()


def test_prepare_climbmix_from_a_local_server(shard_server, tmp_path):
    url, requests = shard_server
    args = ["prepare", "data=climbmix", f"data.base_url={url}", "data.num_shards=2", "data.vocab_size=400",
            "data.eval_tokens=4096"]
    env = {"AUTORESEARCH_CACHE": str(tmp_path / "cache")}
    res = run_cli(*args, extra_env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    d = tmp_path / "cache" / "data" / "climbmix"
    assert sorted(p.name for p in d.glob("*.parquet")) == [shard_name(0), shard_name(1)]
    held = tmp_path / "cache" / "heldout" / "climbmix"  # the validation shard lives apart
    assert sorted(p.name for p in held.glob("*.parquet")) == [shard_name(CLIMBMIX_VAL_SHARD)]
    assert (d / "tokenizer-400" / "tokenizer.pkl").exists()
    stats = json.loads((d / "READY.json").read_text())
    assert stats["vocab_size"] == 400 and stats["val_tokens"] > 0
    n = len(requests)
    res = run_cli(*args, extra_env=env, timeout=120)  # second call: cached, nothing fetched
    assert res.returncode == 0 and len(requests) == n
    assert "tokenizer: cached" in res.stdout


def test_prepare_local_directory(tmp_path):
    src = tmp_path / "text"
    (src / "sub").mkdir(parents=True)
    for i in range(300):
        (src / ("sub" if i % 2 else "") / f"doc{i}.txt").write_text(_doc(i))
    (src / "more.jsonl").write_text("\n".join(json.dumps({"text": _doc(5000 + i)}) for i in range(200)))
    env = {"AUTORESEARCH_CACHE": str(tmp_path / "cache")}
    res = run_cli("prepare", "data=local", f"data.path={src}", "data.vocab_size=400", "data.val_fraction=0.1",
                  extra_env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    [d] = (tmp_path / "cache" / "data").glob("local-*")
    held = tmp_path / "cache" / "heldout" / d.name
    train = sum(pq.read_table(p).num_rows for p in d.glob("train_*.parquet"))
    val = sum(pq.read_table(p).num_rows for p in held.glob("val_*.parquet"))
    assert not list(d.glob("val_*")) and train + val == 500 and 20 <= val <= 90


def test_a_cache_from_before_the_heldout_directory_is_moved(tmp_path, cache_dir):
    """Validation shards left in data/ by an older version move to heldout/ on prepare."""
    import shutil

    old = tmp_path / "cache"
    shutil.copytree(cache_dir / "data", old / "data")
    shutil.copy(next((cache_dir / "heldout" / "builtin").glob("val_*.parquet")), old / "data" / "builtin")
    res = run_cli("prepare", "data=builtin", extra_env={"AUTORESEARCH_CACHE": str(old)}, timeout=120)
    assert res.returncode == 0, res.stderr
    assert not list((old / "data" / "builtin").glob("val_*")) and list((old / "heldout" / "builtin").glob("val_*"))


def test_prepare_local_needs_a_path(tmp_path):
    res = run_cli("prepare", "data=local", extra_env={"AUTORESEARCH_CACHE": str(tmp_path)}, timeout=60)
    assert res.returncode != 0
    assert "data.path" in res.stderr
