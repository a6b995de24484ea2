"""The fault matrix: faults and bad input, tried as a demanding user would, each judged.

    .venv/bin/python benchmarks/fault_matrix.py            # every case (~4 min on 2 cores)
    .venv/bin/python benchmarks/fault_matrix.py -k cache   # the cases whose name has "cache"

Every case runs the real command line (`python -m harness ...`) in a temporary cache and
campaign root and is judged:
- GOOD: the documented exit code, the last line of stderr says what happened (no
  traceback), and nothing is lost (each case checks what it could lose);
- POOR: the right exit code and nothing lost, but the message is missing or unclear;
- BAD: a traceback, the wrong exit code, or lost work.
It prints one row per case and the counts; it exits 1 when a case is BAD. The temporary
campaigns' branches and work trees are removed at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASES: list[tuple[str, callable]] = []
BASE = ["backend=cpu", "model=tiny"]
QUICK = [*BASE, "budget.mode=wall", "budget.seconds=2", "budget.allowance_seconds=30", "eval.probe_tolerance=1e-4",
         "data.eval_tokens=2048", "quiet=true"]


def case(fn):
    CASES.append((fn.__name__, fn))
    return fn


class Env:
    """The temporary cache and campaign root the cases share."""

    def __init__(self, tmp: Path):
        self.tmp, self.cache, self.root = tmp, tmp / "cache", tmp / "campaigns"
        self.tags: list[str] = []

    def cli(self, *args, env=None, timeout=600) -> subprocess.CompletedProcess:
        full = {**os.environ, "AUTORESEARCH_CACHE": str(self.cache), **(env or {})}
        full.pop("ANTHROPIC_API_KEY", None)
        return subprocess.run([sys.executable, "-m", "harness", *args], cwd=ROOT, env=full, capture_output=True,
                              text=True, timeout=timeout)

    def popen(self, *args) -> subprocess.Popen:
        env = {**os.environ, "AUTORESEARCH_CACHE": str(self.cache)}
        return subprocess.Popen([sys.executable, "-m", "harness", *args], cwd=ROOT, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def tag(self) -> list[str]:
        t = f"fm-{uuid.uuid4().hex[:6]}"
        self.tags.append(t)
        return [f"campaign.tag={t}", f"campaign.root={self.root}", "backend=cpu"]

    def cleanup(self) -> None:
        for t in self.tags:
            git("worktree", "remove", "--force", str(self.root / t / "cpu" / "worktree"))
            saved = git("branch", "--list", "--format=%(refname:short)", f"autoresearch-saved/{t}/*").split()
            for b in [f"autoresearch/{t}/cpu", *saved]:
                git("branch", "-D", b)


def git(*args, cwd=ROOT) -> str:
    return subprocess.run(["git", "-c", "user.name=fm", "-c", "user.email=fm@x", *args], cwd=cwd,
                          capture_output=True, text=True).stdout.strip()


def judge(res, code: int, *words: str, lost: str = "") -> tuple[str, str]:
    """GOOD / POOR / BAD for a finished command, and the line it ended with."""
    err = res.stderr if isinstance(res, subprocess.CompletedProcess) else res[1]
    rc = res.returncode if isinstance(res, subprocess.CompletedProcess) else res[0]
    last = (err.strip().splitlines() or [""])[-1]
    if "Traceback" in err or rc != code or lost:
        return "BAD", f"exit {rc} (want {code}); {lost or last}"
    if not all(w in last for w in words):
        return "POOR", f"exit {rc}; {last}"
    return "GOOD", f"exit {rc}; {last}"


# ------------------------------------------------------------------ bad input

def _bad(name: str, args: list[str], code: int, *words: str):
    def run(e: Env):
        return judge(e.cli(*args), code, *words)
    run.__name__ = name
    case(run)


_bad("budget_seconds_zero", ["experiment", *BASE, "budget.mode=wall", "budget.seconds=0"], 2, "budget.seconds=0")
_bad("budget_seconds_negative", ["experiment", *BASE, "budget.mode=wall", "budget.seconds=-5"], 2, "budget.seconds=-5")
_bad("budget_seconds_absurd", ["experiment", *BASE, "budget.mode=wall", "budget.seconds=1e9"], 2, "max_seconds")
_bad("budget_seconds_nan", ["experiment", *BASE, "budget.mode=wall", "budget.seconds=nan"], 2, "budget.seconds")
_bad("budget_mode_unknown", ["experiment", *BASE, "budget.mode=fast"], 1, "")
_bad("unknown_key", ["experiment", *BASE, "foo=1"], 1, "")
_bad("unknown_plus_key", ["experiment", *BASE, "+foo=1"], 1, "foo")
_bad("unknown_model_preset", ["experiment", "backend=cpu", "model=huge"], 1, "")
_bad("threads_zero", ["calibrate", *BASE, "backend.threads=0"], 2, "backend.threads=0")
_bad("probe_batches_zero", ["experiment", *BASE, "eval.probe_batches=0"], 2, "eval.probe_batches")
_bad("tag_with_slash", ["run", *BASE, "campaign.tag=a/b"], 2, "campaign.tag")
_bad("window_pattern_junk", ["experiment", *BASE, "model.window_pattern=XYZ"], 2, "window_pattern")
_bad("train_file_missing", ["experiment", *QUICK, "train_file=/nonexistent/train.py"], 2, "no such file")
_bad("local_data_without_path", ["prepare", "data=local"], 2, "data.path")
_bad("local_data_path_missing", ["prepare", "data=local", "data.path=/nonexistent/dir"], 2, "not found")
_bad("reference_unknown", ["experiment", *BASE, "budget.reference=nosuchdevice"], 2, "budget.reference")
_bad("record_no_campaign", ["record", "-m", "x", "backend=cpu", "campaign.tag=nope", "campaign.root=/nonexistent"],
     2, "no campaign at")


@case
def claude_without_key(e: Env):
    root = e.tmp / "claude-root"
    res = e.cli("run", *BASE, "agent=claude", f"campaign.root={root}")
    return judge(res, 2, "ANTHROPIC_API_KEY", lost="it made a campaign" if root.exists() else "")


@case
def campaign_root_is_a_file(e: Env):
    f = e.tmp / "a-file"
    f.write_text("")
    return judge(e.cli("run", *BASE, f"campaign.root={f}"), 2, "is a file")


@case
def git_missing_from_path(e: Env):
    bare = e.tmp / "bin"
    bare.mkdir(exist_ok=True)
    if not (bare / "python").exists():
        (bare / "python").symlink_to(sys.executable)
    return judge(e.cli("run", *BASE, f"campaign.root={e.root}", env={"PATH": str(bare)}), 2, "git")


@case
def threads_far_above_the_cores(e: Env):
    res = e.cli("ledger", *BASE, "backend.threads=512", "campaign.tag=nope", f"campaign.root={e.tmp / 'none'}")
    warned = "more than the" in res.stderr and "cores" in res.stderr
    return ("GOOD" if warned and "Traceback" not in res.stderr else "BAD"), (res.stderr.strip().splitlines() or [""])[0]


@case
def calibration_json_wrong_types(e: Env):
    bad = e.tmp / "bad-calibration.json"
    bad.write_text(json.dumps({"id": "x", "created": 1.7e9, "created_iso": "2026-11-30", "device": "cpu",
                               "preset": "tiny", "cv": 0.01, "tokens_per_s": "fast"}))
    return judge(e.cli("experiment", *BASE, f"budget.reference={bad}"), 2, "tokens_per_s")


@case
def readonly_empty_cache(e: Env):
    blocker = e.tmp / "not-a-dir"
    blocker.write_text("")
    return judge(e.cli("prepare", f"data.cache_dir={blocker / 'cache'}"), 2, str(blocker))


@case
def junk_parquet_in_local_data(e: Env):
    d = e.tmp / "local-junk"
    d.mkdir(exist_ok=True)
    (d / "a.txt").write_text("some text " * 200)
    (d / "b.parquet").write_bytes(os.urandom(256))
    return judge(e.cli("prepare", "data=local", f"data.path={d}", f"data.cache_dir={e.tmp / 'junk-cache'}"), 2,
                 "b.parquet")


# ------------------------------------------------------------------ the cache

def _damage(name: str, what):
    def run(e: Env):
        target = what(e)
        original = target.read_bytes() if target.exists() else None
        if target.exists():
            target.write_bytes(target.read_bytes()[: max(1, target.stat().st_size // 3)])
        res = e.cli("prepare")
        fixed = target.exists() and (original is None or target.read_bytes() == original)
        verdict = judge(res, 0, lost="" if fixed else f"{target.name} not repaired")
        said = target.name in res.stdout + res.stderr
        return (verdict[0] if said or verdict[0] == "BAD" else "POOR"), verdict[1]
    run.__name__ = name
    case(run)


_damage("cache_truncated_train_parquet", lambda e: sorted((e.cache / "data" / "builtin").glob("train_*.parquet"))[0])
_damage("cache_truncated_val_parquet", lambda e: sorted((e.cache / "heldout" / "builtin").glob("val_*.parquet"))[0])
_damage("cache_truncated_tokenizer", lambda e: next((e.cache / "data" / "builtin").glob("tokenizer-*/tokenizer.pkl")))


@case
def cache_deleted_train_parquet_then_experiment(e: Env):
    f = sorted((e.cache / "data" / "builtin").glob("train_*.parquet"))[0]
    f.unlink()
    res = e.cli("experiment", *QUICK, f"hydra.run.dir={e.tmp / 'exp-repaired'}")
    return judge(res, 0, lost="" if f.exists() else "not repaired")


# ------------------------------------------------------------------ signals

@case
def ctrl_c_during_calibrate(e: Env):
    p = e.popen("calibrate", *BASE, "calibrate.force=true")
    time.sleep(12)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    return judge((p.returncode, err), 130, "interrupted")


def _signal_experiment(name: str, sig: int, code: int):
    def run(e: Env):
        d = e.tmp / name
        p = e.popen("experiment", *QUICK, "budget.seconds=60", f"hydra.run.dir={d}")
        deadline = time.time() + 120
        while not (d / "train.log").exists() and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(2)
        p.send_signal(sig)
        out, err = p.communicate(timeout=120)
        s = json.loads((d / "summary.json").read_text()) if (d / "summary.json").exists() else {}
        return judge((p.returncode, err), code, "INTERRUPTED",
                     lost="" if s.get("status") == "interrupted" else "no summary")
    run.__name__ = name
    case(run)


_signal_experiment("sigterm_to_experiment", signal.SIGTERM, 143)
_signal_experiment("ctrl_c_during_experiment", signal.SIGINT, 130)


@case
def disk_full_during_experiment(e: Env):
    """A 40 MB tmpfs as the run directory, in a private mount namespace (needs `unshare`)."""
    if not shutil.which("unshare"):
        return "SKIP", "no unshare"
    d = e.tmp / "full"
    d.mkdir(exist_ok=True)
    script = (f"mount -t tmpfs -o size=40k tmpfs {d} && exec {sys.executable} -m harness experiment "
              + " ".join(QUICK) + f" hydra.run.dir={d}/run")
    res = subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "AUTORESEARCH_CACHE": str(e.cache)}, timeout=300)
    if "mount" in res.stderr and "permission" in res.stderr.lower():
        return "SKIP", "no mount namespace here"
    return judge(res, 2, "no space left")


# ------------------------------------------------------------------ campaigns

@case
def campaign_faults_and_resume(e: Env):
    """A failed baseline, then a fix; stray work on resume; an edit partly out of scope; another
    budget; a description with the override grammar's characters. One case: they share a campaign."""
    at = e.tag()
    tree = e.root / at[0].split("=")[1] / "cpu" / "worktree"
    settings = [*QUICK, "keep.baseline_runs=1", "keep.confirm_runs=0", "agent=external"]
    steps = []
    res = e.cli("run", *at, *settings, "budget.seconds=0.5", "budget.allowance_seconds=0", "budget.grace_seconds=0")
    steps.append(judge(res, 5, "the baseline failed"))
    steps.append(judge(e.cli("run", *at, *settings), 0))
    train, prep = tree / "trainer" / "train.py", tree / "trainer" / "prepare.py"
    train.write_text(train.read_text().replace("WARMDOWN_RATIO = 0.5", "WARMDOWN_RATIO = 0.45"))
    git("commit", "-qam", "by hand", cwd=tree)
    (tree / "notes.txt").write_text("keep me\n")
    res = e.cli("run", *at)
    kept = git("branch", "--list", f"autoresearch-saved/{at[0].split('=')[1]}/*")
    steps.append(("GOOD" if kept and res.returncode == 0 and "kept on branch" in res.stdout else "BAD",
                  "stray work kept on " + (kept or "nothing")))
    prep.write_text(prep.read_text() + "# sneaky\n")
    train.write_text(train.read_text().replace("WARMDOWN_RATIO = 0.5", "WARMDOWN_RATIO = 0.3"))
    res = e.cli("record", "-m", "mixed", *at)
    steps.append(judge(res, 2, "refused", lost="" if "0.3" in train.read_text() else "the in-scope edit"))
    steps.append(judge(e.cli("record", "-m", "x", *at, "budget.seconds=5"), 2, "fixed when it starts"))
    desc = "lr 0.3, (shorter) 'q' a=b"
    res = e.cli("record", "-m", desc, *at)
    last = json.loads((tree.parent / "results.jsonl").read_text().splitlines()[-1])
    steps.append(judge(res, 0, lost="" if last["description"] == desc else "the description"))
    worst = max(steps, key=lambda s: ["GOOD", "POOR", "BAD"].index(s[0]))
    return worst[0], "; ".join(f"{v}" for v, _ in steps) + (f" | {worst[1]}" if worst[0] != "GOOD" else "")


@case
def campaign_killed_and_resumed(e: Env):
    at = e.tag()
    args = [*QUICK, "keep.baseline_runs=1", "keep.confirm_runs=0", "agent=random", "campaign.max_experiments=2"]
    p = e.popen("run", *at, *args)
    time.sleep(15)
    p.send_signal(signal.SIGKILL)
    p.communicate()
    res = e.cli("run", *at, *args)
    rows = [json.loads(x) for x in (e.root / at[0].split("=")[1] / "cpu" / "results.jsonl").read_text().splitlines()]
    seqs = [r["seq"] for r in rows]
    return judge(res, 0, lost="" if seqs == [0, 1, 2] else f"rows {seqs}")


@case
def campaign_worktree_deleted(e: Env):
    at = e.tag()
    d = e.root / at[0].split("=")[1] / "cpu"
    args = [*QUICK, "keep.baseline_runs=1", "agent=external"]
    first = e.cli("run", *at, *args)
    if first.returncode != 0:
        return judge(first, 0)
    rows = (d / "results.jsonl").read_text()
    shutil.rmtree(d / "worktree")
    res = e.cli("run", *at)
    head = git("rev-parse", "HEAD", cwd=d / "worktree") if (d / "worktree").exists() else ""
    kept = json.loads(rows.splitlines()[0])["full_commit"]
    return judge(res, 0, lost="" if (d / "results.jsonl").read_text() == rows and head == kept else "the campaign")


@case
def campaign_state_corrupted(e: Env):
    at = e.tag()
    d = e.root / at[0].split("=")[1] / "cpu"
    d.mkdir(parents=True)
    (d / "campaign.json").write_text("{not json")
    return judge(e.cli("run", *at, *QUICK, "agent=external"), 2, "campaign.json")


@case
def campaign_already_running(e: Env):
    at = e.tag()
    d = e.root / at[0].split("=")[1] / "cpu"
    d.mkdir(parents=True)
    sleeper = subprocess.Popen(["sleep", "60"])
    (d / "campaign.lock").write_text(str(sleeper.pid))
    try:
        return judge(e.cli("run", *at, *QUICK, "agent=external"), 2, "already running")
    finally:
        sleeper.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-k", default="", help="only the cases whose name contains this")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fault-matrix-"))
    e = Env(tmp)
    counts = {"GOOD": 0, "POOR": 0, "BAD": 0, "SKIP": 0}
    try:
        e.cli("prepare", timeout=600)
        for name, fn in CASES:
            if a.k not in name:
                continue
            t0 = time.time()
            try:
                verdict, detail = fn(e)
            except Exception as ex:  # the matrix itself must finish: a case that breaks it is BAD
                verdict, detail = "BAD", f"{type(ex).__name__}: {ex}"
            counts[verdict] += 1
            print(f"{verdict:<5} {name:<46} {time.time() - t0:5.1f}s  {detail[:160]}", flush=True)
    finally:
        e.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    print(" | ".join(f"{k} {v}" for k, v in counts.items()), f"of {sum(counts.values())} cases")
    raise SystemExit(1 if counts["BAD"] else 0)


if __name__ == "__main__":
    main()
