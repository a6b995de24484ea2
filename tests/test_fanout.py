"""Fan-out: device slots, the GPU pin, the locks that let campaigns share one repository
and one cache, and `run --multirun` through Hydra's launchers (two campaigns side by side
on the CPU, submitit's local launcher; the joblib launcher on `ledger`)."""
import json
import os
import subprocess
import threading
import time
import uuid

import pytest
import torch

import backends
from harness import fanout, gitwork, locks, proc, workdir
from harness.checks import ConfigError, validate
from harness.config import compose_dict
from harness.slot import overrides, slot
from tests.conftest import ROOT, remove_campaign, run_cli
from tests.inproc import in_process


# ----------------------------------------------------------------- slots

@pytest.mark.parametrize("backend_cfg, expected", [
    ({}, "cpu"), ({"threads": None, "device": None}, "cpu"), ({"threads": 1}, "cpu-t1"),
    ({"threads": 2}, "cpu-t2"), ({"device": 1}, "cuda-dev1"), ({"threads": 4, "device": 0}, "cuda-t4-dev0")])
def test_slot_names_the_backend_and_its_share(backend_cfg, expected):
    name = "cuda" if "dev" in expected else "cpu"
    assert slot(name, backend_cfg) == expected


def test_slot_overrides_reach_the_same_slot_again():
    assert overrides("cpu", {"name": "auto", "threads": 2, "device": None}) == ["backend=cpu", "backend.threads=2"]
    assert overrides("cuda", {"device": 3}) == ["backend=cuda", "backend.device=3"]


@pytest.fixture()
def torch_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)  # a Campaign activates its backend in this process


def test_campaign_dir_and_branch_follow_the_slot(tmp_path, torch_threads):
    from harness.campaign import Campaign

    base = ["backend=cpu", f"campaign.root={tmp_path}", "campaign.tag=t"]
    plain = Campaign(compose_dict("run", base))
    assert plain.dir == tmp_path / "t" / "cpu" and plain.branch == "autoresearch/t/cpu"  # old campaigns resume
    one = Campaign(validate(compose_dict("run", [*base, "backend.threads=1"])))
    assert one.dir == tmp_path / "t" / "cpu-t1" and one.branch == "autoresearch/t/cpu-t1" and one.slot == "cpu-t1"


def test_a_gpu_index_on_a_backend_without_gpus_is_refused(capsys, monkeypatch):
    with pytest.raises(ConfigError, match="backend.device=0: the cpu backend has no GPUs"):
        validate(compose_dict("run", ["backend=cpu", "backend.device=0"]))
    with pytest.raises(ConfigError, match="backend.device=-1: must be an integer >= 0"):
        validate(compose_dict("run", ["backend=cuda", "backend.device=-1"]))
    res = in_process(capsys, monkeypatch, "ledger", "backend=mps", "backend.device=1")
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "no GPUs to pick from" in res.stderr
    if not any(backends._module(n).is_available() for n in ("cuda", "rocm")):
        with pytest.raises((ValueError, RuntimeError), match="backend.device=0"):  # `auto` finds no GPU
            backends.activate("auto", None, 0)


@pytest.fixture()
def cuda_build(monkeypatch):
    """This process as a CUDA build of torch that has not touched a GPU yet."""
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(backends, "_unpinned", {})
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
    return monkeypatch


def test_pin_indexes_the_gpus_the_process_was_given(cuda_build):
    cuda_build.setenv("CUDA_VISIBLE_DEVICES", "4,5")  # e.g. Slurm's allocation
    assert backends._pin(1) == "CUDA_VISIBLE_DEVICES" and os.environ["CUDA_VISIBLE_DEVICES"] == "5"
    env = proc.child_env("cuda", None, None)
    assert env["CUDA_VISIBLE_DEVICES"] == "5"  # training and evaluation children see only that GPU
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"  # numbered as nvidia-smi numbers them
    backends._pin(0)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "4"  # the allocation's first, not the pinned list's
    with pytest.raises(ValueError, match="only 2 GPU"):
        backends._pin(2)
    backends._pin(None)  # a later job without a pin sees them all again
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "4,5"


def test_pin_without_a_list_and_after_the_gpu_is_in_use(cuda_build):
    backends._pin(3)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    backends._pin(None)
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    backends._pin(1)
    cuda_build.setattr(torch.cuda, "is_initialized", lambda: True)
    backends._pin(1)  # the same GPU again: fine
    with pytest.raises(RuntimeError, match="already uses another GPU"):
        backends._pin(2)


# ----------------------------------------------------------------- locks

def _repo(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    for args in (["init", "-q", "-b", "main"], ["commit", "-q", "--allow-empty", "-m", "root"]):
        subprocess.run(["git", *gitwork.IDENTITY, *args], cwd=repo, check=True, capture_output=True)
    return repo


def test_git_writes_wait_for_the_lock_and_reads_do_not(tmp_path):
    repo = _repo(tmp_path)
    writer = threading.Thread(target=gitwork.git, args=(repo, "branch", "b1"))
    with locks.held(gitwork.common_dir(repo) / gitwork.LOCK_FILE):  # another campaign is writing
        writer.start()
        time.sleep(1.0)
        assert writer.is_alive()  # the write waits for the lock ...
        assert len(gitwork.head(repo)) == 40  # ... a read does not
    writer.join(timeout=30)
    assert not writer.is_alive() and gitwork.git(repo, "branch", "--list", "b1")


def _campaign_git(repo, root, i, start: threading.Barrier, errors: list):
    """What a campaign does to the shared repository: its work tree, commits, resets."""
    try:
        start.wait()
        tree = gitwork.open_worktree(repo, root / f"slot{i}" / "worktree", f"autoresearch/t/slot{i}")
        for n in range(3):
            (tree / f"f{n}.txt").write_text(str(i))
            gitwork.commit_all(tree, f"exp {n} of slot {i}")
            gitwork.reset_to(tree, gitwork.head(tree))
    except Exception as e:
        errors.append(e)


def test_campaigns_started_at_the_same_instant_share_the_repository(tmp_path):
    """Six work trees (all named `worktree`: git picks their admin names) added, committed
    and reset at once in one repository (each git call its own process; the lock is a
    flock, which threads holding their own descriptors contend for as processes do):
    without the lock some `worktree add` or ref update collides with another's."""
    repo, errors, start = _repo(tmp_path), [], threading.Barrier(6)
    workers = [threading.Thread(target=_campaign_git, args=(repo, tmp_path / "c", i, start, errors))
               for i in range(6)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert errors == []
    listed = gitwork.git(repo, "worktree", "list", "--porcelain")
    assert sum(line.startswith("worktree ") for line in listed.splitlines()) == 7
    for i in range(6):
        log = gitwork.git(repo, "log", "--format=%s", f"autoresearch/t/slot{i}").splitlines()
        assert log == [f"exp {n} of slot {i}" for n in (2, 1, 0)] + ["root"]
    fsck = subprocess.run(["git", "fsck", "--no-progress"], cwd=repo, capture_output=True, text=True)
    assert fsck.returncode == 0 and "error" not in fsck.stderr.lower()


def test_a_second_process_on_the_same_campaign_is_refused(where, torch_threads):
    from harness.campaign import Campaign

    tag, root = where
    cfg = compose_dict("run", ["backend=cpu", "agent=random", f"campaign.tag={tag}", f"campaign.root={root}"])
    first, second = Campaign(cfg), Campaign(cfg)
    first.open()
    try:
        with pytest.raises(RuntimeError, match=f"already running \\(pid {os.getpid()} on "):
            second.open()
    finally:
        first.unlock()
    second.open()  # let go: the next one gets it (and a failed open left nothing held)
    second.unlock()


def test_data_prepared_once_when_two_wait_for_it(monkeypatch, tmp_path):
    from trainer import prepare as P

    data = {"name": "builtin", "cache_dir": str(tmp_path)}
    ready, built, said = threading.Event(), [], []
    monkeypatch.setattr(P, "cache_notice", lambda d: None if ready.is_set() else "not prepared yet")
    monkeypatch.setattr(P, "prepare", lambda d: built.append(d))
    with locks.held(workdir.prepare_lock(data)):  # another process is preparing it
        waiter = threading.Thread(target=workdir.ensure_prepared, args=(data, said.append))
        waiter.start()
        for _ in range(100):
            if said:
                break
            time.sleep(0.05)
        assert said and "waiting for another process preparing data=builtin" in said[0]
        ready.set()  # ... and finishes
    waiter.join(timeout=10)
    assert not waiter.is_alive() and built == []  # found ready: not prepared twice


def test_a_calibration_another_job_is_measuring_is_waited_for_then_read(monkeypatch, tmp_path, torch_threads):
    from harness import calibration, calibration_store

    cfg = compose_dict("calibrate", ["backend=cpu", f"data.cache_dir={tmp_path}"])
    measured, said, done = threading.Event(), [], []
    cached = {"created": time.time(), "cv": 0.01}
    monkeypatch.setattr(calibration_store, "load", lambda path: cached if measured.is_set() else None)
    monkeypatch.setattr(calibration, "validity", lambda cal, ccfg, path=None, limits_only=False: "" if cal else "none yet")
    monkeypatch.setattr(calibration, "_measured", lambda *a: done.append("measured twice"))
    with locks.held(calibration_store.directory(cfg) / ".cpu.lock"):  # another job is measuring the CPU
        waiter = threading.Thread(target=lambda: done.append(calibration.calibrate(cfg, log=said.append)))
        waiter.start()
        for _ in range(100):
            if said:
                break
            time.sleep(0.05)
        assert said == ["calibrate: waiting for another process measuring this device ..."]
        measured.set()  # ... and keeps its measurement
    waiter.join(timeout=10)
    assert done == [cached]  # read, not measured again


# ----------------------------------------------------------------- launchers

def test_launcher_presets_compose():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from harness.config import CONF_DIR, register

    register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        local = compose("run", ["hydra/launcher=local", "campaign.root=/r"], return_hydra_config=True).hydra
        slurm = compose("run", ["hydra/launcher=slurm"], return_hydra_config=True).hydra
    assert "JoblibLauncher" in local.launcher._target_ and local.launcher.n_jobs == 64
    assert local.sweep.dir.startswith("/r/multirun/")  # beside the campaigns, never in the project
    assert "SlurmLauncher" in slurm.launcher._target_ and slurm.launcher.nodes == 1
    assert slurm.launcher.gpus_per_node == 1 and slurm.launcher.timeout_min == 1440


def test_multirun_is_refused_where_it_means_nothing(capsys, monkeypatch):
    res = in_process(capsys, monkeypatch, "prepare", "--multirun", "data=builtin")
    assert res.returncode == 2 and "--multirun fans out run, experiment, calibrate, ledger only" in res.stderr


def test_summary_names_each_job_and_exits_with_their_code(tmp_path):
    for num, code, extra in [(0, 0, {"why": "max reached", "dir": "/c/t/cpu-t1", "branch": "b1"}),
                             (1, 3, {"line": "error: boom"})]:
        (tmp_path / str(num)).mkdir()
        (tmp_path / str(num) / fanout.OUTCOME).write_text(json.dumps(
            {"job": num, "code": code, "overrides": ["backend=cpu", f"backend.threads={num + 1}"], **extra}))
    text, code = fanout.summary(tmp_path, jobs_failed=False)
    assert code == 3 and "2 job(s), 1 ok, 1 failed" in text
    assert "#0 backend.threads=1: ok: max reached" in text and "campaign /c/t/cpu-t1 (branch b1)" in text
    assert "#1 backend.threads=2: FAILED (exit code 3): error: boom" in text
    assert fanout.summary(tmp_path / "0", jobs_failed=True)[1] == 1  # a job died before recording anything


QUICK = ["backend=cpu", "model=tiny", "agent=random", "campaign.max_experiments=1", "budget.mode=wall",
         "budget.seconds=2", "budget.grace_seconds=20", "data.eval_tokens=2048", "keep.baseline_runs=1",
         "keep.confirm_runs=0", "budget.allowance_seconds=60", "eval.probe_tolerance=1e-4",
         "eval.causality_check=false"]


@pytest.mark.slow
def test_two_campaigns_side_by_side_through_submitit(tmp_path):
    """The issue's command: two CPU campaigns at once (1 and 2 threads), each in its own
    slot, from an empty data cache (both jobs want to prepare it); then `ledger` over both
    through the joblib launcher, one job failing."""
    tag, root = f"fanout-{uuid.uuid4().hex[:8]}", tmp_path / "campaigns"
    cache = {"AUTORESEARCH_CACHE": str(tmp_path / "cache")}
    try:
        res = run_cli("run", "--multirun", "hydra/launcher=submitit_local", *QUICK, "backend.threads=1,2",
                      f"campaign.tag={tag}", f"campaign.root={root}", extra_env=cache, timeout=400)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "fan-out: 2 job(s), 2 ok, 0 failed" in res.stdout
        for s in ("cpu-t1", "cpu-t2"):
            d = root / tag / s
            assert f"campaign {d} (branch autoresearch/{tag}/{s})" in res.stdout
            rows = [json.loads(line) for line in (d / "results.jsonl").read_text().splitlines()]
            assert [r["seq"] for r in rows] == [0, 1] and rows[0]["description"] == "baseline"
            assert {r["slot"] for r in rows} == {s} and json.loads((d / "campaign.json").read_text())["slot"] == s
            assert gitwork.git(ROOT, "rev-parse", "--verify", f"refs/heads/autoresearch/{tag}/{s}")
            assert gitwork.git(d / "worktree", "status", "--porcelain") == ""
        trees = gitwork.git(ROOT, "worktree", "list", "--porcelain")
        assert all(f"worktree {root / tag / s / 'worktree'}" in trees for s in ("cpu-t1", "cpu-t2"))
        fsck = subprocess.run(["git", "fsck", "--no-progress", "--connectivity-only"], cwd=ROOT,
                              capture_output=True, text=True)
        assert fsck.returncode == 0, fsck.stderr
        sweeps = list((root / "multirun").glob(f"*/*/{fanout.OUTCOME}"))
        assert len(sweeps) == 2 and not (ROOT / "multirun").exists()

        res = run_cli("ledger", "--multirun", "hydra/launcher=joblib", "backend=cpu", "backend.threads=2",
                      f"campaign.tag={tag},no-such-tag", f"campaign.root={root}", extra_env=cache, timeout=120)
        assert res.returncode == 2, res.stdout + res.stderr  # the failed job's code
        assert "fan-out: 2 job(s), 1 ok, 1 failed" in res.stdout
        assert f"campaign.tag={tag}: ok" in res.stdout
        assert "campaign.tag=no-such-tag: FAILED (exit code 2)" in res.stdout
    finally:
        for s in ("cpu-t1", "cpu-t2"):
            remove_campaign(tag, root, s)


LOCK_GRAB = '''
import fcntl
for _name, _path in LOCKS.items():  # hold what campaigns side by side wait on: they would stall
    attempt(_name, lambda p=_path: fcntl.flock(os.open(p, os.O_RDONLY | os.O_CREAT), fcntl.LOCK_EX | fcntl.LOCK_NB))
'''


@pytest.mark.slow
def test_train_py_cannot_hold_the_locks_other_campaigns_wait_on(cache_dir, tmp_path):
    """A hostile train.py that takes the git lock, the data cache's, the calibration's and
    another campaign's would stall every campaign beside it: the sandbox lets it open
    none of them (the files exist: the strongest case)."""
    from tests import attacks, fakes
    from tests.conftest import experiment
    from tests.test_attacks import attempts, needs_sandbox

    if needs_sandbox.args[0]:
        pytest.skip(needs_sandbox.kwargs["reason"])
    paths = {"git": gitwork.common_dir(ROOT) / gitwork.LOCK_FILE,
             "data": workdir.prepare_lock({"name": "builtin", "cache_dir": str(cache_dir)}),
             "calibration": cache_dir / "calibration" / ".cpu.lock",
             "campaign": tmp_path / "campaigns" / "t" / "cpu" / "campaign.lock"}
    for path in paths.values():
        with locks.held(path):  # made, as a running campaign makes it
            pass
    top = attacks.ATTEMPT + f"LOCKS = {json.dumps({k: str(v) for k, v in paths.items()})}\n"
    res, s = experiment(tmp_path / "run", fakes.write(tmp_path / "t.py", top=top, before_eval=LOCK_GRAB))
    assert attempts(tmp_path / "run") == {name: "DENIED" for name in paths}, res.stdout
    assert s["status"] == "ok", s
