"""Materializes the windowed aggregates of a batch run into the online store,
as Feast's `materialize` loads an offline store's values into the online one.

    python -m pipeline.materialize --run_dir BATCH_OUT \\
        --bigtable_project P --bigtable_instance I --bigtable_table T \\
        [--start 2026-01-01T00:00:00Z] [--end 2026-01-08T00:00:00Z] \\
        [--input 'data/*.csv' | --query 'SELECT ...'] [--create_table never] [Beam options]

BATCH_OUT is a complete pipeline.preprocess output: its spec.json gives the
aggregates and its manifest.json the inputs, which are read and validated
again as the batch job read them (CSV files, each checked against the
fingerprint the manifest recorded, or the BigQuery table or query);
--input/--query read other inputs instead. Writes exactly the cells that
pipeline.stream writes for the same events (transforms/materialize.py): for
every entity and every period q whose trailing window of its group's longest
aggregate holds a row, one cell per aggregate of the group, stamped with the
period's start. --start/--end keep only the periods that hold an instant of
[start, end) (a prediction at any event time in it finds its cell); the values
still see every row before --start. Writing a cell again overwrites it, so a
rerun, or a stream that wrote the same periods, leaves the same table.

Exit codes: 0 success, 1 failed run, 2 bad flags, run directory or inputs,
130 stopped by SIGINT or SIGTERM (cells written by then stay; a rerun
overwrites them with the same values).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import lifecycle
from pipeline import manifest as manifest_io
from pipeline.layout import MANIFEST_NAME, SPEC_NAME, RunLayout
from pipeline.lifecycle import EXIT_OK, EXIT_USAGE, StopState
from pipeline.options import (
    LOCAL_BATCH_RUNNER,
    MATERIALIZE_OPTION_CLASSES,
    MaterializeOptions,
    OptionsError,
    PreprocessOptions,
    create_online_store_if_missing,
    event_time_flag,
    online_store_table,
    pin_local_runner,
    unknown_flags,
    validate_materialize_options,
)
from schemas.spec import DatasetSpec, SpecError, parse_spec
from transforms.aggregates import group_aggregates
from transforms.bigquery_source import BigQueryRows, BigQuerySource, BigQuerySourceError
from transforms.csv_source import CsvLayout, CsvLines, InputError, discover_layouts
from transforms.materialize import EventTimeBounds, StreamGroupValues

__all__ = ["build_pipeline", "run"]


class RunInputs:
    """What to read: the CSV files' layouts, or a BigQuery source."""

    def __init__(self, layouts: dict[str, CsvLayout], bigquery: BigQuerySource | None):
        self.layouts = layouts
        self.bigquery = bigquery

    def adapter(self, spec: DatasetSpec):
        if self.bigquery is not None:
            return BigQueryRows(spec, self.bigquery.name)
        return CsvLines(spec, self.layouts)


def build_pipeline(
    p: beam.Pipeline,
    options: PipelineOptions,
    spec: DatasetSpec,
    inputs: RunInputs,
    lines: beam.PCollection | None = None,
    records: beam.PCollection | None = None,
) -> None:
    """Wires the job into `p`: read and validate the inputs, compute each group's
    stream values, write them to the online store (which must exist).
    `lines`/`records` replace reading, as in pipeline.preprocess.build_pipeline."""
    from pipeline.preprocess import read_and_validate
    from transforms.online_store import WriteGroupValues

    store = online_store_table(options)
    flags = options.view_as(MaterializeOptions)
    bounds = EventTimeBounds(
        event_time_flag("--start", flags.start), event_time_flag("--end", flags.end)
    )
    parsed = read_and_validate(
        p,
        spec,
        inputs.adapter(spec),
        inputs.bigquery,
        options.view_as(PreprocessOptions).parse_batch_size,
        lines,
        records,
    )
    for group in group_aggregates(spec):
        _ = (
            parsed.valid
            | f"StreamValues[{group.label}]"
            >> StreamGroupValues(group, spec.timestamp_column, bounds)
            | f"WriteOnlineStore[{group.label}]" >> WriteGroupValues(group, store)
        )


def load_run(run_dir: str) -> tuple[DatasetSpec, dict]:
    """The run's spec (spec.json) and manifest; refuses an incomplete run, a spec
    that is not the one the manifest names, or a spec without aggregates."""
    layout = RunLayout(run_dir)
    for name, path in ((MANIFEST_NAME, layout.manifest_path), (SPEC_NAME, layout.spec_path)):
        if not manifest_io.list_files(path):
            raise OptionsError(
                f"--run_dir {run_dir} has no {name}: it is not a complete "
                "pipeline.preprocess output"
            )
    manifest = manifest_io.read_json(layout.manifest_path)
    spec = parse_spec(manifest_io.read_json(layout.spec_path), source=layout.spec_path)
    if manifest.get("spec_hash") != spec.spec_hash:
        raise OptionsError(
            f"--run_dir {run_dir}: its {SPEC_NAME} (hash {spec.spec_hash[:12]}) is not the spec "
            f"its {MANIFEST_NAME} was made from ({str(manifest.get('spec_hash'))[:12]})"
        )
    if not spec.aggregates:
        raise OptionsError(f"spec '{spec.name}' of --run_dir {run_dir} has no aggregates")
    return spec, manifest


def recorded_inputs(manifest: dict, spec: DatasetSpec) -> RunInputs:
    """The inputs the manifest records, as the batch job read them; a CSV file
    that changed since (another fingerprint) or is gone is refused."""
    entries = manifest.get("inputs") or []
    if not entries:
        raise OptionsError("the run's manifest records no inputs; give --input or --query")
    if "bigquery" in entries[0]:
        entry = entries[0]
        if entry.get("query"):
            return RunInputs({}, BigQuerySource(query=entry["query"]))
        return RunInputs({}, BigQuerySource.from_flags([entry["bigquery"]], None))
    paths = [entry["path"] for entry in entries]
    for entry in entries:
        if not manifest_io.list_files(entry["path"]):
            raise OptionsError(
                f"input {entry['path']} of the run is gone; give --input to read another"
            )
        if manifest_io.file_fingerprint(entry["path"]) != entry["fingerprint"]:
            raise OptionsError(
                f"input {entry['path']} changed since the batch run (its fingerprint "
                "differs); give --input to materialize from it anyway"
            )
    return RunInputs(discover_layouts(paths, spec), None)


def flag_inputs(options: PipelineOptions, spec: DatasetSpec) -> RunInputs | None:
    """The inputs --input/--query name, None without them."""
    preprocess = options.view_as(PreprocessOptions)
    if not (preprocess.input or preprocess.query):
        return None
    try:
        bigquery = BigQuerySource.from_flags(preprocess.input, preprocess.query)
    except BigQuerySourceError as error:
        raise OptionsError(str(error)) from None
    if bigquery is not None:
        return RunInputs({}, bigquery)
    return RunInputs(discover_layouts(preprocess.input, spec), None)


def prepare(argv: Sequence[str]) -> tuple[PipelineOptions, DatasetSpec, RunInputs]:
    """Parses and checks everything that can be checked before running.

    Raises SpecError, OptionsError or InputError (all exit code 2).
    """
    unknown = unknown_flags(argv)
    if unknown:
        raise OptionsError(f"unknown flag(s): {', '.join(unknown)} (see --help)")
    options = PipelineOptions(list(argv))
    problems = validate_materialize_options(options)
    if problems:
        raise OptionsError("; ".join(problems))
    spec, manifest = load_run(options.view_as(MaterializeOptions).run_dir)
    inputs = flag_inputs(options, spec) or recorded_inputs(manifest, spec)
    return options, spec, inputs


def run(argv: Sequence[str] | None = None) -> int:
    """Runs the materialization; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if lifecycle.answered_help_or_started(
        argv, "python -m pipeline.materialize", __doc__, MATERIALIZE_OPTION_CLASSES
    ):
        return EXIT_OK
    try:
        options, spec, inputs = prepare(argv)
    except (SpecError, OptionsError, InputError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    runner = pin_local_runner(options, argv)
    store = online_store_table(options)

    def materialize(stop_state: StopState) -> int:
        started = time.time()
        create_online_store_if_missing(options, spec)
        with beam.Pipeline(options=options) as p:
            build_pipeline(p, options, spec, inputs)
        result = p.result
        stop_state.check()
        cells = _counter(result, "Written Row")
        values = _counter(result, "period_values")
        print(
            f"materialized {values} period values ({cells} cells) of spec '{spec.name}' into "
            f"{store} in {time.time() - started:.1f} s"
        )
        return EXIT_OK

    logging.info("phase: materializing on %s", runner)
    return lifecycle.supervise(
        materialize,
        on_abort=lambda keep_outputs: lifecycle.stop_worker_processes(),
        watch_workers=runner == LOCAL_BATCH_RUNNER,
        aborted="cells already written stay; a rerun overwrites them with the same values",
    )


def _counter(result, name: str) -> int | None:
    """The committed total of a counter, None where the runner reports none."""
    from apache_beam.metrics.metric import MetricsFilter

    try:
        counters = result.metrics().query(MetricsFilter().with_name(name))["counters"]
    except (AttributeError, NotImplementedError):
        return None
    return sum(counter.committed or 0 for counter in counters)


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
