"""What a training run needs on disk before it starts: the data cache prepared, the data
paths absolute, and the run directory's files.

    workdir.ensure_prepared(cfg["data"])                  # prepare or repair the cache
    data = workdir.absolute_data(cfg["data"])
    workdir.write(run_dir / "train", train_src, settings)  # train.py, prepare.py alias, run_config.json

An experiment (harness/experiment.py) and calibration's baseline run (harness/throughput.py)
lay out their directories the same way through here, so the frozen baseline is measured
exactly as an experiment runs.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from harness import locks

PREPARE_ALIAS = '''"""Run-directory alias of trainer/prepare.py (immutable), so `import prepare` works."""
import sys

import trainer.prepare

sys.modules[__name__] = trainer.prepare
'''


def ensure_prepared(data: dict, log=lambda m: print(m, flush=True), who: str = "experiment") -> None:
    """Prepare the data and tokenizer on first use, and repair a damaged cache, by the
    cheap check (sizes; checksums where an mtime moved), so that a truncated file is
    rebuilt here rather than crashing train.py. Campaigns started side by side prepare
    it once: the others wait for the first, then find it ready."""
    from trainer import prepare as P  # tokenizers and pyarrow: only when a run needs them

    if not P.cache_notice(data):
        return
    with locks.held(prepare_lock(data), waiting=lambda: log(f"{who}: waiting for another process preparing "
                                                            f"data={data['name']} ...")):
        notice = P.cache_notice(data)  # the process we waited for may have done it
        if notice:
            log(f"{who}: {notice}")
            P.prepare(data)


def prepare_lock(data: dict) -> Path:
    """The lock held while a data set's cache is built or repaired."""
    return Path(os.path.expanduser(data["cache_dir"])) / f".prepare-{data['name']}.lock"


def absolute_data(data: dict) -> dict:
    """The data config with its paths made absolute: a sandboxed child has its own HOME
    (its scratch directory), where `~/.cache/...` would name nothing."""
    out = dict(data)
    for key in ("cache_dir", "path"):
        if out.get(key):
            out[key] = str(Path(os.path.expanduser(out[key])).resolve())
    return out


def write(d: Path, train_src: str, settings: dict, alias: bool = True) -> None:
    """A run directory: train.py, the `prepare.py` alias (`alias`), run_config.json."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "train.py").write_text(train_src)
    if alias:
        (d / "prepare.py").write_text(PREPARE_ALIAS)
    (d / "run_config.json").write_text(json.dumps(settings, indent=2))


def kernels_overlay(scratch: Path, kernels_dir: Path) -> Path:
    """A folder whose `kernels` is a campaign's edited copy of kernels/, to put first on a
    child's path (scope=kernels: the training child, the kernels check's child). The
    evaluation's runners never get it: they use the references."""
    overlay = scratch / "overlay"
    overlay.mkdir(parents=True, exist_ok=True)
    (overlay / "kernels").symlink_to(kernels_dir.resolve(), target_is_directory=True)
    return overlay
