#!/usr/bin/env bash
# One command on a fresh clone: set up .venv, generate sample data if missing,
# run the batch pipeline on the local runner, print a summary.
# The console shows the run's phases, a progress line, the summary and the
# report's path; everything else is in the log file it names (OUTPUT/_logs/).
# Add --log_level INFO to see TensorFlow's and Beam's messages too.
#   ./run_local.sh [extra pipeline.preprocess flags]
#   ./run_local.sh train [extra pipeline.preprocess flags]   # then train and predict
#   ./run_local.sh serve    # after train: the online store on the Bigtable emulator,
#                           # materialized from the run, and serving.service on PORT
# Environment: ROWS (default 50000), DATA (default data/taxi.csv), OUTPUT (default
# out/local); for train also MODEL_DIR (default out/model) and TRAIN_STEPS (default 2000).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/bootstrap.sh

mode=preprocess
if [ "${1:-}" = train ] || [ "${1:-}" = serve ]; then
  mode=$1
  shift
fi
ROWS="${ROWS:-50000}"
DATA="${DATA:-data/taxi.csv}"
OUTPUT="${OUTPUT:-out/local}"
MODEL_DIR="${MODEL_DIR:-out/model}"

if [ "$mode" = serve ]; then
  # The store: BIGTABLE_EMULATOR_HOST when set (an emulator or proxy already
  # running), else a Bigtable emulator started here and stopped on exit.
  if [ ! -d "$MODEL_DIR/export" ]; then
    echo "error: $MODEL_DIR/export does not exist; run ./run_local.sh train first" >&2
    exit 2
  fi
  if [ -z "${BIGTABLE_EMULATOR_HOST:-}" ]; then
    EMULATOR=/usr/lib/google-cloud-sdk/platform/bigtable-emulator/cbtemulator
    if [ ! -x "$EMULATOR" ]; then
      echo "error: no Bigtable emulator: apt-get install google-cloud-cli-bigtable-emulator," \
        "or set BIGTABLE_EMULATOR_HOST" >&2
      exit 2
    fi
    "$EMULATOR" -host 127.0.0.1 -port "${EMULATOR_PORT:-8086}" > "$OUTPUT/_logs/cbtemulator.log" 2>&1 &
    emulator_pid=$!
    trap 'kill "$emulator_pid" 2>/dev/null' EXIT
    export BIGTABLE_EMULATOR_HOST="127.0.0.1:${EMULATOR_PORT:-8086}"
  fi
  export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
  store=(--bigtable_project local --bigtable_instance local --bigtable_table aggregates)
  mkdir -p "$OUTPUT/_logs"
  python -m pipeline.materialize --run_dir "$OUTPUT" "${store[@]}"
  echo "serving $MODEL_DIR on http://127.0.0.1:${PORT:-8501}/v1/models/taxi:predict (Ctrl-C stops)"
  python -m serving.service --model_dir "$MODEL_DIR" "${store[@]}" --port "${PORT:-8501}"
  exit 0
fi
if [ ! -f "$DATA" ]; then
  mkdir -p "$(dirname "$DATA")"
  python -m pipeline.sample_data --rows "$ROWS" --output "$DATA"
fi
python -m pipeline.preprocess \
  --spec schemas/taxi.yaml \
  --input "$DATA" \
  --output_dir "$OUTPUT" \
  --runner FnApiRunner \
  --num_shards 4 \
  --write_raw_features \
  --overwrite \
  "$@"
[ "$mode" = train ] || exit 0

mkdir -p "$MODEL_DIR"
LOG="$MODEL_DIR/train.log"
: > "$LOG"
# Runs a step with its stderr (TensorFlow's and Keras' messages) in $LOG, and
# shows the end of it if the step fails.
quietly() {
  local code=0
  "$@" 2>> "$LOG" || code=$?
  if [ "$code" -ne 0 ]; then
    echo "error: $* failed (exit $code); the end of $LOG:" >&2
    tail -n 20 "$LOG" >&2
    exit "$code"
  fi
}
echo "training ${TRAIN_STEPS:-2000} steps (log: $LOG)"
quietly python -m trainer.task --data_dir "$OUTPUT" --model_dir "$MODEL_DIR" \
  --train_steps "${TRAIN_STEPS:-2000}" > /dev/null
python - "$MODEL_DIR/metrics.json" <<'PY'
import json, sys
metrics = json.load(open(sys.argv[1]))
# The headline metric of the label's kind: regression, binary, multiclass.
name = next(n for n in ("rmse", "auc", "accuracy") if f"eval_{n}" in metrics)
print(f"eval {name} {metrics['eval_' + name]:.3f} vs constant baseline "
      f"{metrics['baseline_' + name]:.3f} after {metrics['global_step']} steps")
PY
quietly python -m trainer.instances --data_dir "$OUTPUT" --limit 5 > "$MODEL_DIR/instances.jsonl"
echo "predictions for 5 eval rows (raw JSON in $MODEL_DIR/instances.jsonl):"
quietly python -m trainer.predict --model_dir "$MODEL_DIR" \
  --json_instances "$MODEL_DIR/instances.jsonl"
