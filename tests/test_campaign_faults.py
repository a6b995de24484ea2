"""The external agent's campaign through its faults, end to end on CPU: a baseline that
failed, work left in the work tree, an edit partly outside the scope, a call that asks
for another budget, and a description no shell or Hydra quoting has to protect. Nothing
is lost, every stop says why in one line with its exit code, and the same tag always
goes on. Also the default keep rule: the baseline runs three times, and its spread is
the noise the first candidate is judged against."""
import json
import subprocess

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow


def git(tree, *args):
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tree,
                          capture_output=True, text=True).stdout.strip()


def rows(d):
    path = d / "results.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_campaign_goes_on_through_its_faults(cache_dir, where):
    tag, root = where
    d, at = root / tag / "cpu", [f"campaign.tag={tag}", f"campaign.root={root}", "backend=cpu"]
    settings = ["model=tiny", "budget.mode=wall", "data.eval_tokens=2048",
                "keep.confirm_runs=0", "agent=external", "eval.probe_tolerance=1e-4",
                "eval.causality_check=false"]  # the probe has tests of its own

    # 1. The baseline fails (cut off half a second after its start, before Python has
    #    even imported torch): a non-zero exit, one line, nothing recorded; fixed, the
    #    same tag goes on.
    res = run_cli("run", *at, *settings, "budget.seconds=0.5", "budget.allowance_seconds=0",
                  "budget.grace_seconds=0")
    assert res.returncode == 5, res.stdout + res.stderr
    assert "the baseline failed (timeout)" in res.stderr.splitlines()[-1] and "Traceback" not in res.stderr
    assert rows(d) == []
    res = run_cli("run", *at, *settings, "budget.seconds=2", "budget.allowance_seconds=30")
    assert res.returncode == 0, res.stdout + res.stderr
    recs = rows(d)
    assert [(r["seq"], r["status"]) for r in recs] == [(0, "keep"), (1, "confirm"), (2, "confirm")]
    assert recs[0]["runs"] == 3 and all(r["confirms"] == 0 for r in recs[1:])
    assert recs[0]["mean_val_bpb"] == pytest.approx(sum(r["val_bpb"] for r in recs) / 3)
    printed = next(line for line in res.stdout.splitlines() if "autoresearch record -m" in line)
    assert f"campaign.root={root}" in printed and "budget.mode=wall budget.seconds=2" in printed

    # 2. Work the campaign does not know (a commit by hand, then uncommitted edits) is
    #    kept on a named branch when a resume resets the work tree.
    tree, baseline = d / "worktree", rows(d)[0]["full_commit"]
    train = tree / "trainer" / "train.py"
    train.write_text(train.read_text().replace("WARMDOWN_RATIO = 0.5", "WARMDOWN_RATIO = 0.45"))
    git(tree, "commit", "-qam", "by hand")
    (tree / "notes.txt").write_text("my notes\n")
    res = run_cli("run", *at)  # only where the campaign is: its settings come from its start
    assert res.returncode == 0, res.stdout + res.stderr
    saved = git(tree, "branch", "--list", "--format=%(refname:short)", f"autoresearch-saved/{tag}/*")
    assert saved and f"kept on branch {saved}" in res.stdout
    assert git(tree, "show", f"{saved}:notes.txt") == "my notes"
    assert "by hand" in git(tree, "log", "--format=%s", saved)
    assert git(tree, "rev-parse", "HEAD") == baseline and git(tree, "status", "--porcelain") == ""

    # 3. An edit partly outside the scope: that part is refused and set aside in a patch;
    #    the part in scope stays in the work tree.
    prep = tree / "trainer" / "prepare.py"
    before = prep.read_text()
    prep.write_text(before + "# sneaky\n")
    (tree / "trainer" / "extra.py").write_text("x = 1\n")
    train.write_text(train.read_text().replace("WARMDOWN_RATIO = 0.5", "WARMDOWN_RATIO = 0.3"))
    res = run_cli("record", "-m", "mixed", *at)
    assert res.returncode == 2 and "outside scope" in res.stderr and "Traceback" not in res.stderr
    patch = next((d / "refused").glob("*.patch"))
    assert str(patch) in res.stderr and "# sneaky" in patch.read_text() and "x = 1" in patch.read_text()
    assert prep.read_text() == before and not (tree / "trainer" / "extra.py").exists()
    assert "WARMDOWN_RATIO = 0.3" in train.read_text() and len(rows(d)) == 3

    # 4. Another budget for the same campaign is refused, not compared with the first.
    res = run_cli("record", "-m", "longer", *at, "budget.seconds=5")
    assert res.returncode == 2 and "budget.seconds=2.0" in res.stderr and "fixed when it starts" in res.stderr
    assert "WARMDOWN_RATIO = 0.3" in train.read_text() and len(rows(d)) == 3

    # 5. Recorded under the campaign's budget, the description exactly as written.
    desc = "warm-down 0.3, (shorter) 'q' \"dq\" a=b"
    res = run_cli("record", "-m", desc, *at, "keep.confirm_runs=0")
    assert res.returncode == 0, res.stdout + res.stderr
    last = rows(d)[-1]
    assert (last["seq"], last["description"], last["budget_s"], last["agent"]) == (3, desc, 2.0, "external")
    assert last["diff"]["files"] == 1 and last["status"] in ("keep", "discard")
    rule = last["keep_rule"]
    assert rule["noise_dof"] == 2 and rule["noise_std"] > 0 and rule["margin"] > 0 and rule["head_runs"] == 3
    assert (last["status"] == "keep") == (rule["gain"] > rule["margin"])
    res = run_cli("ledger", *at)
    assert res.returncode == 0 and desc in res.stdout and "best kept" in res.stdout
