#!/usr/bin/env bash
# The main job: install, then run experiments/demo.py end to end (offline, CPU, a few minutes)
# and write the analysis report to results/demo/analysis/report.md.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${VENV:-.venv}/bin/python" -m sweep experiments/demo.py "$@"
