"""`autoresearch report`: ledgers written by hand with the real rows' fields (two slots of one
tag, cpu-t1 and cpu-t2, and a transfer matrix from the first into the second), the verb run
in-process, its files and numbers checked; a hostile description must stay text everywhere.
One test reads the ledger of a real (tiny) campaign."""
import hashlib
import json
import re
import statistics
import struct
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path

import pytest

from harness.report import collect, figures, plots
from tests.inproc import in_process

T0 = datetime(2026, 11, 30, 22, 0, 0, tzinfo=timezone.utc)
HOSTILE = ('<script>alert("x")</script>\n| forged | 9 | [click](http://evil.example) $\\frac{ & '
           '<img src=x onerror=alert(1)>')  # a new line and a table row of its own: one cell, not a row


def row(seq, status, val, description, minutes, mean=None, runs=1, cost=0.0, training=20.0, cycle=40.0,
        confirms=None, telemetry=None):
    """One results.jsonl row with the fields harness/ledger_rows.py writes."""
    commit = hashlib.sha1(f"{seq}{description}".encode()).hexdigest()
    r = {"seq": seq, "commit": commit[:12], "full_commit": commit, "parent": "0" * 40, "val_bpb": val,
         "memory_gb": 0.5, "status": status, "description": description, "backend": "cpu", "device": "cpu",
         "budget_s": 20.0, "time": (T0 + timedelta(minutes=minutes)).isoformat(timespec="seconds"),
         "experiment_status": "ok" if val is not None else ("crash" if status == "crash" else "refused"),
         "reason": "", "error_tail": "", "steps": 100, "tokens": 204800, "isolation": "landlock+seccomp",
         "mfu_percent": 1.0, "training_seconds": training if val is not None else None, "total_seconds": 35.0,
         "eval_seconds": 5.0, "budget_mode": "normalized", "calibration_id": "abc", "diff": {},
         "cycle_seconds": cycle, "agent": "claude", "agent_seconds": 3.0, "run_dir": "/runs/x",
         "us_per_token": 97.6, "agent_tokens_in": 1000, "agent_tokens_out": 200, "agent_cache_read": 0,
         "agent_cache_write": 0, "agent_cost_usd": cost}
    if status == "confirm":
        r.update(confirms=confirms, cycle_seconds=0.0)
        for k in ("agent_tokens_in", "agent_tokens_out", "agent_cache_read", "agent_cache_write", "agent_cost_usd"):
            del r[k]
    elif status == "stopped":
        r = {"seq": seq, "commit": r["commit"], "status": "stopped", "description": f"(stopped) {description}",
             "time": r["time"], "experiment_status": None, "agent": "claude", "agent_cost_usd": cost}
    else:
        r.update(mean_val_bpb=mean if mean is not None else val, runs=runs, keep_rule={"rule": "..."})
    if telemetry is not None:
        r["telemetry"] = telemetry
    return r


def tel(energy, tpj, flags=()):
    return {"sources": ["psutil"], "interval_s": 0.5, "samples": 40, "cpu_percent_mean": 180.0,
            "cpu_percent_peak": 199.0, "ram_mb_peak": 800.0, "foreign_cpu_percent_mean": 3.0, "gpu": None,
            "energy_j": energy, "tokens_per_joule": tpj, "flags": list(flags)}


T1_BASELINE = [2.000, 2.004, 1.999]
T1_ROWS = [
    row(0, "keep", 2.000, "baseline", 2, mean=statistics.mean(T1_BASELINE), runs=3, cycle=120.0,
        telemetry=tel(1000.0, 200.0)),
    row(1, "confirm", 2.004, "confirm 1 of exp 0: baseline", 2, confirms=0, telemetry=tel(1100.0, 190.0)),
    row(2, "confirm", 1.999, "confirm 2 of exp 0: baseline", 2, confirms=0, telemetry=tel(900.0, 210.0)),
    row(3, "keep", 1.950, "raise LR", 3, cost=0.10),
    row(4, "discard", 1.990, HOSTILE, 4, cost=0.20,
        telemetry=tel(None, None, ["contended: other processes used 85% of a core"])),
    row(5, "crash", None, "nan loss", 5, cost=0.05),
    row(6, "refused", None, "edit prepare.py", 5.5, cost=0.01),
    row(7, "keep", 1.920, "wider MLP with a very long description that goes on and on about ratios", 7,
        mean=1.925, runs=2, cost=0.15),
    row(8, "confirm", 1.930, "confirm 1 of exp 7: wider MLP", 7, confirms=7),
    row(9, "stopped", None, "agent.max_cost_usd reached", 8, cost=0.30),
]
T2_ROWS = [
    row(0, "keep", 2.100, "baseline", 3, mean=2.100, runs=3, cycle=180.0),
    row(1, "confirm", 2.098, "confirm 1 of exp 0: baseline", 3, confirms=0),
    row(2, "confirm", 2.102, "confirm 2 of exp 0: baseline", 3, confirms=0),
    row(3, "discard", 2.110, "lower LR", 5, cost=0.02),
    row(4, "keep", 2.050, HOSTILE, 8, cost=0.03),  # a kept one: in the tables, on the plots
]


def transfer(root):
    return {"source": {"tag": "nov30", "slot": "cpu-t1", "dir": str(root / "nov30" / "cpu-t1")},
            "target": {"tag": "nov30", "slot": "cpu-t2", "dir": str(root / "nov30" / "cpu-t2")},
            "created": "2026-12-01T02:00:00", "budget": {"mode": "normalized", "seconds": 30.0},
            "noise": 0.002, "margin": 0.004, "baseline": {"val_bpb_mean": 2.1, "runs": 3},
            "rows": [{"seq": 3, "commit": T1_ROWS[3]["commit"], "description": "raise LR", "source_gain": 0.051,
                      "individual": {"val_bpb_mean": 2.09, "runs": 2, "gain": 0.01, "verdict": "helps"},
                      "cumulative": {"val_bpb_mean": 2.09, "runs": 2, "gain": 0.01, "verdict": "helps"}},
                     {"seq": 7, "commit": T1_ROWS[7]["commit"], "description": "wider MLP", "source_gain": 0.025,
                      "individual": {"val_bpb_mean": None, "runs": 0, "gain": None, "verdict": "not applied",
                                     "why": "does not apply cleanly on the baseline"},
                      "cumulative": {"val_bpb_mean": None, "runs": 0, "gain": None, "verdict": "not applied",
                                     "why": "does not apply cleanly on the baseline"}}]}


def write_campaign(root: Path, tag: str, slot: str, rows: list[dict], budget: dict | None = None) -> Path:
    d = root / tag / slot
    d.mkdir(parents=True)
    (d / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    state = {"tag": tag, "backend": "cpu", "branch": f"autoresearch/{tag}/{slot}", "base_commit": "0" * 40,
             "created": T0.isoformat()}
    if budget:
        state["budget"] = budget
    (d / "campaign.json").write_text(json.dumps(state))
    return d


@pytest.fixture()
def two_slots(tmp_path):
    root = tmp_path / "campaigns"
    budget = {"mode": "normalized", "seconds": 23.4, "tokens": None, "flops": None,
              "reference": "ci-cpu (2-core EPYC; measured)", "reason": "..."}
    write_campaign(root, "nov30", "cpu-t1", T1_ROWS, budget)
    t2 = write_campaign(root, "nov30", "cpu-t2", T2_ROWS, {**budget, "seconds": 41.0})
    (t2 / "transfer").mkdir()
    (t2 / "transfer" / "nov30__cpu-t1.json").write_text(json.dumps(transfer(root)))
    return root


class Tags(HTMLParser):
    """Every element and attribute a browser would see in a page."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def handle_starttag(self, tag, attrs):
        self.seen.append((tag, attrs))


def report(capsys, monkeypatch, root, *extra):
    return in_process(capsys, monkeypatch, "report", f"campaign.root={root}", *extra)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def test_report_writes_every_file(two_slots, capsys, monkeypatch):
    res = report(capsys, monkeypatch, two_slots)
    assert res.returncode == 0, res.stderr
    out = two_slots / "report"  # the default: <campaign.root>/report
    names = {"report.html", "report.md", "cross-device.png", "progress-nov30-cpu-t1.png", "progress-nov30-cpu-t2.png"}
    assert names <= {p.name for p in out.iterdir()}
    for p in out.glob("*.png"):
        w, h = png_size(p)
        assert 800 <= w <= 3000 and 400 <= h <= 2000, (p.name, w, h)
    assert "progress-nov30-cpu-t1.png" in res.stdout and "report.html" in res.stdout  # progress, as it goes


def test_report_numbers(two_slots):
    t1, t2 = collect.find(two_slots)
    f = figures.campaign_figures(t1)
    assert (f.experiments, f.kept, f.discarded, f.crashed, f.refused) == (5, 2, 1, 1, 1)
    assert f.baseline == pytest.approx(statistics.mean(T1_BASELINE))
    assert f.best == pytest.approx(1.925)  # the mean of its runs, not its first run's 1.920
    assert f.spend_usd == pytest.approx(0.81)  # the stopped proposal's dollars included
    noise = statistics.stdev(T1_BASELINE)
    assert f.noise == pytest.approx(noise) and f.noise_runs == 3
    assert f.gain_sigmas == pytest.approx((statistics.mean(T1_BASELINE) - 1.925) / noise)
    # from the baseline cycle's start (2 min - 120 s) to the last row (8 min): 8 minutes
    assert f.hours == pytest.approx(8 / 60)
    assert f.per_hour == pytest.approx(6 / (8 / 60))
    trained = 20.0 * 7  # seven runs scored (three baseline runs, 3, 4, 7 and its confirm)
    assert f.non_training == pytest.approx(1 - trained / (8 * 60))
    tel = figures.telemetry(t1)
    assert (tel.runs, tel.flagged) == (4, 1)
    assert tel.energy_j == pytest.approx(1000.0) and tel.tokens_per_joule == pytest.approx(200.0)
    assert figures.telemetry(t2) is None
    found = {(d.source, d.seq): d for d in figures.discoveries([t1, t2])}
    assert set(found) == {("nov30/cpu-t1", 3), ("nov30/cpu-t1", 7), ("nov30/cpu-t2", 4)}
    raise_lr = found[("nov30/cpu-t1", 3)]
    assert raise_lr.gain == pytest.approx(statistics.mean(T1_BASELINE) - 1.95)
    assert [(t["target"], t["individual"]["gain"], t["individual"]["verdict"]) for t in raise_lr.tried] == [
        ("nov30/cpu-t2", 0.01, "helps")]
    assert found[("nov30/cpu-t1", 7)].tried[0]["individual"]["verdict"] == "not applied"
    assert found[("nov30/cpu-t2", 4)].tried == []


def test_progress_plot_marks_flags_crashes_and_kept_steps(two_slots, tmp_path):
    t1 = collect.find(two_slots)[0]
    t1.rows[3]["description"] = "raise LR $\\frac{1}{$"  # no formula: drawn as written
    plots.progress(t1, figures.campaign_figures(t1), tmp_path / "p.png")
    assert png_size(tmp_path / "p.png")[0] > 800
    fig = plots.progress_figure(t1, figures.campaign_figures(t1))
    ax = fig.axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(s.startswith("telemetry flag") and "(1)" in s for s in legend)
    assert any(s.startswith("crashed (1") for s in legend) and any(s.startswith("refused (1") for s in legend)
    assert any(s.startswith("kept (2") for s in legend) and "running best (kept)" in legend
    labels = [t.get_text() for t in ax.texts]
    assert "raise LR $\\frac{1}{$" in labels and "baseline" in labels
    assert any(s.startswith("wider MLP") and s.endswith("…") for s in labels)  # long ones cut
    assert "val_bpb" in ax.get_ylabel() and "bits per byte" in ax.get_ylabel()
    assert "nov30/cpu-t1" in ax.get_title() and "normalized" in ax.get_title()


def test_html_is_self_contained_and_escapes_the_ledger(two_slots, capsys, monkeypatch):
    assert report(capsys, monkeypatch, two_slots).returncode == 0
    page = (two_slots / "report" / "report.html").read_text()
    tags = Tags()
    tags.feed(page)
    assert {t for t, _ in tags.seen} <= {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "table",
                                         "tr", "th", "td", "img", "ul", "li"}
    attrs = [(t, k, v) for t, a in tags.seen for k, v in a]
    assert not [a for a in attrs if a[1] not in ("lang", "charset", "class", "src", "alt")], attrs
    srcs = [v for t, k, v in attrs if k == "src"]
    assert len(srcs) == 3 and all(v.startswith("data:image/png;base64,") for v in srcs)  # cross-device, 2 progress
    assert not re.search(r"@import|url\(", page, re.I)
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page  # the description, shown as text
    assert "nov30/cpu-t2" in page and "not applied" in page and "helps" in page


def test_markdown_holds_the_tables(two_slots, capsys, monkeypatch):
    assert report(capsys, monkeypatch, two_slots).returncode == 0
    md = (two_slots / "report" / "report.md").read_text()
    t1_line = next(line for line in md.splitlines() if line.startswith("| nov30/cpu\\-t1 |") or
                   line.startswith("| nov30/cpu-t1 |"))
    cells = [c.strip() for c in t1_line.strip("|").split(" | ")]
    assert cells[2:6] == ["5", "2", "1", "1"]  # experiments, kept, crashed, refused
    assert cells[7] == "1.9250" and cells[11] == "0.81"
    assert "![Progress: nov30/cpu-t1](progress-nov30-cpu-t1.png)" in md
    assert "![Running best across devices](cross-device.png)" in md
    assert "<script>" not in md and "\\<script\\>" in md and "\\[click\\]" in md  # text, not HTML or a link
    assert "does not apply cleanly on the baseline" in md
    forged = [line for line in md.splitlines() if "forged" in line]
    assert len(forged) == 1 and forged[0].startswith("| nov30/cpu-t2 | 4 | ") and "\\| forged \\| 9 \\|" in forged[0]


def test_tags_choose_campaigns_and_bad_roots_are_one_line(two_slots, tmp_path, capsys, monkeypatch):
    other = write_campaign(two_slots, "dec01", "cpu", T2_ROWS)
    out = tmp_path / "only-dec01"
    res = report(capsys, monkeypatch, two_slots, "report.tags=[dec01]", f"report.out={out}")
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in out.glob("*.png")) == ["cross-device.png", "progress-dec01-cpu.png"]
    assert other.is_dir()
    res = report(capsys, monkeypatch, two_slots, "report.tags=[nope]")
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "nope" in res.stderr and "dec01" in res.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    res = report(capsys, monkeypatch, empty)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "no campaigns" in res.stderr
    with open(other / "results.jsonl", "a") as f:
        f.write("not json\n")  # a complete line that is no row: corruption, not a torn append
    res = report(capsys, monkeypatch, two_slots)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "results.jsonl:6: not a ledger row" in res.stderr


def test_campaigns_are_only_read(two_slots, capsys, monkeypatch):
    """No lock, no repair: a torn last line (a campaign appending right now) stays as it is."""
    d = two_slots / "nov30" / "cpu-t2"
    with open(d / "results.jsonl", "a") as f:
        f.write('{"seq": 5, "status": "ke')
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in two_slots.rglob("*") if p.is_file()}
    res = report(capsys, monkeypatch, two_slots)
    assert res.returncode == 0, res.stderr
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in two_slots.rglob("*")
             if p.is_file() and "report" not in p.relative_to(two_slots).parts}
    assert after == before
    assert not (d / "campaign.lock").exists() and not (d / "results.tsv").exists()
    assert "unfinished last line" in (two_slots / "report" / "report.md").read_text()


@pytest.mark.slow
def test_report_reads_a_real_campaign(cache_dir, where, capsys, monkeypatch):
    """A tiny campaign as `autoresearch run` writes it (its baseline alone: one run of 2 s of
    training; the start-up allowance and the probe's tolerance given, so nothing is
    calibrated), then its report: the ledger's real rows, whatever their fields. ~15 s on an
    idle 2-core machine."""
    from tests.conftest import run_cli

    tag, root = where
    res = run_cli("run", "backend=cpu", "model=tiny", "budget.mode=wall", "budget.seconds=2", "data.eval_tokens=2048",
                  "keep.confirm_runs=0", "keep.baseline_runs=1", "agent=random",
                  "budget.allowance_seconds=30", "eval.probe_tolerance=1e-4", "budget.grace_seconds=10",
                  "eval.causality_check=false",
                  "campaign.max_experiments=0",
                  f"campaign.tag={tag}", f"campaign.root={root}", timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    res = report(capsys, monkeypatch, root)
    assert res.returncode == 0, res.stderr
    (c,) = collect.find(root)
    f = figures.campaign_figures(c)
    rows = c.rows
    assert [r["status"] for r in rows] == ["keep"]
    assert f.experiments == 0 and f.noise_runs == 1 and f.noise is None and f.hours > 0
    assert f.baseline == f.best == rows[0]["mean_val_bpb"] == rows[0]["val_bpb"]
    assert f.budget["mode"] == "wall" and 0 < f.non_training < 1
    assert f.training_seconds == rows[0]["training_seconds"] > 0
    png_size(root / "report" / f"progress-{tag}-{c.slot}.png")
    assert f"| {tag}/{c.slot} | wall, 2 s |" in (root / "report" / "report.md").read_text()
