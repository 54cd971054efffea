"""Admission of live rows by event time: rows that arrive within the allowed
lateness go on, later ones become dead letters.

Time model of the streaming job. Every row's timestamp is its event time. Let L
be the allowed lateness and C the admission window: the greatest common divisor
of the aggregate periods (60 s when the spec has no aggregates).

- Admission (`AdmitOnTime`). Rows are grouped in fixed windows of C, with event
  time shifted forward by L: admission window c holds the rows with event time
  in [cC, (c+1)C) and closes when the watermark passes (c+1)C + L. Rows in the
  window's on-time pane are admitted. A row that arrives later is in a late pane
  and becomes a dead letter with reason 'late', up to --late_data_horizon after
  the window; later still, the runner drops it when it garbage-collects the
  window (Dataflow counts those as droppedDueToLateness).
- Aggregates (transforms.live_aggregates) are computed over admitted rows in
  windows shifted by L like these, so an admitted row gets exactly the value
  that the batch pipeline computes over the admitted rows.
- Latency: a row leaves the aggregate join when the watermark passes the end of
  its admission window plus L.

Each step keeps the windows and triggers that make it exact, and no step fires
a window twice: file sinks name files by window (transforms.windowed_files), so
a second pane of a window would overwrite the first.
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Iterable

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms import trigger, window
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.windowed_value import PaneInfoTiming

from schemas.spec import DatasetSpec
from transforms.messages import event_time_column, row_to_json
from transforms.validation import dead_letter

DEFAULT_ADMISSION_SECONDS = 60
# Admission groups rows by a hash of the record key into this many keys: enough
# to spread a window's rows over workers, few enough that per-key window state
# stays small.
ADMISSION_SHARDS = 64
LATE_TAG = "late"

# The streaming job's own counters (admission, the transform graph).
METRICS_NAMESPACE = "stream"


def admission_window_seconds(spec: DatasetSpec) -> int:
    """C: every aggregate period is a whole number of admission windows."""
    periods = [aggregate.period_seconds for aggregate in spec.aggregates]
    return math.gcd(*periods) if periods else DEFAULT_ADMISSION_SECONDS


def utc_text(seconds: int) -> str:
    """Epoch seconds as an ISO 8601 UTC timestamp, as dead letters and published
    aggregates show them."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


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
                    f"late: event time {utc_text(row[self._timestamp_column])} arrived after its "
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
                _shift_for_admission, spec.record_key, event_time_column(spec), self._lateness
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
                _SortByPaneTimingDoFn(event_time_column(spec), self._lateness)
            ).with_outputs(LATE_TAG, main="admitted")
        )
