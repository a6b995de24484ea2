"""The ledger: format, durability (fsync), repair after a crash, and no duplicates ever."""
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from harness.ledger import TSV_COLUMNS, Ledger, better

ROOT = Path(__file__).resolve().parent.parent


def rec(seq, **kw):
    base = {"seq": seq, "commit": f"c{seq:06d}", "val_bpb": 1.0 - seq / 100, "memory_gb": 1.25,
            "status": "keep", "description": f"exp {seq}", "backend": "cpu", "device": "cpu",
            "budget_s": 300}
    return {**base, **kw}


def test_tsv_header_and_format(tmp_path):
    led = Ledger(tmp_path)
    led.append(rec(0, description="baseline\twith a tab\nand a newline", steps=953))
    led.append(rec(1, status="crash", val_bpb=None, memory_gb=None, error_tail="Traceback..."))
    led.append(rec(2, val_bpb=float("nan"), status="discard", budget_s=123.456))
    lines = (tmp_path / "results.tsv").read_text().splitlines()
    assert lines[0].split("\t") == list(TSV_COLUMNS)
    assert TSV_COLUMNS[:5] == ("commit", "val_bpb", "memory_gb", "status", "description")
    row0 = lines[1].split("\t")
    assert row0 == ["c000000", "1.000000", "1.2", "keep", "baseline with a tab and a newline",
                    "cpu", "cpu", "300"]
    assert lines[2].split("\t")[1:4] == ["0.000000", "0.0", "crash"]
    assert lines[3].split("\t")[1] == "0.000000" and lines[3].split("\t")[7] == "123.5"
    # The JSONL keeps everything, including keys the TSV has no column for.
    recs = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert recs[0]["steps"] == 953 and recs[1]["error_tail"] == "Traceback..."
    assert recs[0]["description"] == "baseline\twith a tab\nand a newline"


def test_missing_keys_become_empty(tmp_path):
    led = Ledger(tmp_path)
    led.append({"seq": 0, "status": "keep", "val_bpb": 1.5})
    row = (tmp_path / "results.tsv").read_text().splitlines()[1].split("\t")
    assert row == ["", "1.500000", "0.0", "keep", "", "", "", ""]


def test_queries(tmp_path):
    led = Ledger(tmp_path)
    assert led.next_seq() == 0 and led.best() is None
    led.append(rec(0, val_bpb=1.0))
    led.append(rec(1, val_bpb=0.9, status="discard"))
    led.append(rec(2, val_bpb=0.95))
    led.append(rec(3, val_bpb=None, status="crash"))
    led.append(rec(4, val_bpb=0.5, status="crash"))  # a crash never wins, whatever its number
    assert led.next_seq() == 5 and len(led) == 5
    assert led.best()["seq"] == 2
    assert led.best("discard")["seq"] == 1 and led.best(None)["seq"] == 1
    assert led.counts() == {"keep": 2, "discard": 1, "crash": 2}
    lines = led.summary_lines(last=2)
    assert "3 earlier experiments not shown" in lines[0] and "seq 2" in lines[0]
    assert lines[-2].split()[:3] == ["3", "crash", "-"]
    assert led.records()[0]["commit"] == "c000000"
    # records() hands out copies: the caller cannot change the ledger's memory.
    led.records()[0]["status"] = "x"
    assert led.records()[0]["status"] == "keep"


def test_better():
    assert better(0.9, 1.0) and not better(1.0, 0.9) and not better(1.0, 1.0)
    assert better(5.0, None) and not better(None, 5.0) and not better(None, None)
    assert better(5.0, math.nan) and not better(math.nan, 5.0)
    assert better({"val_bpb": 1.0, "status": "keep"}, {"val_bpb": 0.5, "status": "crash"})
    assert not better({"val_bpb": 0.1, "status": "crash"}, {"val_bpb": 2.0})


def test_duplicates_refused(tmp_path):
    led = Ledger(tmp_path)
    led.append(rec(0))
    with pytest.raises(ValueError, match="already"):
        led.append(rec(0))
    with pytest.raises(ValueError, match="already"):
        Ledger(tmp_path).append(rec(0))  # also after reopening
    with pytest.raises(ValueError, match="integer"):
        led.append({"status": "keep"})
    assert len(Ledger(tmp_path)) == 1
    assert len((tmp_path / "results.tsv").read_text().splitlines()) == 2


def test_fsync_called(tmp_path, monkeypatch):
    calls = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd)))
    led = Ledger(tmp_path)
    opened = len(calls)
    assert opened >= 2  # the TSV header and the new directory entries
    led.append(rec(0))
    assert len(calls) - opened == 2  # one per file, JSONL and TSV


def test_torn_lines_are_dropped(tmp_path):
    led = Ledger(tmp_path)
    led.append(rec(0))
    led.append(rec(1))
    # The process died mid-write of seq 2's JSONL line: no newline at the end.
    with open(tmp_path / "results.jsonl", "a") as f:
        f.write('{"seq": 2, "commit": "c0000')
    led = Ledger(tmp_path)
    assert [r["seq"] for r in led.records()] == [0, 1]
    assert any("torn" in m for m in led.repaired)
    assert (tmp_path / "results.jsonl").read_bytes().endswith(b"}\n")
    led.append(rec(2))
    # Died mid-write of the TSV row: the row is dropped, then restored from the JSONL.
    tsv = tmp_path / "results.tsv"
    tsv.write_text(tsv.read_text()[:-10])
    led = Ledger(tmp_path)
    rows = tsv.read_text().splitlines()
    assert len(rows) == 4 and rows[3].startswith("c000002\t0.980000")
    assert [r["seq"] for r in led.records()] == [0, 1, 2]


def test_jsonl_ahead_of_tsv_is_repaired(tmp_path):
    led = Ledger(tmp_path)
    led.append(rec(0))
    # Died between the two writes: the JSONL has seq 1, the TSV does not.
    with open(tmp_path / "results.jsonl", "a") as f:
        f.write(json.dumps(rec(1, description="second")) + "\n")
    led = Ledger(tmp_path)
    rows = (tmp_path / "results.tsv").read_text().splitlines()
    assert len(rows) == 3 and rows[2].split("\t")[4] == "second"
    assert led.next_seq() == 2 and any("restored" in m for m in led.repaired)
    assert Ledger(tmp_path).repaired == []  # repaired once, stable after


def test_tsv_ahead_of_jsonl_is_impossible(tmp_path):
    led = Ledger(tmp_path)
    led.append(rec(0))
    with open(tmp_path / "results.tsv", "a") as f:
        f.write("cxxxx\t1.0\t1.0\tkeep\tghost\tcpu\tcpu\t300\n")
    with pytest.raises(AssertionError, match="never written first"):
        Ledger(tmp_path)


def test_corrupt_middle_line_is_not_silently_dropped(tmp_path):
    led = Ledger(tmp_path)
    led.append(rec(0))
    with open(tmp_path / "results.jsonl", "a") as f:
        f.write("garbage\n")
    with pytest.raises(ValueError, match="not valid JSON"):
        Ledger(tmp_path)


CHILD = textwrap.dedent("""
    import sys
    from harness.ledger import Ledger
    led = Ledger(sys.argv[1])
    print("ready", flush=True)
    while True:
        s = led.next_seq()
        led.append({"seq": s, "commit": "c%06d" % s, "val_bpb": 1.0, "status": "keep",
                    "description": "x" * 2000, "blob": "y" * 20000})
""")


def test_sigkill_while_appending(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    total = 0
    for kill_after in (0.05, 0.13, 0.21, 0.08, 0.17, 0.03, 0.11, 0.06):
        p = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], env=env,
                             stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "ready"
        time.sleep(kill_after)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        p.stdout.close()
        led = Ledger(tmp_path)
        seqs = [r["seq"] for r in led.records()]
        assert seqs == list(range(len(seqs)))  # no duplicate, no gap
        assert len(seqs) >= total
        total = len(seqs)
        for name in ("results.jsonl", "results.tsv"):
            data = (tmp_path / name).read_bytes()
            assert data.endswith(b"\n")
        jl = (tmp_path / "results.jsonl").read_text().splitlines()
        tsv = (tmp_path / "results.tsv").read_text().splitlines()
        assert len(tsv) == len(jl) + 1
        assert [row.split("\t")[0] for row in tsv[1:]] == [f"c{s:06d}" for s in seqs]
        assert all(json.loads(x)["blob"] == "y" * 20000 for x in jl)
    assert total > 0
