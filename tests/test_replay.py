"""`autoresearch replay`: a source campaign built by hand (a branch of known commits and
its ledger), replayed on another campaign; the transfer matrix, the target's ledger, its
branch left where it was, a second call that re-uses every run, and a commit the source's
scope could not have made (it edits prepare.py) refused rather than run."""
import json
import subprocess

import pytest

from harness import fixed, gitwork
from harness.config import compose_dict
from harness.ledger_rows import is_experiment
from tests.conftest import ROOT, remove_campaign, run_cli
from tests.inproc import in_process

FAST = ["backend=cpu", "model=tiny", "budget.mode=wall", "budget.seconds=2", "data.eval_tokens=2048", "quiet=true",
        "budget.allowance_seconds=30", "budget.grace_seconds=10", "eval.probe_tolerance=1e-4",
        "eval.causality_check=false"]  # the probe has tests of its own; a loaded machine
# takes seconds a step: the grace keeps a late last step from being a timeout
# The target: the source's tag on another device slot of this machine (the source is `cpu`).
TARGET, SLOT = ["backend.threads=2"], "cpu-t2"
TRAIN = "trainer/train.py"


def git(*args, cwd=ROOT):
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True).stdout.strip()


def edit(tree, path, old, new):
    p = tree / path
    text = p.read_text()
    assert old in text, f"{old!r} not in {path}"
    p.write_text(text.replace(old, new, 1))
    return gitwork.commit_all(tree, f"exp: {path} {old!r} -> {new!r}")


def row(seq, commit, parent, status, value, description):
    return {"seq": seq, "commit": commit[:12], "full_commit": commit, "parent": parent, "status": status,
            "val_bpb": value, "mean_val_bpb": value, "description": description, "experiment_status": "ok"}


@pytest.fixture()
def source(where):
    """A campaign `<tag>/cpu` as `run` leaves one: a branch from the project's HEAD with kept
    commits, a discarded one reset away, and its ledger and state. Returns (tag, root, rows)."""
    tag, root = where
    d = root / tag / "cpu"
    tree = d / "worktree"
    gitwork.open_worktree(ROOT, tree, gitwork.branch_name(tag, "cpu"))
    base = gitwork.head(tree)
    c1 = edit(tree, TRAIN, "WARMDOWN_RATIO = 0.5", "WARMDOWN_RATIO = 0.4")
    dropped = edit(tree, TRAIN, "WARMDOWN_RATIO = 0.4", "WARMDOWN_RATIO = 0.9")
    gitwork.reset_to(tree, c1)
    c3 = edit(tree, TRAIN, "WARMDOWN_RATIO = 0.4", "WARMDOWN_RATIO = 0.3")  # on top of c1's line: not on the base
    # someone committed by hand on the branch: the metric's module changed with train.py
    (tree / "trainer/prepare.py").write_text((tree / "trainer/prepare.py").read_text() + "\n# hand-made\n")
    c4 = edit(tree, TRAIN, "WARMDOWN_RATIO = 0.3", "WARMDOWN_RATIO = 0.2")
    rows = [row(0, base, base, "keep", 2.50, "baseline"), row(1, c1, base, "keep", 2.40, "warm-down 0.4"),
            row(2, dropped, c1, "discard", 2.60, "warm-down 0.9"), row(3, c3, c1, "keep", 2.35, "warm-down 0.3"),
            row(4, c4, c3, "keep", 2.10, "warm-down 0.2 (and prepare.py)")]
    (d / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    state = {"tag": tag, "backend": "cpu", "branch": gitwork.branch_name(tag, "cpu"), "base_commit": base,
             "settings": fixed.settings(compose_dict("run", FAST))}
    (d / "campaign.json").write_text(json.dumps(state))
    yield tag, root, rows
    remove_campaign(tag, root, SLOT)


def replay(tag, root, *extra):
    return run_cli("replay", *FAST, f"replay.source={tag}/cpu", "replay.repeats=1", "keep.baseline_runs=1",
                   f"campaign.root={root}", *TARGET, *extra, timeout=300)


def lock_free(d) -> bool:
    """Whether the campaign's lock is free (a replay that ended, however, let it go)."""
    import os

    from harness import locks

    fd = locks.take(d / "campaign.lock")
    if fd is not None:
        os.close(fd)
    return fd is not None


def ledger(d):
    return [json.loads(line) for line in (d / "results.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_replay_measures_each_discovery_and_resumes(cache_dir, source):
    tag, root, src_rows = source
    base, c1, c3, c4 = (src_rows[i]["full_commit"] for i in (0, 1, 3, 4))
    head, status = git("rev-parse", "HEAD"), git("status", "--porcelain")
    res = replay(tag, root)
    assert res.returncode == 0, res.stdout + res.stderr
    target = root / tag / SLOT
    path = target / "transfer" / f"{tag}__cpu.json"
    assert f"transfer matrix: {path}" in res.stdout
    m = json.loads(path.read_text())
    assert m["source"] == {"tag": tag, "slot": "cpu", "dir": str((root / tag / "cpu").resolve())}
    assert (m["target"]["tag"], m["target"]["slot"], m["budget"]["mode"]) == (tag, SLOT, "wall")
    assert m["baseline"]["runs"] == 1 and m["baseline"]["val_bpb_mean"] > 0
    assert [r["seq"] for r in m["rows"]] == [1, 3, 4]  # the kept ones, in order; the discarded one is not replayed
    r1, r3, r4 = m["rows"]
    assert [r["source_gain"] for r in m["rows"]] == pytest.approx([0.10, 0.05, 0.25])
    for cell in (r1["cumulative"], r1["individual"], r3["cumulative"]):
        assert cell["verdict"] in ("helps", "neutral", "hurts") and cell["runs"] == 1
        assert cell["gain"] == pytest.approx(m["baseline"]["val_bpb_mean"] - cell["val_bpb_mean"])
    assert r1["individual"]["same_as"] == "cumulative"  # the first discovery's diff on the baseline is itself
    assert r3["individual"]["verdict"] == "not applied" and "does not apply cleanly" in r3["individual"]["why"]
    for cell in (r4["individual"], r4["cumulative"]):  # never run: the source's scope could not have made it
        assert cell["verdict"] == "not applied" and "trainer/prepare.py" in cell["why"] and cell["runs"] == 0
    assert "helps" in res.stdout or "neutral" in res.stdout or "hurts" in res.stdout

    rows = ledger(target)
    assert rows[0]["seq"] == 0 and rows[0]["status"] == "keep" and rows[0]["full_commit"] == base
    assert rows[0]["replay_mode"] == "baseline"  # a new target's baseline is the replay's
    replays = [r for r in rows if r["status"] == "replay"]
    assert [(r["replay_mode"], r["replay_of"]["seq"], r["replay_of"]["commit"]) for r in replays] == [
        ("cumulative", 1, c1), ("cumulative", 3, c3)]
    assert all(r["replay_of"]["tag"] == tag and r["replay_of"]["slot"] == "cpu" for r in replays)
    assert not any(is_experiment(r) for r in rows)  # campaign.max_experiments counts none of them
    tsv = (target / "results.tsv").read_text().splitlines()
    assert [line.split("\t")[3] for line in tsv[1:]] == ["keep", "replay", "replay"]
    # the target's branch is where it started (the source's base), the source's and the project's untouched
    assert git("rev-parse", gitwork.branch_name(tag, SLOT)) == base
    assert git("rev-parse", gitwork.branch_name(tag, "cpu")) == c4
    assert git("rev-parse", "HEAD") == head and git("status", "--porcelain") == status
    assert lock_free(target)

    again = replay(tag, root)  # everything is recorded: nothing runs again
    assert again.returncode == 0, again.stdout + again.stderr
    assert ledger(target) == rows
    m2 = json.loads(path.read_text())
    assert [r[k] for r in m2["rows"] for k in ("individual", "cumulative")] == [
        r[k] for r in m["rows"] for k in ("individual", "cumulative")]
    shown = run_cli("ledger", *FAST, f"campaign.root={root}", f"campaign.tag={tag}", *TARGET)
    assert shown.returncode == 0 and "replays:   2 run(s)" in shown.stdout


def test_replay_refuses_a_missing_source_and_other_settings(capsys, monkeypatch, source):
    tag, root, _ = source
    res = in_process(capsys, monkeypatch, "replay", *FAST, "replay.source=nope/cpu", f"campaign.root={root}")
    assert res.returncode == 2 and f"{tag}/cpu" in res.stderr and "no campaign at" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    res = in_process(capsys, monkeypatch, "replay", *FAST, f"replay.source={tag}/cpu", f"campaign.root={root}",
                     "budget.seconds=3")
    assert res.returncode == 2 and "ran with budget.seconds=2" in res.stderr
    res = in_process(capsys, monkeypatch, "replay", *FAST, f"replay.source={tag}/cpu", f"campaign.root={root}")
    assert res.returncode == 2 and "is the target campaign itself" in res.stderr  # same tag, same slot
    assert lock_free(root / tag / "cpu")
    from harness.replay_source import Discovery, Source

    src = Source.find(root, f"{tag}/cpu")  # a ledger's commit that git would read as an option: never passed to git
    for bad in ("--output=/tmp/x", "HEAD", "main~1"):
        code = src.code(Discovery(9, bad, src.base, "tampered", None, None), "cumulative", root / "index")
        assert code.tree is None and "not in the repository" in code.why
    empty = root / "empty" / "cpu"  # a campaign that kept nothing: said, nothing made
    empty.mkdir(parents=True)
    (empty / "results.jsonl").write_text(json.dumps(row(0, git("rev-parse", "HEAD"), "", "keep", 3.5, "baseline")) + "\n")
    (empty / "campaign.json").write_text(json.dumps({"base_commit": git("rev-parse", "HEAD")}))
    res = in_process(capsys, monkeypatch, "replay", *FAST, "replay.source=empty/cpu", f"campaign.root={root}",
                     "campaign.tag=empty-b")
    assert res.returncode == 0 and "nothing to replay" in res.stdout and not (root / "empty-b").exists()


# ---------------------------------------------------------------------- in process, experiments faked
def fake_experiments(monkeypatch, stop_at=None):
    """experiment.run replaced: val_bpb = 3 + train.py's WARMDOWN_RATIO (read as text, never run),
    +0.001 on every other call (some noise); the call `stop_at` is interrupted, as Ctrl-C leaves it."""
    import re

    from harness import experiment

    calls = []

    def run(cfg, run_dir, budget, own_calibration=None, kernels_dir=None, announce=True):
        calls.append(cfg["train_file"])
        if len(calls) == stop_at:
            return {"status": "interrupted", "reason": "interrupted by the user", "run_dir": str(run_dir)}
        ratio = float(re.search(r"WARMDOWN_RATIO = ([0-9.]+)", open(cfg["train_file"]).read()).group(1))
        return {"status": "ok", "val_bpb": 3.0 + ratio + 0.001 * (len(calls) % 2), "training_seconds": 2.0,
                "timed_tokens": 4096, "total_tokens": 8192, "run_dir": str(run_dir), "budget_seconds": budget.seconds}

    monkeypatch.setattr(experiment, "run", run)
    return calls


def test_replay_into_a_campaign_started_elsewhere_killed_and_resumed(capsys, monkeypatch, cache_dir, source):
    """The target exists, started from another commit (the source's first discovery) with its
    own baseline: the replay adds the source's baseline as replay rows, never moves the
    target's branch, refuses while the target has an experiment pending, and a replay
    stopped half-way goes on with only the runs it lacks."""
    tag, root, src_rows = source
    base, c1, c3 = (src_rows[i]["full_commit"] for i in (0, 1, 3))
    tree = root / tag / SLOT / "worktree"
    target, branch = tree.parent, gitwork.branch_name(tag, SLOT)
    gitwork.open_worktree(ROOT, tree, branch, start=c1)
    (target / "results.jsonl").write_text(json.dumps(row(0, c1, c1, "keep", 3.4, "baseline")) + "\n")
    state = {"tag": tag, "backend": "cpu", "slot": SLOT, "branch": branch, "base_commit": c1,
             "settings": fixed.settings(compose_dict("run", FAST)),
             "pending": {"seq": 1, "commit": c1, "parent": c1, "description": "x", "runs": []}}
    (target / "campaign.json").write_text(json.dumps(state))
    args = ["replay", *FAST, f"replay.source={tag}/cpu", f"campaign.root={root}", *TARGET,
            "replay.repeats=2", "keep.baseline_runs=2", "isolation=off"]
    calls = fake_experiments(monkeypatch)
    res = in_process(capsys, monkeypatch, *args)
    assert res.returncode == 2 and "interrupted experiment pending" in res.stderr and not calls
    del state["pending"]
    (target / "campaign.json").write_text(json.dumps(state))

    calls = fake_experiments(monkeypatch, stop_at=4)  # the second run of the first discovery
    res = in_process(capsys, monkeypatch, *args)
    assert res.returncode == 130, res.stdout + res.stderr
    assert [(r["replay_mode"], r["replay_of"]["seq"]) for r in ledger(target)[1:]] == [
        ("baseline", 0), ("baseline", 0), ("cumulative", 1)]
    assert lock_free(target)

    calls = fake_experiments(monkeypatch)
    res = in_process(capsys, monkeypatch, *args)
    assert res.returncode == 0, res.stdout + res.stderr
    assert len(calls) == 3  # c1's second run, c3's two: nothing run twice
    rows = ledger(target)
    assert [r["status"] for r in rows] == ["keep"] + ["replay"] * 6
    assert all(r["full_commit"] == base for r in rows[1:3]) and rows[1]["description"].startswith("replay baseline")
    m = json.loads((target / "transfer" / f"{tag}__cpu.json").read_text())
    assert m["baseline"]["runs"] == 2 and m["baseline"]["val_bpb_mean"] == pytest.approx(3.5005)
    assert m["noise"] > 0 and m["noise_dof"] == 3  # the baseline's runs and each discovery's repeats
    r1, r3, _ = m["rows"]
    assert r1["cumulative"]["verdict"] == "helps" and r1["cumulative"]["gain"] == pytest.approx(0.1, abs=2e-3)
    assert r3["cumulative"]["verdict"] == "helps" and r3["cumulative"]["gain"] == pytest.approx(0.2, abs=2e-3)
    assert r1["individual"]["same_as"] == "cumulative"
    assert git("rev-parse", branch) == c1 and git("status", "--porcelain", cwd=tree) == ""  # the target's head
    from harness.decision import Head
    assert Head.of(rows).value == 3.4  # its keep decision still compares with its own head
    res = in_process(capsys, monkeypatch, "report", f"campaign.root={root}", f"report.out={root / 'report'}")
    assert res.returncode == 0, res.stdout + res.stderr  # `autoresearch report` reads the matrix
    md = (root / "report" / "report.md").read_text()
    assert f"{tag}/{SLOT}" in md and "helps" in md and "not applied" in md


def test_verdicts_use_the_noise_of_the_replays_runs():
    from harness.transfer import Judge, Runs

    keep = {"noise_sigmas": 2.0, "confirm_runs": 2, "threshold": None}
    base = Runs((3.50, 3.51, 3.49), (10.0, 10.0, 10.0))
    better, same, worse = Runs((3.40, 3.41), (10.0, 10.1)), Runs((3.505, 3.495), (10.0, 10.0)), Runs((3.6, 3.61), (9, 9))
    broken = Runs.of_rows([{"experiment_status": "ok", "val_bpb": 3.4}, {"experiment_status": "nan", "reason": "loss"}])
    judge = Judge(keep, None, base, [better, same, worse, broken])
    assert judge.rule.noise.dof == 5  # 2 from the baseline, 1 from each scored cell
    assert [judge.cell(r)["verdict"] for r in (better, same, worse)] == ["helps", "neutral", "hurts"]
    assert judge.cell(broken)["verdict"] == "hurts" and "nan" in judge.cell(broken)["why"]
    assert judge.cell(None, "does not apply")["verdict"] == "not applied"
    # a kernel campaign's: on speed, val_bpb no worse beyond its margin
    judge = Judge(keep, None, base, [better, worse], speed=True)
    assert judge.cell(worse)["verdict"] == "hurts"  # faster, but worse val_bpb
    assert judge.cell(Runs((3.50, 3.50), (8.0, 8.1)))["verdict"] == "helps"
    assert judge.cell(Runs((3.50, 3.50), (10.0, 10.0)))["verdict"] == "neutral"
