#!/usr/bin/env bash
# Sets up .venv (if needed), lints, and runs the test suite.
#   ./run_tests.sh [pytest args]     e.g. ./run_tests.sh -m "not slow"
set -euo pipefail
cd "$(dirname "$0")"
source scripts/bootstrap.sh

ruff check .
ruff format --check .
python -m pytest "$@"
