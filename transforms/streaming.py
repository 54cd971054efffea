"""Streaming steps: admission of late events, live point-in-time aggregates joined
onto each event, the batch-analyzed transform graph applied to live rows, and
windowed file sinks.

Time model. Every row's timestamp is its event time. Let L be the allowed
lateness and C the admission window: the greatest common divisor of the
aggregate periods (60 s when the spec has no aggregates).

- Admission (`AdmitOnTime`). Rows are grouped in fixed windows of C, with event
  time shifted forward by L: admission window c holds the rows with event time
  in [cC, (c+1)C) and closes when the watermark passes (c+1)C + L. Rows in the
  window's on-time pane are admitted. A row that arrives later is in a late pane
  and becomes a dead letter with reason 'late', up to --late_data_horizon after
  the window; later still, the runner drops it when it garbage-collects the
  window (Dataflow counts those as droppedDueToLateness).
- Aggregates (`JoinLiveAggregates`). Admitted rows are pre-aggregated per
  (entity, admission window) into the `PeriodStats` of the batch path.
  SlidingWindows(W_max, P), shifted by L like admission, collect the statistics
  of periods [q - W/P, q - 1]; that window closes at qP + L, when every admitted
  row of those periods has arrived. `window_values`, shared with batch, gives
  each aggregate's value, and a CoGroupByKey in the admission windows joins it
  onto the rows of period q. So an admitted row gets exactly the value that the
  batch pipeline computes over the admitted rows.
- Latency: a row leaves the join when the watermark passes the end of its
  admission window plus L.

Each step keeps the windows and triggers that make it exact, and no step fires
a window twice: file sinks name files by window, so a second pane of a window
would overwrite the first.
"""

from __future__ import annotations

import gzip
import math
import time
import zlib
from collections.abc import Iterable

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io import fileio
from apache_beam.metrics import Metrics
from apache_beam.transforms import trigger, window
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.windowed_value import PaneInfoTiming

from schemas.spec import DatasetSpec
from transforms.aggregates import (
    AggregateGroup,
    MergePeriodStats,
    PeriodStats,
    finalize,
    group_aggregates,
    window_values,
)
from transforms.messages import METRICS_NAMESPACE, row_to_json
from transforms.validation import dead_letter, rows_schema

DEFAULT_ADMISSION_SECONDS = 60
# Admission groups rows by a hash of the record key into this many keys: enough
# to spread a window's rows over workers, few enough that per-key window state
# stays small.
ADMISSION_SHARDS = 64
LATE_TAG = "late"


def admission_window_seconds(spec: DatasetSpec) -> int:
    """C: every aggregate period is a whole number of admission windows."""
    periods = [aggregate.period_seconds for aggregate in spec.aggregates]
    return math.gcd(*periods) if periods else DEFAULT_ADMISSION_SECONDS


def _utc(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


# --- admission -------------------------------------------------------------------


def _shift_for_admission(row: dict, key_column: str, timestamp_column: str, lateness: int):
    """(shard, row) stamped at event time + L (moving forward in time is always allowed)."""
    shard = zlib.crc32(str(row[key_column]).encode("utf-8")) % ADMISSION_SHARDS
    return TimestampedValue((shard, row), row[timestamp_column] + lateness)


class _SortByPaneTimingDoFn(beam.DoFn):
    """(shard, rows) of one admission pane -> rows (on time) or 'late' dead letters."""

    def __init__(self, timestamp_column: str, lateness: int):
        self._timestamp_column = timestamp_column
        self._lateness = lateness
        self._admitted = Metrics.counter(METRICS_NAMESPACE, "rows_admitted")
        self._late = Metrics.counter(METRICS_NAMESPACE, "rows_late")

    def process(self, element, pane=beam.DoFn.PaneInfoParam) -> Iterable:
        _, rows = element
        if pane.timing == PaneInfoTiming.LATE:
            for row in rows:
                self._late.inc()
                reason = (
                    f"late: event time {_utc(row[self._timestamp_column])} arrived after its "
                    f"window closed plus the allowed lateness of {self._lateness} s"
                )
                yield beam.pvalue.TaggedOutput(
                    LATE_TAG,
                    dead_letter("stream", row_to_json(row), reason, self._timestamp_column),
                )
        else:
            for row in rows:
                self._admitted.inc()
                yield row


class AdmitOnTime(beam.PTransform):
    """Admits rows that arrive within the allowed lateness; dead-letters later ones.

    Input: PCollection[dict] of valid rows, timestamped at event time, any
    windowing, unbounded. Output: DoOutputsTuple with 'admitted' (the rows, in
    admission windows of C seconds offset by L, timestamped at the window's end)
    and 'late' (dead-letter dicts). Counters: rows_admitted, rows_late.
    """

    def __init__(self, spec: DatasetSpec, allowed_lateness: int, late_data_horizon: int):
        super().__init__()
        if allowed_lateness < 0 or late_data_horizon < allowed_lateness:
            raise ValueError("need 0 <= allowed_lateness <= late_data_horizon")
        self._spec = spec
        self._lateness = allowed_lateness
        self._horizon = late_data_horizon

    def expand(self, rows):
        spec = self._spec
        size = admission_window_seconds(spec)
        return (
            rows
            | "ShiftByLateness"
            >> beam.Map(
                _shift_for_admission, spec.key_column, spec.timestamp_column, self._lateness
            )
            | "AdmissionWindows"
            >> beam.WindowInto(
                window.FixedWindows(size, offset=self._lateness % size),
                trigger=trigger.AfterWatermark(late=trigger.AfterCount(1)),
                accumulation_mode=trigger.AccumulationMode.DISCARDING,
                allowed_lateness=self._horizon,
            )
            | "GroupByWindow" >> beam.GroupByKey()
            | "SortByPaneTiming"
            >> beam.ParDo(
                _SortByPaneTimingDoFn(spec.timestamp_column, self._lateness)
            ).with_outputs(LATE_TAG, main="admitted")
        )


# --- live aggregates -------------------------------------------------------------


def _entity(row: dict, key_columns: tuple[str, ...]) -> tuple:
    return tuple(row[name] for name in key_columns)


class RowsToPeriodStats(beam.CombineFn):
    """Row dicts -> PeriodStats of one aggregate group (periods and value sums,
    minima and maxima), the statistics the batch path computes from Arrow."""

    def __init__(self, group: AggregateGroup, timestamp_column: str):
        self._group = group
        self._timestamp_column = timestamp_column

    def create_accumulator(self):
        return [], {name: [] for name in self._group.value_columns}

    def add_input(self, accumulator, row: dict):
        periods, values = accumulator
        periods.append(row[self._timestamp_column] // self._group.period_seconds)
        for name, column in values.items():
            column.append(float(row[name]))
        return accumulator

    def merge_accumulators(self, accumulators):
        periods, values = self.create_accumulator()
        for other_periods, other_values in accumulators:
            periods.extend(other_periods)
            for name, column in other_values.items():
                values[name].extend(column)
        return periods, values

    def extract_output(self, accumulator) -> PeriodStats:
        periods, values = accumulator
        return PeriodStats.from_rows(
            np.asarray(periods, dtype=np.int64),
            {name: np.asarray(column, dtype=np.float64) for name, column in values.items()},
        )


class _WindowValuesDoFn(beam.DoFn):
    """(entity, PeriodStats of a trailing window) -> (entity, (q, {aggregate: value}))
    for the rows of period q, the period that starts where the window ends."""

    def __init__(self, group: AggregateGroup, lateness: int):
        self._group = group
        self._lateness = lateness

    def process(self, element, window=beam.DoFn.WindowParam) -> Iterable:
        entity, stats = element
        end_seconds = window.end.micros // 1_000_000 - self._lateness
        period = self._group.period_seconds
        if end_seconds % period:
            raise ValueError(f"trailing window ends at {end_seconds}, not a period boundary")
        query = np.array([end_seconds // period], dtype=np.int64)
        values = {
            aggregate.name: window_values(stats, query, aggregate)[0].item()
            for aggregate in self._group.aggregates
        }
        yield entity, (int(query[0]), values)


def _to_admission_windows(element, period: int, admission: int, lateness: int):
    """Copies period q's values into each admission window of that period."""
    entity, (query, values) = element
    for start in range(query * period, (query + 1) * period, admission):
        yield TimestampedValue((entity, values), start + lateness)


class _AttachValuesDoFn(beam.DoFn):
    """CoGroupByKey of one entity and admission window -> its rows with the group's
    aggregate columns; the spec's defaults when the entity had no earlier rows."""

    def __init__(self, group: AggregateGroup):
        self._group = group

    def setup(self):
        self._defaults = {
            aggregate.name: finalize(aggregate, 0, 0.0, math.inf, -math.inf).item()
            for aggregate in self._group.aggregates
        }

    def process(self, element) -> Iterable[dict]:
        _, grouped = element
        computed = list(grouped["values"])
        if len(computed) > 1:
            raise ValueError(f"expected at most one set of window values, got {len(computed)}")
        values = computed[0] if computed else self._defaults
        for row in grouped["rows"]:
            yield {**row, **values}


def aggregate_record(element, group: AggregateGroup) -> dict:
    """The published form of one entity's values for one period."""
    entity, (query, values) = element
    start = query * group.period_seconds
    return {
        "group": group.label,
        "entity": dict(zip(group.key_columns, entity, strict=True)),
        "period_start": _utc(start),
        "period_end": _utc(start + group.period_seconds),
        "values": values,
    }


class _JoinAggregateGroup(beam.PTransform):
    """Rows in admission windows -> (rows with the group's columns, window values)."""

    def __init__(self, group: AggregateGroup, timestamp_column: str, admission: int, lateness: int):
        super().__init__()
        self._group = group
        self._timestamp_column = timestamp_column
        self._admission = admission
        self._lateness = lateness

    def expand(self, rows):
        group = self._group
        period = group.period_seconds
        keyed = rows | "KeyByEntity" >> beam.Map(lambda row: (_entity(row, group.key_columns), row))
        values = (
            keyed
            | "PeriodStats" >> beam.CombinePerKey(RowsToPeriodStats(group, self._timestamp_column))
            | "TrailingWindows"
            >> beam.WindowInto(
                window.SlidingWindows(
                    group.max_window_periods * period, period, offset=self._lateness % period
                )
            )
            | "MergePeriodStats" >> beam.CombinePerKey(MergePeriodStats())
            | "WindowValues" >> beam.ParDo(_WindowValuesDoFn(group, self._lateness))
        )
        to_join = (
            values
            # A re-stamped element is re-assigned to its PCollection's windows: in
            # SlidingWindows that would copy it into W / P windows, so the values
            # leave them first.
            | "ToGlobalWindow" >> beam.WindowInto(window.GlobalWindows())
            | "ToAdmissionWindows"
            >> beam.FlatMap(_to_admission_windows, period, self._admission, self._lateness)
            | "JoinWindows"
            >> beam.WindowInto(
                window.FixedWindows(self._admission, offset=self._lateness % self._admission)
            )
        )
        joined = (
            {"rows": keyed, "values": to_join}
            | "GroupWithRows" >> beam.CoGroupByKey()
            | "AttachValues" >> beam.ParDo(_AttachValuesDoFn(group))
        )
        return joined, values


class JoinLiveAggregates(beam.PTransform):
    """Adds every aggregate of the spec to admitted rows, live.

    Input: PCollection[dict] from AdmitOnTime's 'admitted' output. Output: dict
    with 'rows' (the rows with one more key per aggregate, in admission windows)
    and, when the spec has aggregates, 'aggregates' (one dict per entity and
    period with data in its trailing window: group, entity, period_start,
    period_end, values; see `aggregate_record`).
    """

    def __init__(self, spec: DatasetSpec, allowed_lateness: int):
        super().__init__()
        self._spec = spec
        self._lateness = allowed_lateness

    def expand(self, rows):
        admission = admission_window_seconds(self._spec)
        rows = rows | "JoinWindows" >> beam.WindowInto(
            window.FixedWindows(admission, offset=self._lateness % admission)
        )
        published = []
        for group in group_aggregates(self._spec):
            rows, values = rows | f"Aggregate[{group.label}]" >> _JoinAggregateGroup(
                group, self._spec.timestamp_column, admission, self._lateness
            )
            published.append(
                values | f"AggregateRecords[{group.label}]" >> beam.Map(aggregate_record, group)
            )
        result = {"rows": rows}
        if published:
            result["aggregates"] = published | "FlattenAggregates" >> beam.Flatten()
        return result


# --- transform graph -------------------------------------------------------------


def _any_batch_size(tensor):
    """The tensor's TypeSpec with its batch dimension unknown, as the converter needs."""
    import tensorflow as tf

    if isinstance(tensor, tf.SparseTensor):
        return tf.SparseTensorSpec([None, *tensor.shape[1:]], tensor.dtype)
    if isinstance(tensor, tf.RaggedTensor):
        return tf.RaggedTensorSpec(
            [None, *tensor.shape[1:]], tensor.dtype, tensor.ragged_rank, tensor.row_splits.dtype
        )
    return tf.TensorSpec([None, *tensor.shape[1:]], tensor.dtype)


class _TransformRowsDoFn(beam.DoFn):
    """Batch of row dicts (raw columns and aggregates) -> (record key, serialized
    tf.train.Example) through the transform graph of a batch run.

    Rows are converted exactly as the batch pipeline converts them (the same
    TFXIO layout and TensorAdapter), and outputs are encoded with the same
    RecordBatch-to-Example encoder, so an example written here is the example
    batch writes for the same row.
    """

    def __init__(self, spec: DatasetSpec, transform_dir: str):
        self._spec = spec
        self._transform_dir = transform_dir
        self._examples = Metrics.counter(METRICS_NAMESPACE, "examples_transformed")

    def setup(self):
        import tensorflow_transform as tft
        from tfx_bsl.coders.example_coder import RecordBatchToExamplesEncoder
        from tfx_bsl.tfxio import tensor_adapter

        from transforms.analyze import tensor_adapter_config

        config = tensor_adapter_config(self._spec)
        self._tft_output = tft.TFTransformOutput(self._transform_dir)
        self._adapter = tensor_adapter.TensorAdapter(config)
        self._tfxio_schema = config.arrow_schema
        self._rows_schema = rows_schema(self._spec)
        self._encoder = RecordBatchToExamplesEncoder()
        self._converter = None

    def process(self, rows: list[dict]) -> Iterable[tuple[str, bytes]]:
        from tfx_bsl.tfxio import tensor_to_arrow

        from transforms.analyze import to_list_array, to_tfxio_batch

        if not rows:
            return
        key_column = self._spec.key_column
        batch = pa.RecordBatch.from_pylist(rows, schema=self._rows_schema)
        tensors = self._adapter.ToBatchTensors(
            to_tfxio_batch(batch, self._tfxio_schema, key_column), produce_eager_tensors=True
        )
        transformed = self._tft_output.transform_raw_features(tensors, drop_unused_features=True)
        if self._converter is None:
            self._converter = tensor_to_arrow.TensorsToRecordBatchConverter(
                {name: _any_batch_size(tensor) for name, tensor in transformed.items()}
            )
        output = self._converter.convert(transformed)
        keys = batch.column(key_column)
        output = output.append_column(key_column, to_list_array(keys, pa.large_binary()))
        encoded = self._encoder.encode(output)
        self._examples.inc(len(encoded))
        yield from zip(keys.to_pylist(), encoded, strict=True)


class ApplyTransformGraph(beam.PTransform):
    """PCollection[dict] of rows with aggregates -> (record key, serialized example).

    Keeps the input's windows. The transform graph is loaded once per worker, in
    setup(). Counter: examples_transformed.
    """

    def __init__(self, spec: DatasetSpec, transform_dir: str, batch_size: int = 256):
        super().__init__()
        self._spec = spec
        self._transform_dir = transform_dir
        self._batch_size = batch_size

    def expand(self, rows):
        return (
            rows
            | "BatchRows" >> beam.BatchElements(min_batch_size=1, max_batch_size=self._batch_size)
            | "Transform" >> beam.ParDo(_TransformRowsDoFn(self._spec, self._transform_dir))
        )


# --- sinks ----------------------------------------------------------------------


class TFRecordGzipSink(fileio.FileSink):
    """Writes serialized records as one gzip-compressed TFRecord file."""

    def __init__(self):
        self._file = None

    def open(self, fh):
        self._file = gzip.GzipFile(fileobj=fh, mode="wb")

    def write(self, record: bytes):
        # Beam's own TFRecord framing (length, masked CRC32C of length and data).
        from apache_beam.io.tfrecordio import _TFRecordUtil

        _TFRecordUtil.write_record(self._file, record)

    def flush(self):
        # Ends the gzip stream; the handle itself is closed by WriteToFiles.
        if self._file is not None:
            self._file.close()
            self._file = None


def stamp_arrival_time(record):
    """Re-stamps a record at the current time.

    For dead letters, which have no trustworthy event time: invalid messages may
    lack one, and late rows would be dropped again by the windows of the file
    sink. Moving a timestamp forward is always allowed.
    """
    return TimestampedValue(record, time.time())


class WriteWindowedFiles(beam.PTransform):
    """Writes each fixed event-time window of records to its own set of files,
    `<directory>/<prefix>-<window start>-<window end>-<shard>-of-<n><suffix>`.

    Input elements must be on time for these windows: every producer in this
    module emits from on-time panes or stamps arrival time.
    """

    def __init__(
        self, directory: str, prefix: str, suffix: str, sink, window_seconds: int, shards: int
    ):
        super().__init__()
        self._directory = directory
        self._naming = fileio.default_file_naming(prefix, suffix)
        self._sink = sink
        self._window_seconds = window_seconds
        self._shards = shards or None

    def expand(self, records):
        return (
            records
            | "FileWindows" >> beam.WindowInto(window.FixedWindows(self._window_seconds))
            | "WriteFiles"
            >> fileio.WriteToFiles(
                path=self._directory,
                file_naming=self._naming,
                sink=self._sink,
                shards=self._shards,
            )
        )
