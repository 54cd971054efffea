"""The window values that the streaming job writes to the online store, computed
from a bounded history instead: what `pipeline.materialize` writes.

Which periods. The streaming job (transforms.live_aggregates) emits, per entity
and aggregate group, one set of values for every trailing SlidingWindow of
W_max = max_window_periods * P that holds at least one row: the window that ends
at qP holds periods q - W_max/P .. q - 1, so a row of period p produces the
periods q in (p, p + W_max/P], and each of them carries every aggregate of the
group (a shorter window over none of the rows gets its default, a count 0).
`stream_periods` enumerates exactly that set, from the periods that hold rows.

How. The batch path's statistics per (entity, block) (transforms.aggregates:
BlockStatsDoFn, MergePeriodStats), where a block's statistics include the
trailing W_max of the previous block, hold every period that any window ending
in the block needs, and every period that makes one of the block's periods
emitted. So each (entity, block) gives the values of its own periods alone, in
memory bounded by the block's (B + W_max) / P periods however long the history.
`window_values`, shared with both jobs, computes them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from transforms.aggregates import (
    AggregateGroup,
    BlockStatsDoFn,
    MergePeriodStats,
    PeriodStats,
    window_values,
)


@dataclasses.dataclass(frozen=True)
class EventTimeBounds:
    """Which periods get written: those that hold an instant of [start, end)
    (seconds since the epoch; None leaves that side open). A period q of P
    seconds spans [qP, (q + 1)P), so it is written when qP < end and
    (q + 1)P > start: a prediction at any event time in [start, end) finds its
    period's cell. The values themselves always come from the whole history."""

    start: int | None = None
    end: int | None = None

    def period_range(self, period_seconds: int) -> tuple[int | None, int | None]:
        """[low, high) of the period indices written, None where open."""
        low = None if self.start is None else self.start // period_seconds
        high = None if self.end is None else -(-self.end // period_seconds)
        return low, high


def stream_periods(
    row_periods: np.ndarray, max_window_periods: int, low: int | None, high: int | None
) -> np.ndarray:
    """The periods q in [low, high) that the streaming job emits a value for,
    given the sorted, distinct periods that hold rows: q - max_window_periods <=
    p < q for some row period p. Sorted int64.

    Each row period opens a run (p, p + n]; runs that touch merge, so the work is
    linear in the periods and the result, never in n per row period.
    """
    periods = np.asarray(row_periods, dtype=np.int64)
    if not len(periods):
        return np.empty(0, dtype=np.int64)
    n = int(max_window_periods)
    breaks = np.flatnonzero(np.diff(periods) > n) + 1
    firsts = periods[np.concatenate(([0], breaks))] + 1
    lasts = periods[np.concatenate((breaks - 1, [len(periods) - 1]))] + n + 1
    if low is not None:
        firsts = np.maximum(firsts, low)
    if high is not None:
        lasts = np.minimum(lasts, high)
    runs = [
        np.arange(first, last, dtype=np.int64)
        for first, last in zip(firsts, lasts, strict=True)
        if last > first
    ]
    return np.concatenate(runs) if runs else np.empty(0, dtype=np.int64)


def block_stream_values(
    element, group: AggregateGroup, bounds: EventTimeBounds
) -> Iterable[tuple[tuple, tuple[int, dict]]]:
    """((entity, block), PeriodStats incl. the previous block's trailing W_max)
    -> (entity, (q, {aggregate: value})) for each period q of the block that the
    streaming job emits and `bounds` keeps, in the form the stream publishes."""
    (entity, block), stats = element
    first = block * group.block_periods
    low, high = bounds.period_range(group.period_seconds)
    low = first if low is None else max(low, first)
    high = first + group.block_periods if high is None else min(high, first + group.block_periods)
    query = stream_periods(stats.periods, group.max_window_periods, low, high)
    if not len(query):
        return
    columns = {
        aggregate.name: window_values(stats, query, aggregate).tolist()
        for aggregate in group.aggregates
    }
    for index, period in enumerate(query.tolist()):
        yield entity, (period, {name: values[index] for name, values in columns.items()})


class _StreamValuesDoFn(beam.DoFn):
    """`block_stream_values`, counting the (entity, period) values emitted."""

    def __init__(self, group: AggregateGroup, bounds: EventTimeBounds):
        self._group = group
        self._bounds = bounds
        self._emitted = Metrics.counter("materialize", "period_values")

    def process(self, element: tuple[tuple, PeriodStats]) -> Iterable:
        for value in block_stream_values(element, self._group, self._bounds):
            self._emitted.inc()
            yield value


class StreamGroupValues(beam.PTransform):
    """Validated rows -> the window values the streaming job emits for them, for
    one aggregate group.

    Input: bounded PCollection[pa.RecordBatch] (schema of validated rows).
    Output: PCollection[(entity tuple, (period index q, {aggregate name: value}))],
    one element per entity and period q in `bounds` whose trailing W_max holds a
    row (see `stream_periods`), global window; what
    transforms.online_store.WriteGroupValues takes. Counter
    materialize/period_values.
    """

    def __init__(
        self, group: AggregateGroup, timestamp_column: str, bounds: EventTimeBounds | None = None
    ):
        super().__init__()
        self._group = group
        self._timestamp_column = timestamp_column
        self._bounds = bounds or EventTimeBounds()

    def expand(self, batches):
        return (
            batches
            | "BlockStats" >> beam.ParDo(BlockStatsDoFn(self._group, self._timestamp_column))
            | "MergePeriodStats" >> beam.CombinePerKey(MergePeriodStats())
            | "StreamValues" >> beam.ParDo(_StreamValuesDoFn(self._group, self._bounds))
        )
