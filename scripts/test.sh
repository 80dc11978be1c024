#!/usr/bin/env bash
# Install the test dependencies, provision the real small encoder (e5-small, offline), run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
SHARED="${SHARED_DIR:-../shared}"
export E5_SMALL_PATH="${E5_SMALL_PATH:-$("${VENV:-.venv}/bin/python" "$SHARED/tools/provision-e5-small" | tail -n 1)}"
export SWEEP_DATA_DIR="${SWEEP_DATA_DIR:-$(cd "$SHARED/data" && pwd)}"
exec "${VENV:-.venv}/bin/python" -m pytest "$@"
