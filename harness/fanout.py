"""Fan-out: several campaigns (or experiments) at once through Hydra's multirun and its
launchers, one job per combination of the swept values.

    autoresearch run --multirun hydra/launcher=joblib backend=cuda backend.device=0,1,2,3
    autoresearch run --multirun hydra/launcher=submitit_slurm backend=cuda model=reference
    autoresearch run --multirun hydra/launcher=submitit_local backend=cpu backend.threads=1,2

Each job is one `autoresearch <verb>` in its own slot (harness/slot.py); Hydra's launcher
decides where it runs (in this process one after another, in local processes side by side,
on Slurm nodes). A job never ends its process: it records its outcome (exit code, the
line that said why, where its campaign is) in `outcome.json` in its own folder of the
sweep directory (hydra.sweep.dir, conf/base.yaml: under campaign.root, never in the
project) and returns. The launching process, once every job is done, prints one line per
job and exits with the jobs' code: 0 when all succeeded, else the failed jobs' code when
they share one, else 1.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Callable

from hydra.experimental.callback import Callback

MULTIRUN_VERBS = ("run", "experiment", "calibrate", "ledger")  # the verbs a multirun may fan out
OUTCOME = "outcome.json"

sweep_dir: Path | None = None  # the launching process's: set when a multirun starts
current: dict = {}  # this job's campaign (dir, branch, slot) and why it stopped, as they become known


class SweepRecorder(Callback):
    """Hydra calls it in the launching process (conf/base.yaml, hydra.callbacks): the sweep
    directory, where the jobs' outcomes will be, is remembered for the summary."""

    def on_multirun_start(self, config, **kwargs) -> None:
        global sweep_dir
        sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()


def in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def note(**fields) -> None:
    """What this job's outcome should tell (its campaign's dir, branch, slot; why it stopped)."""
    current.update({k: str(v) for k, v in fields.items()})


def job(body: Callable[[], object], verb: str) -> int:
    """Run one multirun job (`body`: the verb, which ends with SystemExit or returns);
    record its outcome and return its exit code instead of ending the process."""
    from hydra.core.hydra_config import HydraConfig

    from harness import stops

    hc = HydraConfig.get()
    current.clear()
    if threading.current_thread() is threading.main_thread():
        stops.install()  # a launcher's worker process: SIGTERM stops the campaign as Ctrl-C does
    code, line = 0, ""
    try:
        body()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        line = getattr(e, "line", "")
    except Exception as e:  # a bug: recorded, then Hydra reports it with its traceback
        _write(hc, verb, 1, f"{type(e).__name__}: {e}")
        raise
    _write(hc, verb, code, line)
    where = f": campaign {current['dir']} (branch {current['branch']})" if "dir" in current else ""
    print(f"fan-out job #{hc.job.num} ({' '.join(hc.overrides.task)}): exit code {code}{where}", flush=True)
    if code == stops.exit_code() and code >= 128:  # Ctrl-C or SIGTERM: the jobs after this one must not start
        raise KeyboardInterrupt
    return code


def _write(hc, verb: str, code: int, line: str) -> None:
    from trainer import atomic

    out = Path(hc.runtime.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = {"job": hc.job.num, "verb": verb, "overrides": list(hc.overrides.task), "code": code,
              "line": line, **current, "log": _submitit_log()}
    atomic.write_json(out / OUTCOME, record)


def _submitit_log() -> str | None:
    """Where a submitit job's output goes (its terminal is a file), else None."""
    try:
        import submitit

        return str(submitit.JobEnvironment().paths.stdout)
    except Exception:  # not a submitit job (or no submitit): the output went to the terminal
        return None


def outcomes(where: Path) -> list[dict]:
    """The jobs' outcomes in a sweep directory, in job order."""
    found = []
    for path in Path(where).glob(f"*/{OUTCOME}"):
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            found.append({"job": path.parent.name, "code": 1, "line": f"{path}: unreadable"})
    return sorted(found, key=_job_order)


def _job_order(outcome: dict) -> tuple[int, int]:
    num = str(outcome.get("job", ""))
    return (0, int(num)) if num.isdigit() else (1, 0)


def summary(where: Path, jobs_failed: bool) -> tuple[str, int]:
    """The launching process's report of a finished multirun, and its exit code.
    `jobs_failed`: Hydra reported a job that raised (it may have left no outcome)."""
    found = outcomes(where)
    varying = _varying([o.get("overrides", []) for o in found])
    lines, codes = [], []
    for o in found:
        code = int(o.get("code", 1))
        codes.append(code)
        label = " ".join(a for a in o.get("overrides", []) if a.split("=", 1)[0] in varying) or f"job {o['job']}"
        what = "ok" if code == 0 else f"FAILED (exit code {code})"
        said = o.get("why") or o.get("line") or ""  # a campaign's reason to stop, else the error line
        lines.append(f"  #{o['job']} {label}: {what}" + (f": {said}" if said else ""))
        if o.get("dir"):
            lines.append(f"      campaign {o['dir']} (branch {o['branch']})")
        if o.get("run"):
            lines.append(f"      run {o['run']}")
        if o.get("log") and code:
            lines.append(f"      log {o['log']}")
    failed = [c for c in codes if c]
    if jobs_failed and not failed:
        failed = [1]
        lines.append("  a job ended without recording its outcome (its error is above)")
    code = 0 if not failed else (failed[0] if len(set(failed)) == 1 else 1)
    head = (f"fan-out: {len(found)} job(s), {len([c for c in codes if c == 0])} ok, "
            f"{len([c for c in codes if c])} failed (outcomes: {where}/<job>/{OUTCOME})")
    return "\n".join([head, *lines]), code


def _varying(overrides: list[list[str]]) -> set[str]:
    """The keys whose values differ between the jobs (what tells one job from another)."""
    jobs = [dict(a.partition("=")[::2] for a in job_overrides) for job_overrides in overrides]
    return {key for key in set().union(*jobs) if len({j.get(key) for j in jobs}) > 1}
