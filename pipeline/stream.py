"""Streaming: Pub/Sub JSON events -> validated rows -> live aggregates -> the
transform graph of a batch run -> windowed TFRecords (and Pub/Sub).

    python -m pipeline.stream --spec schemas/taxi.yaml --transform_dir BATCH_OUT \\
        --input_subscription projects/P/subscriptions/S --output_dir STREAM_OUT \\
        [--output_topic projects/P/topics/T] [--dead_letter_topic projects/P/topics/D] \\
        [--allowed_lateness 2min] [--write_raw_features] \\
        [--bigtable_project P --bigtable_instance I --bigtable_table T] --streaming [Beam options]

Writes STREAM_OUT/examples/part-<window start>-<window end>-<shard>-of-<n>.tfrecord.gz
(transformed tf.train.Examples with the record key), STREAM_OUT/dead_letter/*.jsonl
(unless --dead_letter_topic is given), STREAM_OUT/raw_features/*.jsonl (rows
with their aggregates, with --write_raw_features) and, at start,
STREAM_OUT/stream.json (spec hash, transform_fn fingerprint, flags). See
transforms/admission.py for the event-time model.

With --bigtable_project/--bigtable_instance/--bigtable_table, every final
value of every aggregate is also written to that online store
(transforms/online_store.py: one row per aggregate and entity, one cell per
period stamped with the period's start qP): the value for the rows of period q
over the window [qP - W, qP), written when the trailing window closes at
event time qP + L (L = --allowed_lateness), at the same moment it is
published to --output_topic. Every period whose trailing window of the
group's longest aggregate holds a row gets a cell for each aggregate of the
group. With --create_table if_missing (the default) the table is created
first. `python -m pipeline.materialize` writes the same cells from a batch run.

A local run (DirectRunner) runs until Ctrl-C or SIGTERM; on Dataflow the command
returns once the job is submitted. Exit codes: 0 success, 1 failed run, 2 bad
flags, spec or transform_dir.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Sequence

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.transforms import window

from pipeline import lifecycle, workarounds
from pipeline import manifest as manifest_io
from pipeline.commit import new_run_id
from pipeline.dataflow import dry_run_requested, write_job_file
from pipeline.layout import (
    DEAD_LETTER_SUFFIX,
    EXAMPLES_SUFFIX,
    JSON_LINES_SUFFIX,
    MANIFEST_NAME,
    RunLayout,
    StreamLayout,
)
from pipeline.lifecycle import EXIT_OK, EXIT_USAGE, StopRequested, StopState
from pipeline.logs import run_log, run_log_path
from pipeline.options import (
    LOCAL_STREAMING_RUNNER,
    STREAM_OPTION_CLASSES,
    DatasetOptions,
    OptionsError,
    StreamOptions,
    WorkaroundOptions,
    create_online_store_if_missing,
    duration_seconds,
    online_store_table,
    pin_local_runner,
    unknown_flags,
    validate_stream_options,
)
from schemas.spec import DatasetSpec, SpecError, load_spec
from transforms.admission import AdmitOnTime
from transforms.aggregates import group_aggregates
from transforms.live_aggregates import JoinLiveAggregates
from transforms.messages import (
    BatchMessages,
    PubsubMessages,
    RowsAtEventTime,
    event_time_column,
    row_to_json,
)
from transforms.tfrecords import TFRecordGzipSink
from transforms.transform_graph import ApplyTransformGraph
from transforms.validation import ValidateInput, dead_letter_to_json
from transforms.windowed_files import WriteWindowedFiles, stamp_arrival_time

CANCEL_GRACE_SECONDS = 5


def _message(data: bytes, **attributes: str):
    from apache_beam.io.gcp.pubsub import PubsubMessage

    return PubsubMessage(data, attributes)


def example_message(element: tuple[str, bytes]):
    key, example = element
    return _message(example, kind="example", key=str(key))


def aggregate_message(record: dict):
    return _message(row_to_json(record).encode("utf-8"), kind="aggregate", group=record["group"])


def dead_letter_message(record: dict):
    # Attribute values are limited to 1024 bytes; the full reason is in the body.
    reason = record["reason"].encode("utf-8")[:1000].decode("utf-8", errors="ignore")
    return _message(dead_letter_to_json(record).encode("utf-8"), kind="dead_letter", reason=reason)


def build_pipeline(
    p: beam.Pipeline,
    options: PipelineOptions,
    spec: DatasetSpec,
    messages: beam.PCollection | None = None,
) -> None:
    """Wires the whole streaming job into `p`.

    `messages`, when given, replaces reading Pub/Sub: a PCollection of
    PubsubMessage (tests use TestStream here). With an online store named by
    the --bigtable_* flags, each group's final window values go there too; the
    table must exist (`run` creates it first with --create_table if_missing).
    """
    dataset = options.view_as(DatasetOptions)
    stream = options.view_as(StreamOptions)
    out = StreamLayout(dataset.output_dir)
    lateness = duration_seconds(stream.allowed_lateness)

    if messages is None:
        messages = p | "ReadMessages" >> beam.io.ReadFromPubSub(
            subscription=stream.input_subscription,
            topic=stream.input_topic,
            with_attributes=True,
        )
    parsed = (
        messages
        | "BatchMessages" >> BatchMessages()
        | "ValidateMessages" >> ValidateInput(spec, PubsubMessages(spec))
    )
    rows = parsed.valid | "RowsAtEventTime" >> RowsAtEventTime(event_time_column(spec))
    admission = rows | "AdmitOnTime" >> AdmitOnTime(
        spec, lateness, duration_seconds(stream.late_data_horizon)
    )
    live = admission.admitted | "JoinLiveAggregates" >> JoinLiveAggregates(spec, lateness)
    examples = live["rows"] | "TransformRows" >> ApplyTransformGraph(
        spec, stream.transform_dir, stream.transform_batch_size
    )

    _write_files(dataset, stream, out, examples, live["rows"])
    dead_letters = (
        (
            parsed.dead_letter,
            admission.late | "LateToGlobalWindow" >> beam.WindowInto(window.GlobalWindows()),
        )
        | "FlattenDeadLetters" >> beam.Flatten()
        | "StampArrivalTime" >> beam.Map(stamp_arrival_time)
    )
    _write_dead_letters(stream, out, dead_letters)
    if stream.output_topic:
        _publish_results(stream, examples, live.get("aggregates"))
    store = online_store_table(options)
    if store is not None:
        _write_online_store(spec, store, live.get("values", {}))


def _write_files(dataset, stream, out: StreamLayout, examples, rows) -> None:
    """Examples (and, with --write_raw_features, the rows) in windowed files."""
    file_window = duration_seconds(stream.file_window)
    _ = (
        examples
        | "ExampleBytes" >> beam.Values()
        | "WriteExamples"
        >> WriteWindowedFiles(
            out.examples_dir,
            "part",
            EXAMPLES_SUFFIX,
            TFRecordGzipSink,
            file_window,
            dataset.num_shards,
        )
    )
    if dataset.write_raw_features:
        _ = (
            rows
            | "RowsToJson" >> beam.Map(row_to_json)
            | "WriteRawFeatures"
            >> WriteWindowedFiles(
                out.raw_features_dir, "part", JSON_LINES_SUFFIX, fileio.TextSink, file_window, 1
            )
        )


def _write_dead_letters(stream, out: StreamLayout, dead_letters) -> None:
    """To --dead_letter_topic when given, else to windowed files."""
    if stream.dead_letter_topic:
        _ = (
            dead_letters
            | "DeadLetterMessages" >> beam.Map(dead_letter_message)
            | "PublishDeadLetters"
            >> beam.io.WriteToPubSub(stream.dead_letter_topic, with_attributes=True)
        )
        return
    _ = (
        dead_letters
        | "DeadLetterToJson" >> beam.Map(dead_letter_to_json)
        | "WriteDeadLetters"
        >> WriteWindowedFiles(
            out.dead_letter_dir,
            "dead_letter",
            DEAD_LETTER_SUFFIX,
            fileio.TextSink,
            duration_seconds(stream.file_window),
            1,
        )
    )


def _publish_results(stream, examples, aggregates) -> None:
    """Examples and final aggregate values to --output_topic."""
    results = [
        examples
        | "ExampleMessages" >> beam.Map(example_message)
        | "ExamplesToGlobalWindow" >> beam.WindowInto(window.GlobalWindows())
    ]
    if aggregates is not None:
        results.append(
            aggregates
            | "AggregateMessages" >> beam.Map(aggregate_message)
            | "AggregatesToGlobalWindow" >> beam.WindowInto(window.GlobalWindows())
        )
    _ = (
        results
        | "FlattenResults" >> beam.Flatten()
        | "PublishResults" >> beam.io.WriteToPubSub(stream.output_topic, with_attributes=True)
    )


def _write_online_store(spec: DatasetSpec, store, group_values: dict) -> None:
    """Each group's window values, (entity, (q, values)) as their trailing window
    closes, to the online store: one cell per aggregate, stamped qP."""
    from transforms.online_store import WriteGroupValues

    for group in group_aggregates(spec):
        _ = group_values[group.label] | f"WriteOnlineStore[{group.label}]" >> WriteGroupValues(
            group, store
        )


def check_transform_dir(transform_dir: str, spec: DatasetSpec) -> dict:
    """The batch run's manifest; refuses a directory that is not a complete run of
    this very spec (another spec would mean training/serving skew)."""
    manifest_path = RunLayout(transform_dir).manifest_path
    if not manifest_io.list_files(manifest_path):
        raise OptionsError(
            f"--transform_dir {transform_dir} has no {MANIFEST_NAME}: it is not "
            "a complete pipeline.preprocess output"
        )
    manifest = manifest_io.read_json(manifest_path)
    if manifest.get("spec_hash") != spec.spec_hash:
        raise OptionsError(
            f"--transform_dir {transform_dir} was produced from another spec (hash "
            f"{str(manifest.get('spec_hash'))[:12]}, --spec has {spec.spec_hash[:12]}); "
            "stream with the spec of the batch run"
        )
    return manifest


def prepare(argv: Sequence[str]) -> tuple[PipelineOptions, DatasetSpec, dict]:
    """Parses and checks everything that can be checked before running.

    Raises SpecError or OptionsError (exit code 2).
    """
    unknown = unknown_flags(argv)
    if unknown:
        raise OptionsError(f"unknown flag(s): {', '.join(unknown)} (see --help)")
    options = PipelineOptions(list(argv))
    # This entry point is streaming only, with or without --streaming.
    options.view_as(StandardOptions).streaming = True
    problems = validate_stream_options(options)
    if problems:
        raise OptionsError("; ".join(problems))
    spec = load_spec(options.view_as(DatasetOptions).spec)
    if online_store_table(options) is not None and not spec.aggregates:
        raise OptionsError(
            f"--bigtable_table names an online store, but spec '{spec.name}' has no "
            "aggregates to write there"
        )
    manifest = check_transform_dir(options.view_as(StreamOptions).transform_dir, spec)
    return options, spec, manifest


def write_start_record(options: PipelineOptions, spec: DatasetSpec, manifest: dict) -> None:
    out = StreamLayout(options.view_as(DatasetOptions).output_dir)
    manifest_io.write_json(
        out.start_record_path,
        {
            "dataset": spec.name,
            "spec_hash": spec.spec_hash,
            "transform_dir": options.view_as(StreamOptions).transform_dir,
            "transform_fn_fingerprint": manifest.get("transform_fn_fingerprint"),
            "flags": options.get_all_options(drop_default=True),
            "package_versions": manifest_io.package_versions(),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )


def wait_until_stopped(result, stop_state: StopState) -> int:
    """Waits for a local run to end, or for SIGINT/SIGTERM, which cancel it: the
    normal end of a local streaming run (exit code 0)."""
    try:
        lifecycle.wait_for(result.wait_until_finish, stop_state)
    except (StopRequested, KeyboardInterrupt) as stop:
        logging.info("%s; cancelling the pipeline", stop or "interrupted")
    else:
        return EXIT_OK
    # The DirectRunner's cancel() waits for its worker thread, which may sit in a
    # Pub/Sub pull; closed windows are already written, so the process does
    # not wait for it long.
    cancelling = threading.Thread(target=result.cancel, name="cancel", daemon=True)
    cancelling.start()
    cancelling.join(CANCEL_GRACE_SECONDS)
    print("stopped; windows that had closed are written, open windows are not")
    return EXIT_OK


def run(argv: Sequence[str] | None = None) -> int:
    """Runs the streaming job; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if lifecycle.answered_help_or_started(
        argv, "python -m pipeline.stream", __doc__, STREAM_OPTION_CLASSES
    ):
        return EXIT_OK
    try:
        options, spec, manifest = prepare(argv)
    except (SpecError, OptionsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    runner = pin_local_runner(options)
    if dry_run_requested(options):
        pipeline = beam.Pipeline(options=options)
        build_pipeline(pipeline, options, spec)
        print(f"dry run: wrote the Dataflow job to {write_job_file(pipeline.run(), options)}")
        return EXIT_OK

    def stream(stop_state: StopState) -> int:
        write_start_record(options, spec, manifest)
        # Before the first window closes and writes.
        create_online_store_if_missing(options, spec)
        with run_log(run_log_path(options.view_as(DatasetOptions).output_dir, new_run_id())):
            pipeline = beam.Pipeline(options=options)
            build_pipeline(pipeline, options, spec)
            if runner != LOCAL_STREAMING_RUNNER:
                result = pipeline.run()
                print(f"submitted the streaming job to {runner}; state {result.state}")
                return EXIT_OK
            disabled = options.view_as(WorkaroundOptions).disable_workaround
            with workarounds.local_streaming_run(disabled):
                return wait_until_stopped(pipeline.run(), stop_state)

    return lifecycle.supervise(
        stream, on_abort=lambda keep_outputs: None, aborted="windows still open are not written"
    )


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
