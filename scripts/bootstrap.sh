#!/usr/bin/env bash
# Creates .venv (if needed) and installs the project with pinned versions.
# Sourced by run_local.sh and run_tests.sh. Re-installs only when setup.py or
# constraints.txt changed since the last install, and reuses pip's cache.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "creating virtualenv $VENV" >&2
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.installed"
want="$(cat "$ROOT/setup.py" "$ROOT/constraints.txt" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "installing dependencies into $VENV (first run takes a few minutes)" >&2
  # pip's and the build backend's notes go to a log, shown only when the install fails.
  log="$VENV/install.log"
  if ! { "$VENV/bin/python" -m pip install --quiet "pip==26.3" &&
    "$VENV/bin/python" -m pip install --quiet -c "$ROOT/constraints.txt" -e "$ROOT[dev]"; } \
    >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "error: installing into $VENV failed; the whole log is $log" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"
# TensorFlow's C++ start-up chatter (CUDA probes, CPU flags) hides real messages.
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
