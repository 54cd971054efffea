#!/usr/bin/env bash
# Submits the batch or the streaming job to Dataflow. Everything comes from the
# environment; no project, bucket or topic is hard-coded.
#   PROJECT=my-project REGION=us-central1 BUCKET=my-bucket INPUT='gs://.../*.csv' \
#     ./run_dataflow.sh batch [extra flags]
#   PROJECT=... REGION=... BUCKET=... TRANSFORM_DIR=gs://my-bucket/preprocess/RUN \
#     SUBSCRIPTION=projects/my-project/subscriptions/trips \
#     [OUTPUT_TOPIC=projects/my-project/topics/features] \
#     [DEAD_LETTER_TOPIC=projects/my-project/topics/trips-dead] \
#     ./run_dataflow.sh stream [extra flags]
# Code reaches the workers through setup.py (--setup_file).
#
# --dry_run builds the Dataflow job graph and writes it to JOB_FILE (default
# dataflow_job_<mode>.json) without submitting anything or needing credentials;
# INPUT and TRANSFORM_DIR must then be local paths, as their headers and manifest
# are read while the graph is built.
set -euo pipefail
cd "$(dirname "$0")"
mode="${1:-batch}"
: "${PROJECT:?set PROJECT}" "${REGION:?set REGION}" "${BUCKET:?set BUCKET}"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
extra=()
for arg in "${@:2}"; do
  if [ "$arg" = --dry_run ]; then
    extra+=(--dry_run true --dataflow_job_file "${JOB_FILE:-dataflow_job_$mode.json}")
  else
    extra+=("$arg")
  fi
done
common=(
  --spec "${SPEC:-schemas/taxi.yaml}"
  --runner DataflowRunner
  --project "$PROJECT"
  --region "$REGION"
  --temp_location "gs://$BUCKET/tmp"
  --setup_file ./setup.py
)
case "$mode" in
  batch)
    : "${INPUT:?set INPUT}"
    source scripts/bootstrap.sh
    python -m pipeline.preprocess "${common[@]}" \
      --input "$INPUT" \
      --output_dir "gs://$BUCKET/${OUTPUT_PREFIX:-preprocess}/$stamp" \
      ${extra[@]+"${extra[@]}"}
    ;;
  stream)
    : "${TRANSFORM_DIR:?set TRANSFORM_DIR to a batch output (gs://...)}"
    : "${SUBSCRIPTION:?set SUBSCRIPTION to projects/P/subscriptions/S}"
    source scripts/bootstrap.sh
    python -m pipeline.stream "${common[@]}" \
      --transform_dir "$TRANSFORM_DIR" \
      --input_subscription "$SUBSCRIPTION" \
      --output_dir "gs://$BUCKET/${OUTPUT_PREFIX:-stream}/$stamp" \
      ${OUTPUT_TOPIC:+--output_topic "$OUTPUT_TOPIC"} \
      ${DEAD_LETTER_TOPIC:+--dead_letter_topic "$DEAD_LETTER_TOPIC"} \
      --streaming \
      --enable_streaming_engine \
      ${extra[@]+"${extra[@]}"}
    ;;
  *)
    echo "usage: run_dataflow.sh batch|stream [extra flags]" >&2
    exit 2
    ;;
esac
