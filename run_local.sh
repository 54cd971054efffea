#!/usr/bin/env bash
# One command on a fresh clone: set up .venv, generate sample data if missing,
# run the batch pipeline on the local runner, print a summary.
#   ./run_local.sh [extra pipeline.preprocess flags]
# Environment: ROWS (default 50000), DATA (default data/taxi.csv), OUTPUT (default out/local).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/bootstrap.sh

ROWS="${ROWS:-50000}"
DATA="${DATA:-data/taxi.csv}"
OUTPUT="${OUTPUT:-out/local}"
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
