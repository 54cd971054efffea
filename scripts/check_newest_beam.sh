#!/usr/bin/env bash
# Runs the end-to-end and streaming tests on the newest apache-beam release that
# resolves together with the pinned tensorflow, tensorflow-transform and tfx-bsl
# (users pin their own Beam; tf.Transform 1.21 accepts apache-beam>=2.53,<3).
#
#   scripts/check_newest_beam.sh
#
# Not part of CI: it installs a second stack into its own virtualenv,
# $NEWEST_BEAM_VENV (default .venv-newest-beam in the repository), and never
# touches .venv. Other knobs:
#   BEAM_SPEC     the Beam requirement to try (default: apache-beam[gcp]>PINNED,
#                 so that pip takes the newest release that resolves)
#   PYTHON        the interpreter the virtualenv is made from (default python3)
#   NEWEST_BEAM_TESTS  the test files to run (default: see TESTS below)
#
# The other pins of constraints.txt are kept, except Beam's own line. If a kept
# pin is what stops the newest Beam from resolving, the script says which and
# retries with only the pins that define the stack (tensorflow, tf.Transform,
# tfx-bsl). When no Beam newer than the pinned one resolves, it prints pip's
# resolver message and exits 1.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${NEWEST_BEAM_VENV:-$ROOT/.venv-newest-beam}"
PYTHON="${PYTHON:-python3}"
# The end-to-end and streaming tests (the emulator tests start the emulator
# themselves), then the workarounds' own tests: a workaround that turns itself
# off leaves the end-to-end tests passing, theirs assert that it took effect.
TESTS="${NEWEST_BEAM_TESTS:-tests/test_preprocess_e2e.py tests/test_stream_pipeline.py tests/test_streaming.py tests/test_pubsub_emulator.py tests/test_workarounds.py tests/test_early_workers.py tests/test_reproducible_runs.py tests/test_parallel_worker_close.py}"
# The packages whose versions define the stack this check is about.
STACK_PINS="tensorflow tensorflow-transform tfx-bsl"
# A second stack must not slow the other work on the machine.
NICE=(nice -n 10)
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"

work="$VENV/.check"
say() { echo "check_newest_beam: $*" >&2; }

pinned_version() {  # pinned_version NAME: its version in constraints.txt
  sed -n "s/^$1==//p" "$ROOT/constraints.txt"
}
pinned_beam="$(pinned_version apache-beam)"

if [ ! -x "$VENV/bin/python" ]; then
  say "creating virtualenv $VENV"
  "$PYTHON" -m venv "$VENV"
fi
mkdir -p "$work"
pip=("${NICE[@]}" "$VENV/bin/python" -m pip)
"${pip[@]}" install --quiet "pip==26.3"

# `pip index` is experimental and needs the registry: without it, say "unknown".
newest="$({ "${pip[@]}" index versions apache-beam 2>/dev/null || true; } |
  sed -n 's/^apache-beam (\(.*\))$/\1/p')"
say "apache-beam pinned: $pinned_beam; newest release: ${newest:-unknown}"
beam_spec="${BEAM_SPEC:-apache-beam[gcp]>$pinned_beam}"

# The project's own requirements, read from setup.py so that they are not
# repeated here, with Beam's pin replaced by $beam_spec. The project itself
# is installed without dependencies: its setup.py pins the old Beam.
"$VENV/bin/python" - "$ROOT/setup.py" "$beam_spec" > "$work/requirements.txt" <<'EOF'
import re, sys, setuptools
captured = {}
setuptools.setup = lambda **keywords: captured.update(keywords)
exec(compile(open(sys.argv[1]).read(), sys.argv[1], "exec"), {"__name__": "__main__"})
requirements = list(captured["install_requires"]) + list(captured["extras_require"]["dev"])
for requirement in requirements:
    name = re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0]
    print(sys.argv[2] if name == "apache-beam" else requirement)
EOF

# Every pin but Beam's; and only the stack's pins.
grep -v '^apache-beam==' "$ROOT/constraints.txt" > "$work/constraints-all.txt"
: > "$work/constraints-stack.txt"
for name in $STACK_PINS; do
  echo "$name==$(pinned_version "$name")" >> "$work/constraints-stack.txt"
done

install() {  # install CONSTRAINTS LOG: pip's whole output goes to LOG
  "${pip[@]}" install --progress-bar off -c "$1" -r "$work/requirements.txt" > "$2" 2>&1
}
resolver_message() {  # the part of a pip log that says why nothing resolved
  sed -n '/^ERROR/,$p' "$1"
}
installed_beam() {
  "$VENV/bin/python" -c 'from importlib.metadata import version; print(version("apache-beam"))'
}

constraints="$work/constraints-all.txt"
say "installing $beam_spec with every other pin of constraints.txt (log: $work/pip-all.log)"
if ! install "$constraints" "$work/pip-all.log"; then
  say "that does not resolve:"
  resolver_message "$work/pip-all.log" >&2
  constraints="$work/constraints-stack.txt"
  say "retrying with only the pins of $STACK_PINS (log: $work/pip-stack.log)"
  if ! install "$constraints" "$work/pip-stack.log"; then
    say "$beam_spec does not resolve with $(tr '\n' ' ' < "$constraints"):"
    resolver_message "$work/pip-stack.log" >&2
    exit 1
  fi
fi
if ! "${pip[@]}" install --quiet --no-deps -e "$ROOT" > "$work/pip-project.log" 2>&1; then
  tail -n 20 "$work/pip-project.log" >&2
  say "installing the project itself failed; see $work/pip-project.log"
  exit 1
fi

beam="$(installed_beam)"
if [ -n "$newest" ] && [ "$beam" != "$newest" ]; then
  # pip backtracked to an older Beam: say what keeps the newest out.
  say "pip chose apache-beam $beam, not the newest $newest; why $newest does not resolve:"
  "${pip[@]}" install --dry-run -c "$constraints" -r "$work/requirements.txt" \
    "apache-beam[gcp]==$newest" > "$work/pip-newest.log" 2>&1 || true
  resolver_message "$work/pip-newest.log" >&2
fi
if [ "$constraints" = "$work/constraints-all.txt" ]; then
  say "kept every pin of constraints.txt but apache-beam's"
fi
# What differs from constraints.txt: moved pins, and what the new Beam adds
# or no longer needs.
"$VENV/bin/python" -m pip freeze --exclude-editable | sort > "$work/freeze.txt"
echo "== differences from constraints.txt (-: pinned there, +: installed here)"
grep '==' "$ROOT/constraints.txt" | sort | diff - "$work/freeze.txt" | sed -n 's/^< /- /p; s/^> /+ /p' || true

echo "== installed versions ($VENV)"
"$VENV/bin/python" - <<'EOF'
from importlib.metadata import PackageNotFoundError, version
for name in ("apache-beam", "tensorflow", "tensorflow-transform", "tfx-bsl",
             "tensorflow-metadata", "pyarrow", "numpy", "pandas", "protobuf", "grpcio",
             "google-cloud-pubsub", "google-api-core", "google-cloud-storage",
             "google-cloud-bigquery", "keras", "tf_keras"):
    try:
        print(f"{name}=={version(name)}")
    except PackageNotFoundError:
        print(f"{name}: not installed")
EOF

# Each local-runner workaround checks the Beam internals it relies on; report
# which of them accept this Beam and which turn themselves off (or refuse).
echo "== local-runner workarounds on apache-beam $beam"
(cd "$ROOT" && "$VENV/bin/python" - <<'EOF')
from pipeline.workarounds.early_workers import EarlyWorkers
from pipeline.workarounds.parallel_worker_close import ParallelWorkerClose
from pipeline.workarounds.reproducible_runs import ReproducibleLocalRuns
from pipeline.workarounds.short_pubsub_pulls import ShortPubsubPulls
from pipeline.workarounds.stage_timing import StageTiming

# What pipeline.workarounds.guard asks before it applies one: a workaround with
# missing internals turns itself off for the run, with one warning.
for workaround in (ReproducibleLocalRuns(), ParallelWorkerClose(), EarlyWorkers(1),
                   ShortPubsubPulls(), StageTiming([], 0.0)):
    missing = workaround.missing_internals()
    state = "turns itself off: lacks " + ", ".join(missing) if missing else "on"
    print(f"{workaround.name}: {state}")
EOF

echo "== pytest on apache-beam $beam: $TESTS"
status=0
# shellcheck disable=SC2086  # TESTS is a list of paths
(cd "$ROOT" && "${NICE[@]}" "$VENV/bin/python" -m pytest -p no:cacheprovider -q -rfE $TESTS) \
  > "$work/pytest.log" 2>&1 || status=$?
# The failures' first lines and pytest's summary; the whole output is in the log.
grep -E '^(FAILED|ERROR) ' "$work/pytest.log" || true
tail -n 1 "$work/pytest.log"
say "pytest's whole output: $work/pytest.log"
exit "$status"
