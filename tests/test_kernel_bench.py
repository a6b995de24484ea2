"""`autoresearch kernels bench` (harness/kernel_bench.py) on the CPU: the reference eager and
under torch.compile at the preset's shapes, rows appended to the CSV, a table printed (the
Triton column needs a GPU: the interpreter says nothing about speed)."""
import csv

from harness import kernel_bench
from tests.inproc import in_process


def test_bench_appends_its_rows_to_the_csv_and_prints_a_table(tmp_path, capsys, monkeypatch):
    out = tmp_path / "bench" / "kernels.csv"
    res = in_process(capsys, monkeypatch, "kernels", "bench", "backend=cpu", "model=tiny",
                     "kernels.only=[apply_rotary]", f"kernels.csv={out}", "kernels.repeats=2")
    assert res.returncode == 0, res.stderr
    kernel_bench.append(out, [{"kernel": "again", "pass": "fwd"}])  # a later run appends under the same header
    rows = list(csv.DictReader(out.open()))
    assert [r["pass"] for r in rows] == ["fwd", "fwd+bwd", "fwd"] and rows[2]["kernel"] == "again"
    first = rows[0]
    assert (first["kernel"], first["shape"], first["backend"]) == ("apply_rotary", "8x256x4x64", "cpu")
    assert float(first["eager_ms"]) > 0 and float(first["compiled_ms"]) > 0 and first["triton_ms"] == ""
    assert '"threads"' in first["fingerprint"]
    assert "apply_rotary" in res.stdout and "vs comp." in res.stdout and str(out) in res.stdout


def test_the_table_shows_speedups_and_peaks_when_measured():
    row = {"kernel": "rms_norm", "shape": "8x4", "pass": "fwd+bwd", "eager_ms": 2.0, "compiled_ms": 1.0,
           "triton_ms": 0.5, "speedup_vs_eager": 4.0, "speedup_vs_compiled": 2.0, "eager_peak_mb": 30.0,
           "compiled_peak_mb": 20.0, "triton_peak_mb": 5.0}
    line = kernel_bench.table([row]).splitlines()[1]
    assert "4.00x" in line and "2.00x" in line and "30/20/5" in line


def test_the_micro_benchmark_times_a_candidates_kernels_in_a_sandboxed_child(cache_dir):
    """A kernel campaign's micro-benchmark step (harness/kernel_micro.py): skipped off a GPU;
    forced here, the child runs the candidate's Triton kernels in the interpreter and hands
    back times the harness keeps only where they are well-formed."""
    import pytest

    from harness import kernel_micro
    from harness.guard import ROOT
    from harness.config import compose_dict

    pytest.importorskip("triton")
    cfg = compose_dict("kernels", ["backend=cpu", "model=tiny", "kernels.only=[rms_norm]", "kernels.repeats=1",
                                   f"data.cache_dir={cache_dir}"])
    assert "no GPU" in kernel_micro.measure(cfg, ROOT / "kernels", log=lambda m: None)["skipped"]
    got = kernel_micro.measure(cfg, ROOT / "kernels", log=lambda m: None, force=True)
    assert "end-to-end experiment decides" in got["advisory"]
    assert set(got["ms"]) == {"rms_norm 2048x256", "rms_norm 8192x64"}
    assert all(v["fwd"] > 0 and v["fwd+bwd"] > 0 for v in got["ms"].values())


def test_the_micro_benchmarks_answer_is_kept_only_where_well_formed():
    from harness.kernel_micro import parse

    assert parse("not json") == {} and parse("[1, 2]") == {}
    hostile = {"rms_norm 8x4": {"fwd": 0.5, "fwd+bwd": float("nan"), "extra": 3.0}, "x": {"fwd": -1},
               "y": {"fwd": True}, "z": "fast", "w": {"fwd+bwd": 1e300}}
    import json
    assert parse(json.dumps(hostile)) == {"rms_norm 8x4": {"fwd": 0.5}}
