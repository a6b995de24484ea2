"""The evaluation of a handed-over model: two sandboxed runners, the scorer in this process.

    spec = evaluation.spec(cfg, probe_batches, tolerance, tolerance_source, bound)
    res = evaluation.run(cfg, backend_name, iso, spec, run_dir, handover, say)

Used by an experiment (harness/experiment.py) and by calibration, which evaluates the
frozen baseline the same way to time it (the runners' start-up and forward seconds set
the bound of every later evaluation on the device: harness/limits.py, `eval_bound`).

Both runners are started alike: the same scratch path (emptied in between; a private
tmpfs where the sandbox has namespaces), environment, arguments and descriptor numbers,
so that nothing tells the model's code which of them it is in.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

from harness import isolation, proc, score
from harness import runner as runner_mod
from harness.limits import Bound

RUNNER_FDS = (3, 4, 5)  # where every runner finds its socket and its two buffers


def spec(cfg: dict, probe_batches: int, tolerance: float, tolerance_source: str,
         bound: Bound | None) -> score.Spec:
    batch, T = int(cfg["model"]["device_batch_size"]), int(cfg["data"]["max_seq_len"])
    return score.Spec(cfg["data"], score.chunk_rows(batch, T, int(cfg["data"]["vocab_size"])), batch,
                      probe_batches, tolerance, tolerance_source, float(cfg["eval"]["timeout_seconds"]), bound)


def run(cfg: dict, backend: str, iso: isolation.Isolation, spec_: score.Spec, run_dir: Path, handover: Path,
        say=lambda msg: None) -> dict:
    """Score the model in `handover` (model.pt beside train.py and run_config.json);
    the runners' logs go to run_dir/eval-{scored,probe}.log."""
    T = int(cfg["data"]["max_seq_len"])

    def launch(name: str) -> score.Runner:
        scratch = run_dir / "runner"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        r = score.Runner(name, spec_.batch_rows, T, spec_.vocab)
        fds = dict(zip(r.fds(), RUNNER_FDS)) if iso.sandboxed and sys.platform.startswith("linux") else None
        env = {**proc.child_env(backend, cfg["backend"].get("threads"), handover / "run_config.json", None,
                                kernels="reference"),  # the metric runs on the references, always
               **iso.env(scratch), runner_mod.ENV_RUNNER: r.env_value(handover, fds)}
        cmd = iso.wrap([sys.executable, "-m", "harness.runner"], iso.runner_policy(scratch, handover), fds)
        return r.started(proc.Child.start(cmd, cwd=scratch, env=env, log=run_dir / f"eval-{name}.log",
                                          pass_fds=r.fds()))

    try:
        res = score.score(spec_, launch, log=say)
    finally:
        shutil.rmtree(run_dir / "runner", ignore_errors=True)
    if res["status"] in ("crash", "timeout"):
        tails = [(run_dir / f"eval-{n}.log") for n in ("scored", "probe")]
        res["log_tail"] = "\n".join(line for p in tails if p.exists() for line in p.read_text().splitlines()[-15:])
    return res
