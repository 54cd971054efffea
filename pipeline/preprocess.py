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
import logging
import sys
import tempfile
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

from pipeline import commit, lifecycle, workarounds
from pipeline import manifest as manifest_io
from pipeline.dataflow import dry_run_requested, write_job_file
from pipeline.finalize import finalize_run, print_summary
from pipeline.layout import (
    ANALYZE_SPLIT,
    DEAD_LETTER_SUFFIX,
    EXAMPLES_SUFFIX,
    PARQUET_SUFFIX,
    RunLayout,
    raw_statistics_relpath,
)
from pipeline.lifecycle import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, StopState
from pipeline.logs import run_log, run_log_path
from pipeline.options import (
    BATCH_OPTION_CLASSES,
    LOCAL_BATCH_RUNNER,
    DatasetOptions,
    OptionsError,
    PreprocessOptions,
    WorkaroundOptions,
    help_requested,
    pin_local_runner,
    unknown_flags,
    validate_options,
)
from pipeline.workarounds import quick_exit
from pipeline.workarounds.quick_exit import exit_now
from schemas.spec import DatasetSpec, SpecError, load_spec
from transforms.aggregates import JoinAggregates
from transforms.bigquery_source import BigQueryRows, BigQuerySource, BigQuerySourceError
from transforms.csv_source import (
    CsvLayout,
    CsvLines,
    InputError,
    ReadCsvLineBatches,
    discover_layouts,
)
from transforms.record_keys import (
    FindDuplicateKeys,
    NumberIdenticalRecords,
    duplicate_keys_path,
)
from transforms.split import SplitByKey
from transforms.statistics import ComputeStatistics, spec_statistics_columns
from transforms.tfrecords import WriteTFRecordBatches
from transforms.validation import FixedSizeBatches, ValidateInput, dead_letter_to_json, rows_schema

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "build_pipeline",
    "read_and_validate",
    "run",
]


def build_pipeline(
    p: beam.Pipeline,
    options: PipelineOptions,
    spec: DatasetSpec,
    layouts: dict[str, CsvLayout],
    lines: beam.PCollection | None = None,
    records: beam.PCollection | None = None,
    out: RunLayout | None = None,
) -> None:
    """Wires the whole batch job into `p`.

    `lines`, when given, replaces reading the input files: a PCollection of
    (source path, line bytes[, byte offset: needed by a spec without
    key_column]) whose sources are keys of `layouts` (tests use
    beam.Create here). `records` likewise replaces reading BigQuery: a
    PCollection of row dicts. `out` is where outputs go, by default straight
    into --output_dir; `run` passes its staging directory.
    """
    from transforms.analyze import AnalyzeAndTransform

    out = out or RunLayout(options.view_as(DatasetOptions).output_dir)
    tft_temp_dir = out.temp_dir(options.view_as(GoogleCloudOptions).temp_location)
    if dry_run_requested(options):
        # tf.Transform creates its temp dir while the graph is built; a dry run
        # may have no access to --temp_location, and its graph never runs.
        tft_temp_dir = tempfile.mkdtemp(prefix="dry_run_tft_")

    adapter = _adapter_of(options, spec, layouts, records)
    preprocess = options.view_as(PreprocessOptions)
    parsed = read_and_validate(
        p,
        spec,
        adapter,
        BigQuerySource.from_flags(preprocess.input, preprocess.query),
        preprocess.parse_batch_size,
        lines,
        records,
    )
    valid = parsed.valid
    if spec.derives_record_key and isinstance(adapter, BigQueryRows):
        # A table's rows have no file offset: identical rows share a content hash.
        valid = valid | "NumberIdenticalRecords" >> NumberIdenticalRecords(
            spec.record_key, FileSystems.join(tft_temp_dir, "content_key_spill")
        )
    rows = valid | "JoinAggregates" >> JoinAggregates(
        spec, FileSystems.join(tft_temp_dir, "aggregate_spill")
    )
    splits = rows | "SplitRows" >> SplitByKey(spec)
    transformed = splits | "AnalyzeAndTransform" >> AnalyzeAndTransform(
        spec, tft_temp_dir, ANALYZE_SPLIT
    )
    # Rows whose label class train never saw are dead letters too.
    dead_letters = (parsed.dead_letter, transformed.dead_letter) | "FlattenDeadLetters" >> (
        beam.Flatten()
    )
    _write_statistics(spec, splits, transformed, out)
    _write_outputs(options, spec, dead_letters, splits, transformed, out)
    _write_counts(parsed, dead_letters, transformed, out)
    if not spec.derives_record_key:
        # A declared key is checked, not trusted: pipeline.finalize reports duplicates.
        _ = (
            parsed.valid
            | "FindDuplicateKeys"
            >> FindDuplicateKeys(spec.record_key, FileSystems.join(tft_temp_dir, "key_spill"))
            | "WriteDuplicateKeys" >> _WriteJson(duplicate_keys_path(out))
        )


def read_and_validate(
    p: beam.Pipeline,
    spec: DatasetSpec,
    adapter,
    bigquery: BigQuerySource | None,
    batch_size: int,
    lines: beam.PCollection | None = None,
    records: beam.PCollection | None = None,
):
    """The input, from CSV files (`adapter`'s layouts) or `bigquery` (or the
    test's PCollection), as the outputs of ValidateInput: valid batches, dead
    letters and counts. pipeline.materialize reads a run's inputs again with it."""
    if isinstance(adapter, BigQueryRows):
        if records is None:
            records = p | "ReadBigQuery" >> bigquery.read_transform()
        batches = records | "BatchRows" >> FixedSizeBatches(batch_size)
    else:
        if lines is None:
            files = [(layout.path, layout.size_bytes) for layout in adapter.layouts.values()]
            batches = p | "ReadCsv" >> ReadCsvLineBatches(
                files, batch_lines=batch_size, quoted_newlines=spec.csv.allow_quoted_newlines
            )
        else:
            batches = lines | "BatchLines" >> FixedSizeBatches(batch_size)
    return batches | "ValidateRows" >> ValidateInput(spec, adapter)


def _adapter_of(options, spec, layouts, records):
    """The input adapter: BigQuery rows (or the test's records), else CSV lines."""
    preprocess = options.view_as(PreprocessOptions)
    bigquery = BigQuerySource.from_flags(preprocess.input, preprocess.query)
    if bigquery is not None or records is not None:
        return BigQueryRows(spec, bigquery.name if bigquery else "records")
    return CsvLines(spec, layouts)


def _write_statistics(spec, splits, transformed, out: RunLayout) -> None:
    """Raw statistics of the analyzed split, transformed statistics of each."""
    from transforms.analyze import PASSTHROUGH_KEY

    raw_columns, transformed_columns = spec_statistics_columns(spec)
    _ = (
        splits[ANALYZE_SPLIT]
        | "RawStatistics" >> ComputeStatistics(raw_columns, row_id_columns=[spec.record_key])
        | "WriteRawStatistics" >> _WriteJson(out.raw_statistics_path)
    )
    for split in spec.split_names:
        _ = (
            transformed.transformed_batches[split]
            | f"TransformedStatistics[{split}]"
            >> ComputeStatistics(transformed_columns, row_id_columns=[PASSTHROUGH_KEY])
            | f"WriteTransformedStatistics[{split}]"
            >> _WriteJson(out.transformed_statistics_path(split))
        )


def _write_outputs(options, spec, dead_letters, splits, transformed, out: RunLayout) -> None:
    """The examples of each split, the transform graph, the dead letters and,
    with --write_raw_features, the validated raw rows."""
    import tensorflow_transform.beam as tft_beam

    dataset = options.view_as(DatasetOptions)
    for split, serialized in transformed.examples.items():
        _ = serialized | f"WriteExamples[{split}]" >> WriteTFRecordBatches(
            out.split_prefix(split), file_name_suffix=EXAMPLES_SUFFIX, num_shards=dataset.num_shards
        )
    _ = transformed.transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(out.root)
    _ = (
        dead_letters
        | "DeadLetterToJson" >> beam.Map(dead_letter_to_json)
        | "WriteDeadLetters"
        >> beam.io.WriteToText(out.dead_letter_prefix, file_name_suffix=DEAD_LETTER_SUFFIX)
    )
    if dataset.write_raw_features:
        import pyarrow as pa

        schema = rows_schema(spec)
        for split, batches in splits.items():
            _ = (
                batches
                | f"RawToTable[{split}]" >> beam.Map(lambda batch: pa.Table.from_batches([batch]))
                | f"WriteRawFeatures[{split}]"
                >> beam.io.WriteToParquetBatched(
                    out.raw_features_prefix(split), schema, file_name_suffix=PARQUET_SUFFIX
                )
            )


def _write_counts(parsed, dead_letters, transformed, out: RunLayout) -> None:
    """Records read, dead letters (of which unseen label classes) and rows per
    split, in one file that pipeline.finalize reconciles before anything is
    committed. A split's rows are counted after the transform, which may turn
    some into dead letters."""
    from transforms.analyze import UNSEEN_LABEL_CLASSES

    split_counts = [
        batches
        | f"CountRows[{split}]" >> beam.Map(lambda batch, name=split: (name, batch.num_rows))
        for split, batches in transformed.transformed_batches.items()
    ]
    dead_letter_counts = dead_letters | "CountDeadLetters" >> beam.Map(lambda _: ("dead_letter", 1))
    unseen_label_counts = transformed.dead_letter | "CountUnseenLabelClasses" >> beam.Map(
        lambda _: (UNSEEN_LABEL_CLASSES, 1)
    )
    _ = (
        [parsed.counts, dead_letter_counts, unseen_label_counts, *split_counts]
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
    if baseline and not manifest_io.list_files(RunLayout(baseline).raw_statistics_path):
        raise OptionsError(
            f"--baseline_output_dir {baseline} holds no {raw_statistics_relpath()}: not the "
            "output of a complete run that computed statistics"
        )
    if not dry_run_requested(options):
        # A dry run writes nothing there (and may have no access to it).
        problem = commit.refusal(dataset.output_dir, preprocess.overwrite)
        if problem:
            raise OptionsError(problem)
    return options, spec, layouts


def _local_workarounds(options: PipelineOptions):
    """Around building and running the pipeline: the local batch runner's
    workarounds (pipeline/workarounds/); elsewhere nothing."""
    if options.view_as(StandardOptions).runner != LOCAL_BATCH_RUNNER:
        return contextlib.nullcontext()
    direct = options.view_as(DirectOptions)
    return workarounds.local_batch_run(
        direct.direct_num_workers,
        multi_process=direct.direct_running_mode == "multi_processing",
        disabled=options.view_as(WorkaroundOptions).disable_workaround,
    )


def run(argv: Sequence[str] | None = None) -> int:
    """Runs the batch job; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if lifecycle.answered_help_or_started(
        argv, "python -m pipeline.preprocess", __doc__, BATCH_OPTION_CLASSES
    ):
        return EXIT_OK
    started = time.time()
    try:
        options, spec, layouts = prepare(argv)
    except (SpecError, OptionsError, InputError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    runner = pin_local_runner(options, argv)
    root = options.view_as(DatasetOptions).output_dir
    if dry_run_requested(options):
        pipeline = beam.Pipeline(options=options)
        build_pipeline(pipeline, options, spec, layouts)
        print(f"dry run: wrote the Dataflow job to {write_job_file(pipeline.run(), options)}")
        return EXIT_OK
    run_id = commit.new_run_id(started)
    staged = RunLayout(commit.staging_dir(root, run_id), run_id)
    temp_location = options.view_as(GoogleCloudOptions).temp_location

    def run_and_finalize(stop_state: StopState) -> int:
        # Before any worker starts: workers inherit the log as their stderr. It
        # closes before an error line is printed, so that the line reaches the console.
        with run_log(run_log_path(root, run_id)):
            logging.info(
                "phase: running the pipeline on %s%s", runner, _local_workers_note(options)
            )
            with _local_workarounds(options), beam.Pipeline(options=options) as p:
                build_pipeline(p, options, spec, layouts, out=staged)
            stop_state.check()
            finished = finalize_run(
                staged, root, options, spec, layouts, runner, started, stop_state
            )
        print_summary(finished)
        return EXIT_OK

    def discard_run(keep_outputs: bool) -> None:
        """Stops the run's worker processes, then removes what the run wrote (best
        effort: a failure here must not hide the run's own error)."""
        lifecycle.stop_worker_processes()
        try:
            if temp_location:
                commit.discard(staged.temp_dir(temp_location))
            if not keep_outputs:
                commit.discard(staged.root)
        except Exception:
            logging.exception("could not remove the staging directory %s", staged.root)

    return lifecycle.supervise(
        run_and_finalize,
        discard_run,
        watch_workers=runner == LOCAL_BATCH_RUNNER,
        aborted=f"nothing was committed to {root}",
    )


def _local_workers_note(options: PipelineOptions) -> str:
    direct = options.view_as(DirectOptions)
    if options.view_as(StandardOptions).runner != LOCAL_BATCH_RUNNER:
        return ""
    return f" with {direct.direct_num_workers} worker process(es), {direct.direct_running_mode}"


def main() -> None:
    # The run is over and its outputs committed (or discarded): skip the
    # interpreter's slow teardown of TensorFlow (pipeline/workarounds/quick_exit.py).
    argv = sys.argv[1:]
    code = run(argv)
    # Parsed after the run, whose logging set-up must come first.
    disabled = (
        []
        if help_requested(argv)
        else PipelineOptions(argv).view_as(WorkaroundOptions).disable_workaround
    )
    exit_now(code, enabled=quick_exit.NAME not in disabled)


if __name__ == "__main__":
    main()
