#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment and install the project into it.
# torch is pinned first to the CPU build that pip finds on these machines; elsewhere pip takes
# the wheel matching the machine. Extra arguments are pip extras, e.g. `scripts/setup.sh test`.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -c "import torch" 2>/dev/null || "$VENV/bin/python" -m pip install --quiet "torch==${TORCH_VERSION:-2.13.0}"
extras="${1:-}"
"$VENV/bin/python" -m pip install --quiet -e ".${extras:+[$extras]}"
