#!/usr/bin/env bash
# Submits the batch job to Dataflow. Documented stub until the runners issue:
# it reads everything from the environment and hard-codes no project or bucket.
#   PROJECT=my-project REGION=us-central1 BUCKET=my-bucket INPUT='gs://.../*.csv' ./run_dataflow.sh batch
set -euo pipefail
cd "$(dirname "$0")"
mode="${1:-batch}"
: "${PROJECT:?set PROJECT}" "${REGION:?set REGION}" "${BUCKET:?set BUCKET}" "${INPUT:?set INPUT}"
if [ "$mode" != batch ]; then
  echo "run_dataflow.sh: only 'batch' exists so far (streaming comes with the streaming issue)" >&2
  exit 2
fi
source scripts/bootstrap.sh
python -m pipeline.preprocess \
  --spec "${SPEC:-schemas/taxi.yaml}" \
  --input "$INPUT" \
  --output_dir "gs://$BUCKET/${OUTPUT_PREFIX:-preprocess}/$(date -u +%Y%m%dT%H%M%SZ)" \
  --runner DataflowRunner \
  --project "$PROJECT" \
  --region "$REGION" \
  --temp_location "gs://$BUCKET/tmp" \
  --setup_file ./setup.py \
  "${@:2}"
