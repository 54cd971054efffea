"""Batch preprocessing: CSV -> validated rows -> split -> tf.Transform -> TFRecords.

    python -m pipeline.preprocess --spec schemas/taxi.yaml --input 'data/*.csv' \\
        --output_dir out/ [--write_raw_features] [Beam options]

Writes OUTPUT/<split>/*.tfrecord.gz (transformed tf.train.Examples with the
record key), OUTPUT/transform_fn/ and OUTPUT/transformed_metadata/ (loadable
with tft.TFTransformOutput), the raw metadata in OUTPUT/metadata/,
OUTPUT/dead_letter/*.jsonl and, last, OUTPUT/manifest.json. Everything is
written under OUTPUT/_staging/<run id>/ first and committed only when the run
succeeds (pipeline/commit.py), so a failed, stopped or killed run leaves nothing
that looks complete. Exit codes: 0 success, 2 bad flags, spec or input paths, 1
a failed run, 130 stopped by SIGINT or SIGTERM.
"""

from __future__ import annotations

import contextlib
import dataclasses
import faulthandler
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (
    DirectOptions,
    GoogleCloudOptions,
    PipelineOptions,
    StandardOptions,
)

from pipeline import children, commit, local_determinism, local_shutdown, warm_workers
from pipeline import manifest as manifest_io
from pipeline.dataflow import dry_run_requested, write_job_file
from pipeline.logs import configure_console, console_stream, run_log, run_log_path
from pipeline.options import (
    BATCH_OPTION_CLASSES,
    LOCAL_BATCH_RUNNER,
    DatasetOptions,
    OptionsError,
    PreprocessOptions,
    console_level,
    help_requested,
    help_text,
    pin_local_runner,
    unknown_flags,
    validate_options,
)
from pipeline.process_exit import exit_now
from schemas.spec import DatasetSpec, SpecError, load_spec
from transforms.aggregates import JoinAggregates
from transforms.bigquery_source import BigQuerySource, BigQuerySourceError, ValidateRecords
from transforms.csv_source import CsvLayout, InputError, ReadCsvLineBatches, discover_layouts
from transforms.split import SplitByKey
from transforms.statistics import ComputeStatistics, spec_statistics_columns
from transforms.tfrecords import WriteTFRecordBatches
from transforms.validation import ParseLineBatches, dead_letter_to_json, rows_schema

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# tf.Transform analyzes this split; raw statistics describe it too.
ANALYZE_SPLIT = "train"
# As a shell reports a process stopped by SIGINT; SIGTERM gives the same code.
EXIT_INTERRUPTED = 130
COUNTS_DIR = "_counts"
STATS_DIR = "stats"


class RunFailed(RuntimeError):
    """The pipeline ran but its result must not be used (exit code 1)."""


@dataclasses.dataclass(frozen=True)
class OutputLayout:
    """Where a run writes each output under its output directory (or under its
    staging directory, see pipeline/commit.py)."""

    root: str
    run_id: str = ""

    def split_prefix(self, split: str) -> str:
        return manifest_io.join(self.root, split, "part")

    def raw_features_prefix(self, split: str) -> str:
        return manifest_io.join(self.root, "raw_features", split, "part")

    @property
    def dead_letter_prefix(self) -> str:
        return manifest_io.join(self.root, "dead_letter", "dead_letter")

    @property
    def raw_statistics_path(self) -> str:
        return manifest_io.join(self.root, STATS_DIR, "raw_train.json")

    def transformed_statistics_path(self, split: str) -> str:
        return manifest_io.join(self.root, STATS_DIR, f"transformed_{split}.json")

    @property
    def counts_path(self) -> str:
        return manifest_io.join(self.root, COUNTS_DIR, "counts.json")

    @property
    def manifest_path(self) -> str:
        return manifest_io.join(self.root, manifest_io.MANIFEST_NAME)

    def temp_dir(self, temp_location: str | None) -> str:
        # tf.Transform's temp files must be visible to every worker, so they live
        # under the output or --temp_location, never in a process-local mkdtemp().
        if temp_location:
            return manifest_io.join(temp_location, "tft_tmp", self.run_id or "run")
        return manifest_io.join(self.root, "tft_tmp")


def build_pipeline(
    p: beam.Pipeline,
    options: PipelineOptions,
    spec: DatasetSpec,
    layouts: dict[str, CsvLayout],
    lines: beam.PCollection | None = None,
    records: beam.PCollection | None = None,
    out: OutputLayout | None = None,
) -> None:
    """Wires the whole batch job into `p`.

    `lines`, when given, replaces reading the input files: a PCollection of
    (source path, line bytes) whose sources are keys of `layouts` (tests use
    beam.Create here). `records` likewise replaces reading BigQuery: a
    PCollection of row dicts. `out` is where outputs go, by default straight
    into --output_dir; `run` passes its staging directory.
    """
    import tensorflow_transform.beam as tft_beam

    from transforms.analyze import (
        PASSTHROUGH_KEY,
        TRANSFORM_FN,
        AnalyzeAndTransform,
        transformed_batches_key,
    )

    preprocess = options.view_as(PreprocessOptions)
    out = out or OutputLayout(options.view_as(DatasetOptions).output_dir)
    temp_location = options.view_as(GoogleCloudOptions).temp_location

    bigquery = BigQuerySource.from_flags(preprocess.input, preprocess.query)
    if bigquery is not None or records is not None:
        if records is None:
            records = p | "ReadBigQuery" >> bigquery.read_transform()
        source_name = bigquery.name if bigquery else "records"
        parsed = records | "ValidateRows" >> ValidateRecords(
            spec, source_name, preprocess.parse_batch_size
        )
    else:
        if lines is None:
            files = [(layout.path, layout.size_bytes) for layout in layouts.values()]
            line_batches = p | "ReadCsv" >> ReadCsvLineBatches(
                files,
                batch_lines=preprocess.parse_batch_size,
                quoted_newlines=spec.csv.allow_quoted_newlines,
            )
        else:
            # A fixed size, so that a rerun cuts the same batches (see
            # transforms.bigquery_source).
            line_batches = lines | "BatchLines" >> beam.BatchElements(
                min_batch_size=preprocess.parse_batch_size,
                max_batch_size=preprocess.parse_batch_size,
            )
        parsed = line_batches | "ValidateRows" >> ParseLineBatches(spec, layouts)
    tft_temp_dir = out.temp_dir(temp_location)
    if dry_run_requested(options):
        # tf.Transform creates its temp dir while the graph is built; a dry run
        # may have no access to --temp_location, and its graph never runs.
        tft_temp_dir = tempfile.mkdtemp(prefix="dry_run_tft_")
    rows = parsed.valid | "JoinAggregates" >> JoinAggregates(
        spec, FileSystems.join(tft_temp_dir, "aggregate_spill")
    )
    splits = rows | "SplitRows" >> SplitByKey(spec)
    transformed = splits | "AnalyzeAndTransform" >> AnalyzeAndTransform(
        spec, tft_temp_dir, ANALYZE_SPLIT
    )
    transform_fn = transformed.pop(TRANSFORM_FN)

    raw_columns, transformed_columns = spec_statistics_columns(spec)
    _ = (
        splits[ANALYZE_SPLIT]
        | "RawStatistics" >> ComputeStatistics(raw_columns, row_id_columns=[spec.key_column])
        | "WriteRawStatistics" >> _WriteJson(out.raw_statistics_path)
    )
    for split in spec.split_names:
        _ = (
            transformed.pop(transformed_batches_key(split))
            | f"TransformedStatistics[{split}]"
            >> ComputeStatistics(transformed_columns, row_id_columns=[PASSTHROUGH_KEY])
            | f"WriteTransformedStatistics[{split}]"
            >> _WriteJson(out.transformed_statistics_path(split))
        )

    for split, serialized in transformed.items():
        _ = serialized | f"WriteExamples[{split}]" >> WriteTFRecordBatches(
            out.split_prefix(split),
            file_name_suffix=".tfrecord.gz",
            num_shards=options.view_as(DatasetOptions).num_shards,
        )
    _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(out.root)

    _ = (
        parsed.dead_letter
        | "DeadLetterToJson" >> beam.Map(dead_letter_to_json)
        | "WriteDeadLetters"
        >> beam.io.WriteToText(out.dead_letter_prefix, file_name_suffix=".jsonl")
    )

    if options.view_as(DatasetOptions).write_raw_features:
        import pyarrow as pa

        schema = rows_schema(spec)
        for split, batches in splits.items():
            _ = (
                batches
                | f"RawToTable[{split}]" >> beam.Map(lambda batch: pa.Table.from_batches([batch]))
                | f"WriteRawFeatures[{split}]"
                >> beam.io.WriteToParquetBatched(
                    out.raw_features_prefix(split), schema, file_name_suffix=".parquet"
                )
            )

    split_counts = [
        batches
        | f"CountRows[{split}]" >> beam.Map(lambda batch, name=split: (name, batch.num_rows))
        for split, batches in splits.items()
    ]
    dead_letter_counts = parsed.dead_letter | "CountDeadLetters" >> beam.Map(
        lambda _: ("dead_letter", 1)
    )
    _ = (
        [parsed.counts, dead_letter_counts, *split_counts]
        | "FlattenCounts" >> beam.Flatten()
        | "SumCounts" >> beam.CombinePerKey(sum)
        | "CountsToDict" >> beam.combiners.ToDict()
        | "WriteCounts" >> _WriteJson(out.counts_path)
    )


def _write_json_file(document: dict, path: str) -> None:
    manifest_io.write_json(path, document)


class _WriteJson(beam.PTransform):
    """A PCollection of exactly one JSON-serializable dict -> one file at `path`.

    The file is written where the dict is made, not through a file sink: a sink
    adds three stages of its own (set-up, write, finalize), each a round trip
    through the runner, for a file this small. A retried bundle rewrites the
    same bytes, and the run's staging directory keeps a half-written file out of
    sight until the commit.
    """

    def __init__(self, path: str):
        super().__init__()
        self._path = path

    def expand(self, documents):
        return documents | "WriteFile" >> beam.Map(_write_json_file, self._path)


def reconcile_counts(raw_counts: dict, split_names: Sequence[str]) -> dict:
    """Manifest counts from the pipeline's count records; raises RunFailed if they
    do not reconcile (every line read is a header, a dead letter or in a split)."""
    lines = raw_counts.get("lines", 0)
    header_lines = raw_counts.get("header_lines", 0)
    counts = {
        "read": lines - header_lines,
        "header_lines": header_lines,
        "dead_letter": raw_counts.get("dead_letter", 0),
    }
    for split in split_names:
        counts[split] = raw_counts.get(split, 0)
    counts["valid"] = sum(counts[split] for split in split_names)
    if counts["read"] != counts["dead_letter"] + counts["valid"]:
        raise RunFailed(
            f"counts do not reconcile: read {counts['read']} != dead_letter "
            f"{counts['dead_letter']} + splits {counts['valid']}"
        )
    return counts


def remove_scratch(out: OutputLayout, temp_location: str | None) -> None:
    """Deletes the run's counts file and tf.Transform temp files once they are used."""
    scratch = [manifest_io.join(out.root, COUNTS_DIR), out.temp_dir(temp_location)]
    FileSystems.delete([path for path in scratch if FileSystems.exists(path)])


def prepare(argv: Sequence[str]) -> tuple[PipelineOptions, DatasetSpec, dict[str, CsvLayout]]:
    """Parses and checks everything that can be checked before running.

    Raises SpecError, OptionsError or InputError (all exit code 2).
    """
    unknown = unknown_flags(argv)
    if unknown:
        raise OptionsError(f"unknown flag(s): {', '.join(unknown)} (see --help)")
    options = PipelineOptions(list(argv))
    preprocess = options.view_as(PreprocessOptions)
    problems = validate_options(options)
    if problems:
        raise OptionsError("; ".join(problems))
    dataset = options.view_as(DatasetOptions)
    spec = load_spec(dataset.spec)
    if spec.preprocessing_fn:
        from transforms.preprocessing import load_custom_preprocessing_fn

        try:
            load_custom_preprocessing_fn(spec.preprocessing_fn)
        except (ImportError, AttributeError) as error:
            raise SpecError(dataset.spec, [f"preprocessing_fn: {error}"]) from None
    try:
        bigquery = BigQuerySource.from_flags(preprocess.input, preprocess.query)
    except BigQuerySourceError as error:
        raise OptionsError(str(error)) from None
    # BigQuery rows are typed and named; only CSV files have layouts to discover.
    layouts = {} if bigquery else discover_layouts(preprocess.input, spec)
    baseline = preprocess.baseline_output_dir
    if baseline and not manifest_io.list_files(OutputLayout(baseline).raw_statistics_path):
        raise OptionsError(
            f"--baseline_output_dir {baseline} holds no {STATS_DIR}/raw_train.json: not the "
            "output of a complete run that computed statistics"
        )
    if not dry_run_requested(options):
        # A dry run writes nothing there (and may have no access to it).
        problem = commit.refusal(dataset.output_dir, preprocess.overwrite)
        if problem:
            raise OptionsError(problem)
    return options, spec, layouts


def _local_runner_adjustments(runner: str) -> contextlib.AbstractContextManager:
    """Around build_pipeline: on the local batch runner, makes reruns bit-identical
    (see pipeline.local_determinism) and its workers stop together
    (pipeline.local_shutdown); elsewhere does nothing."""
    if runner != LOCAL_BATCH_RUNNER:
        return contextlib.nullcontext()
    local_shutdown.close_workers_together()
    local_determinism.ordered_local_buffers()
    return local_determinism.without_hot_key_fanout()


def _early_workers(options: PipelineOptions) -> contextlib.AbstractContextManager:
    """Around building and running the pipeline: on the local multi-process
    runner, starts its worker processes now, so that their imports overlap the
    building of the job (see pipeline.warm_workers); elsewhere does nothing."""
    direct = options.view_as(DirectOptions)
    if (
        options.view_as(StandardOptions).runner != LOCAL_BATCH_RUNNER
        or direct.direct_running_mode != "multi_processing"
    ):
        return contextlib.nullcontext()
    return warm_workers.started(direct.direct_num_workers)


def run(argv: Sequence[str] | None = None) -> int:
    """Runs the batch job; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if help_requested(argv):
        print(help_text("python -m pipeline.preprocess", __doc__, BATCH_OPTION_CLASSES))
        return EXIT_OK
    configure_console(console_level(argv))
    if threading.current_thread() is threading.main_thread():
        # `kill -USR1 <pid>` prints every thread's stack: how to see where a run hangs.
        # The console, which a run log leaves on the terminal (fd 2 is the log then).
        with contextlib.suppress(AttributeError, ValueError, OSError):
            faulthandler.register(signal.SIGUSR1, file=console_stream(), all_threads=True)
    started = time.time()
    try:
        options, spec, layouts = prepare(argv)
    except (SpecError, OptionsError, InputError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE

    runner = pin_local_runner(options, argv)
    preprocess = options.view_as(PreprocessOptions)
    root = options.view_as(DatasetOptions).output_dir
    if dry_run_requested(options):
        pipeline = beam.Pipeline(options=options)
        build_pipeline(pipeline, options, spec, layouts)
        print(f"dry run: wrote the Dataflow job to {write_job_file(pipeline.run(), options)}")
        return EXIT_OK
    run_id = commit.new_run_id(started)
    out = OutputLayout(commit.staging_dir(root, run_id), run_id)
    temp_location = options.view_as(GoogleCloudOptions).temp_location
    keep_staging = False
    watch = None
    try:
        with stop_signals_raise() as stop_state, run_log(run_log_path(root, run_id)):
            watch = children.WorkerWatch(stop_state.worker_lost)
            logging.info(
                "phase: running the pipeline on %s%s", runner, _local_workers_note(options)
            )
            with (
                _early_workers(options),
                watch,
                beam.Pipeline(options=options) as p,
                _local_runner_adjustments(runner),
            ):
                build_pipeline(p, options, spec, layouts, out=out)
            stop_state.check()
            logging.info("phase: reconciling counts and committing the outputs")
            counts = reconcile_counts(manifest_io.read_json(out.counts_path), spec.split_names)
            remove_scratch(out, temp_location)
            bad_fraction = counts["dead_letter"] / counts["read"] if counts["read"] else 0.0
            if bad_fraction > preprocess.max_bad_fraction:
                keep_staging = True
                raise RunFailed(
                    f"{counts['dead_letter']} of {counts['read']} rows ({bad_fraction:.2%}) "
                    f"are dead letters, above --max_bad_fraction "
                    f"{preprocess.max_bad_fraction:.2%}; nothing was committed; see "
                    f"{out.dead_letter_prefix}*.jsonl for the reasons"
                )
            write_raw_metadata(out, spec)
            stop_state.check()
            anomalies = find_run_anomalies(out, spec, preprocess.baseline_output_dir)
            if anomalies and preprocess.fail_on_anomalies:
                keep_staging = True
                listed = "\n".join(f"  - {anomaly['message']}" for anomaly in anomalies)
                raise RunFailed(
                    f"{len(anomalies)} anomalies and --fail_on_anomalies; nothing was "
                    f"committed; the run's outputs are in {out.root}:\n{listed}"
                )
            stop_state.check()
            commit.commit(out.root, root)
            bigquery = BigQuerySource.from_flags(preprocess.input, preprocess.query)
            manifest = write_manifest(
                OutputLayout(root, run_id),
                spec,
                layouts,
                counts,
                runner,
                started,
                bigquery,
                anomalies,
            )
            commit.clear_staging_area(root)
        report_path = write_report(root)
    except WorkerLost as error:
        _discard_run(out, temp_location, keep_staging=False)
        print(f"error: run failed: {error}; nothing was committed", file=sys.stderr)
        return EXIT_FAILED
    except RunFailed as error:
        _discard_run(out, temp_location, keep_staging)
        print(f"error: run failed: {error}", file=sys.stderr)
        return EXIT_FAILED
    except (KeyboardInterrupt, StopRequested) as stop:
        _discard_run(out, temp_location, keep_staging=False)
        print(f"error: {stop or 'interrupted'}: stopped; nothing was committed", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:
        stop = _stop_in_chain(error)
        lost = watch.lost if watch is not None else None
        if isinstance(stop, WorkerLost) or lost:
            # The runner may notice first, with a message that names no process.
            logging.error("pipeline failed: %s: %s", type(error).__name__, error)
            _discard_run(out, temp_location, keep_staging=False)
            print(f"error: run failed: {lost or stop}; nothing was committed", file=sys.stderr)
            return EXIT_FAILED
        if stop is not None:
            # Beam wraps an exception raised while it builds the graph.
            _discard_run(out, temp_location, keep_staging=False)
            print(
                f"error: {stop or 'interrupted'}: stopped; nothing was committed", file=sys.stderr
            )
            return EXIT_INTERRUPTED
        logging.exception("pipeline failed")
        _discard_run(out, temp_location, keep_staging=False)
        print(
            f"error: run failed: {type(error).__name__}: {error}\nnothing was committed to {root}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    print_summary(manifest, report_path)
    return EXIT_OK


class StopRequested(Exception):
    """SIGINT or SIGTERM arrived (raised in the main thread by the handler)."""


class WorkerLost(RunFailed):
    """A worker process of the local runner ended abnormally (raised in the main
    thread, so that the run stops with a message that names the worker)."""


@dataclasses.dataclass
class StopState:
    """Which stop signal arrived, or which worker process was lost, if any."""

    signal_name: str | None = None
    lost_worker: str | None = None
    # Whether the stop handler is installed (only in the main thread).
    handling_signals: bool = False

    def worker_lost(self, message: str) -> None:
        """Called from a watching thread: interrupts the main thread, whose
        handler then raises WorkerLost. Without the handler (a run started off the
        main thread) SIGTERM would kill the process, so it only records."""
        if self.lost_worker is None:
            self.lost_worker = message
            if self.handling_signals:
                os.kill(os.getpid(), signal.SIGTERM)

    def check(self) -> None:
        """Raises WorkerLost or StopRequested if a worker was lost or a stop signal
        arrived, even if the exception the handler raised was swallowed on its way
        up (some of the runner's threads catch everything)."""
        if self.lost_worker:
            raise WorkerLost(self.lost_worker)
        if self.signal_name:
            raise StopRequested(f"received {self.signal_name}")


@contextlib.contextmanager
def stop_signals_raise():
    """Turns SIGINT and SIGTERM into StopRequested while the block runs, so that
    a stopped run unwinds through the same clean-up as a failed one. Yields a
    StopState to check before committing."""
    state = StopState()

    def on_stop(signum, frame):
        if state.lost_worker:
            raise WorkerLost(state.lost_worker)
        state.signal_name = signal.Signals(signum).name
        raise StopRequested(f"received {state.signal_name}")

    if threading.current_thread() is not threading.main_thread():
        yield state
        return
    previous = {sig: signal.signal(sig, on_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    state.handling_signals = True
    try:
        yield state
    finally:
        state.handling_signals = False
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop_in_chain(error: BaseException) -> BaseException | None:
    """The KeyboardInterrupt, StopRequested or WorkerLost that `error` wraps, if any."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KeyboardInterrupt | StopRequested | WorkerLost):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _discard_run(out: OutputLayout, temp_location: str | None, keep_staging: bool) -> None:
    """Stops the run's worker processes, then removes what the run wrote (best
    effort: a failure here must not hide the run's own error)."""
    stopped = children.stop_descendants()
    if stopped:
        logging.info("stopped %d worker process(es) of the run", len(stopped))
    try:
        if temp_location:
            commit.discard(out.temp_dir(temp_location))
        if not keep_staging:
            commit.discard(out.root)
    except Exception:
        logging.exception("could not remove the staging directory %s", out.root)


def _local_workers_note(options: PipelineOptions) -> str:
    direct = options.view_as(DirectOptions)
    if options.view_as(StandardOptions).runner != LOCAL_BATCH_RUNNER:
        return ""
    return f" with {direct.direct_num_workers} worker process(es), {direct.direct_running_mode}"


def write_raw_metadata(out: OutputLayout, spec: DatasetSpec) -> None:
    """OUTPUT/metadata/, where TFTransformOutput.raw_metadata looks for it."""
    import tensorflow_transform as tft
    from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io

    from transforms.preprocessing import raw_feature_spec

    metadata_io.write_metadata(
        dataset_metadata.DatasetMetadata.from_feature_spec(raw_feature_spec(spec)),
        manifest_io.join(out.root, tft.TFTransformOutput.RAW_METADATA_DIR),
    )


def find_run_anomalies(out: OutputLayout, spec: DatasetSpec, baseline_dir: str | None) -> list:
    """Checks the run's statistics (pipeline/anomalies.py), against the
    statistics of `baseline_dir` for drift when it is given."""
    import tensorflow_transform as tft

    from pipeline.anomalies import AnomalyThresholds, find_anomalies

    raw = manifest_io.read_json(out.raw_statistics_path)
    transformed = {
        split: manifest_io.read_json(out.transformed_statistics_path(split))
        for split in spec.split_names
    }
    tft_output = tft.TFTransformOutput(out.root)
    vocabularies = {
        feature.name: tft_output.vocabulary_size_by_name(feature.name)
        for feature in spec.features
        if any(step.type == "vocabulary" for step in feature.transform)
    }
    scaled = [f.name for f in spec.features if f.transform[-1].type == "scale_to_0_1"]
    baseline = None
    if baseline_dir:
        previous = OutputLayout(baseline_dir)
        baseline = {"raw": manifest_io.read_json(previous.raw_statistics_path)}
    return find_anomalies(
        raw, transformed, vocabularies, AnomalyThresholds.from_spec(spec), scaled, baseline
    )


def write_report(root: str) -> str | None:
    """OUTPUT/report.html; a failure to draw it is logged, not fatal: the run's
    outputs are committed and complete by then."""
    from pipeline.report import render_report

    try:
        return render_report(root)
    except Exception:
        logging.exception("could not write the run report; rebuild it with pipeline.report")
        return None


def write_manifest(
    out: OutputLayout,
    spec: DatasetSpec,
    layouts: dict[str, CsvLayout],
    counts: dict,
    runner: str,
    started: float,
    bigquery: BigQuerySource | None = None,
    anomalies: list | None = None,
) -> dict:
    """Writes manifest.json, the last file of a run; returns the manifest."""
    wall_seconds = time.time() - started
    bigquery_inputs = (
        [{"bigquery": bigquery.name, "query": bigquery.query}] if bigquery is not None else []
    )
    splits = {
        split: {
            "count": counts[split],
            "percentage": spec.split.percentages[split],
            "shards": manifest_io.list_files(out.split_prefix(split) + "*"),
        }
        for split in spec.split_names
    }
    feature_kinds = spec.feature_kinds()
    document = {
        "manifest_version": manifest_io.MANIFEST_VERSION,
        "run_id": out.run_id,
        "dataset": spec.name,
        "spec_hash": spec.spec_hash,
        "inputs": [
            {
                "path": layout.path,
                "size_bytes": layout.size_bytes,
                "has_header": layout.header is not None,
                "fingerprint": manifest_io.file_fingerprint(layout.path),
            }
            for layout in layouts.values()
        ]
        or bigquery_inputs,
        "key_column": spec.key_column,
        "timestamp_column": spec.timestamp_column,
        "aggregates": [
            {
                "name": aggregate.name,
                "key": list(aggregate.key),
                "value": aggregate.value,
                "agg": aggregate.agg.value,
                "window_seconds": aggregate.window_seconds,
                "period_seconds": aggregate.period_seconds,
                "default": aggregate.default,
            }
            for aggregate in spec.aggregates
        ],
        "label": spec.label,
        "label_kind": spec.label_kind,
        "counts": counts,
        "splits": splits,
        "dead_letter_files": manifest_io.list_files(out.dead_letter_prefix + "*"),
        "raw_features_files": manifest_io.list_files(
            manifest_io.join(out.root, "raw_features", "*", "*")
        ),
        "features": {
            name: _feature_entry(spec, name, kind, cardinality, out)
            for name, (kind, cardinality) in feature_kinds.items()
        },
        "statistics": {
            "raw": f"{STATS_DIR}/raw_train.json",
            "transformed": {
                split: f"{STATS_DIR}/transformed_{split}.json" for split in spec.split_names
            },
        },
        "anomalies": anomalies or [],
        "transform_fn_dir": manifest_io.join(out.root, "transform_fn"),
        "transform_fn_fingerprint": manifest_io.directory_fingerprint(
            manifest_io.join(out.root, "transform_fn")
        ),
        "package_versions": manifest_io.package_versions(),
        "runner": runner,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "wall_seconds": round(wall_seconds, 3),
        "rows_per_second": round(counts["read"] / wall_seconds, 1) if wall_seconds else None,
    }
    manifest_io.write_json(out.manifest_path, document)
    return document


def _feature_entry(spec: DatasetSpec, name: str, kind, cardinality, out: OutputLayout) -> dict:
    feature = next(f for f in spec.features if f.name == name)
    entry = {"kind": kind.value, "cardinality": cardinality, "sources": feature.input_names}
    if any(step.type == "vocabulary" for step in feature.transform):
        import tensorflow_transform as tft

        entry["vocabulary_size"] = tft.TFTransformOutput(out.root).vocabulary_size_by_name(name)
    return entry


def print_summary(manifest: dict, report_path: str | None = None) -> None:
    counts = manifest["counts"]
    splits = ", ".join(f"{name} {info['count']}" for name, info in manifest["splits"].items())
    shards = sum(len(info["shards"]) for info in manifest["splits"].values())
    print(
        f"read {counts['read']} rows: {counts['valid']} valid ({splits}), "
        f"{counts['dead_letter']} dead letters\n"
        f"{manifest['wall_seconds']:.1f} s, {manifest['rows_per_second']:.0f} rows/s on "
        f"{manifest['runner']}\n"
        f"outputs: {shards} TFRecord shards, transform_fn and manifest under "
        f"{manifest['transform_fn_dir'].rsplit('/', 1)[0]}"
    )
    anomalies = manifest.get("anomalies") or []
    print(f"anomalies: {len(anomalies)}" + "".join(f"\n  - {a['message']}" for a in anomalies))
    if report_path:
        print(f"report: {report_path}")


def main() -> None:
    # The run is over and its outputs committed (or discarded): skip the
    # interpreter's slow teardown of TensorFlow.
    exit_now(run())


if __name__ == "__main__":
    main()
