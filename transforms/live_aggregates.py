"""Live point-in-time aggregates, joined onto each admitted row: the streaming
counterpart of transforms.aggregates.JoinAggregates, with the same values.

Time (see transforms.admission for L and C): admitted rows are pre-aggregated
per (entity, admission window) into the `PeriodStats` of the batch path.
SlidingWindows(W_max, P), shifted by L like admission, collect the statistics
of periods [q - W/P, q - 1]; that window closes at qP + L, when every admitted
row of those periods has arrived. `window_values`, shared with batch, gives
each aggregate's value, and a CoGroupByKey in the admission windows joins it
onto the rows of period q. So an admitted row gets exactly the value that the
batch pipeline computes over the admitted rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import apache_beam as beam
import numpy as np
from apache_beam.transforms import window
from apache_beam.transforms.window import TimestampedValue

from schemas.spec import DatasetSpec
from transforms.admission import admission_window_seconds, utc_text
from transforms.aggregates import (
    AggregateGroup,
    MergePeriodStats,
    PeriodStats,
    finalize,
    group_aggregates,
    window_values,
)


def _entity(row: dict, key_columns: tuple[str, ...]) -> tuple:
    return tuple(row[name] for name in key_columns)


class RowsToPeriodStats(beam.CombineFn):
    """Row dicts -> PeriodStats of one aggregate group (periods and value sums,
    minima, maxima and present counts; a None value is missing and skipped),
    the statistics the batch path computes from Arrow."""

    def __init__(self, group: AggregateGroup, timestamp_column: str):
        self._group = group
        self._timestamp_column = timestamp_column

    def create_accumulator(self):
        return [], {name: [] for name in self._group.value_columns}

    def add_input(self, accumulator, row: dict):
        periods, values = accumulator
        periods.append(row[self._timestamp_column] // self._group.period_seconds)
        for name, column in values.items():
            value = row[name]
            # Missing (None) is skipped, as in batch: PeriodStats reads NaN as missing.
            column.append(math.nan if value is None else float(value))
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
        "period_start": utc_text(start),
        "period_end": utc_text(start + group.period_seconds),
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
    period_end, values; see `aggregate_record`) and 'values' ({group label:
    PCollection[(entity tuple, (q, {aggregate name: value}))]}, the same values
    per aggregate group, in the trailing SlidingWindows that close at qP + L,
    which transforms.online_store.WriteGroupValues writes).
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
        published, group_values = [], {}
        for group in group_aggregates(self._spec):
            rows, values = rows | f"Aggregate[{group.label}]" >> _JoinAggregateGroup(
                group, self._spec.timestamp_column, admission, self._lateness
            )
            group_values[group.label] = values
            published.append(
                values | f"AggregateRecords[{group.label}]" >> beam.Map(aggregate_record, group)
            )
        result = {"rows": rows}
        if published:
            result["aggregates"] = published | "FlattenAggregates" >> beam.Flatten()
            result["values"] = group_values
        return result
