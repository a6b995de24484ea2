"""`autoresearch kernels bench` (harness/kernel_bench.py) on the CPU: the reference eager and
under torch.compile at the preset's shapes, rows appended to the CSV, a table printed (the
Triton column needs a GPU: the interpreter says nothing about speed)."""
import csv

from harness import kernel_bench
from tests.inproc import in_process


def test_bench_appends_its_rows_to_the_csv_and_prints_a_table(tmp_path, capsys, monkeypatch):
    out = tmp_path / "bench" / "kernels.csv"
    for _ in range(2):  # the second run appends under the same header
        res = in_process(capsys, monkeypatch, "kernels", "bench", "backend=cpu", "model=tiny",
                         "kernels.only=[apply_rotary]", f"kernels.csv={out}", "kernels.repeats=2")
        assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader(out.open()))
    assert [r["pass"] for r in rows] == ["fwd", "fwd+bwd"] * 2
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
