"""The telemetry against a train.py that hides its work in a double-forked worker
(tests/attacks_telemetry.py): the worker's memory and CPU are the run's, whether the
sandbox keeps it in the run's process group or, without one, it leaves the group and
comes back to the harness as an orphan; it is not foreign load, and it dies with the run."""
import resource
import uuid

import psutil
import pytest

from tests import attacks_telemetry as attack
from tests import fakes
from tests.conftest import experiment

pytestmark = pytest.mark.slow
needs_sandbox = pytest.mark.skipif(__import__("harness.sandbox", fromlist=["support"]).support().kind == "none",
                                   reason="no sandbox on this machine (Landlock on Linux, sandbox-exec on macOS)")
# Under this average load of other processes over the whole run (cores), a `contended:`
# flag could only be the worker's own CPU (about 0.8 of a core over the timed training)
QUIET_CORES = 0.25


def _cpu_seconds() -> tuple[float, float]:
    """(the machine's busy CPU seconds, every core summed; this process's and its reaped
    descendants' CPU seconds): the run's own CPU, counted apart from the harness's figures."""
    t = psutil.cpu_times()
    busy = sum(t) - t.idle - getattr(t, "iowait", 0.0)
    mine = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return busy, sum(r.ru_utime + r.ru_stime for r in mine)


@pytest.mark.parametrize("isolation", [pytest.param("on", marks=needs_sandbox), "off"])
def test_a_double_forked_worker_is_measured_as_the_runs(cache_dir, tmp_path, isolation):
    marker = f"autoresearch-worker-{uuid.uuid4().hex}"
    t = fakes.write(tmp_path / "t.py", before_eval=attack.double_fork(marker))
    busy0, own0 = _cpu_seconds()
    # a budget long enough for the worker's CPU seconds on a busy machine (it hands over at once)
    res, s = experiment(tmp_path / "run", t, f"isolation={isolation}", "budget.seconds=30")
    busy1, own1 = _cpu_seconds()
    assert s["status"] == "ok", (res.stdout + res.stderr)[-3000:]
    assert "WORKER done" in (tmp_path / "run" / "train.log").read_text()
    tel = s["telemetry"]
    # its memory: the summary's peak and the telemetry's (train.py itself holds ~300 MB)
    assert s["peak_memory_mb"] >= 0.9 * attack.WORKER_MB and tel["ram_mb_peak"] >= 0.9 * attack.WORKER_MB, tel
    # its CPU seconds, spun inside the timed training while train.py waited, are the tree's
    tree_cpu_s = tel["cpu_percent_mean"] / 100 * s["training_seconds"]
    assert tree_cpu_s >= 0.6 * attack.WORKER_CPU_S, (tree_cpu_s, tel)
    others = (busy1 - busy0 - (own1 - own0)) / s["total_seconds"]  # cores the rest of the machine used
    if others < QUIET_CORES:
        assert not [f for f in tel["flags"] if f.startswith("contended")], (others, tel)
    # and it died with the run, though it had left train.py's tree (and, without a sandbox, its group)
    assert not [p for p in psutil.process_iter(["cmdline"]) if marker in (p.info["cmdline"] or [])]
