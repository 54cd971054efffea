"""Point-in-time correct, event-time windowed aggregates ("trips from this zone in
the previous hour"), with one definition for batch and streaming.

Semantics. For a row of entity k at event time t (seconds, UTC), let
e = floor(t / P) * P. The aggregate is taken over every row of k whose event time
lies in [e - W, e). The row never sees itself or anything at or after e, so the
value is known at prediction time. Because W is a whole number of periods, that
interval is exactly the periods with index q - W/P .. q - 1, where q = floor(t/P):
both implementations pre-aggregate per (entity, period) and then combine whole
periods, which is why they agree.

- Streaming (`transforms.live_aggregates.JoinLiveAggregates`): admitted rows are
  pre-aggregated into the same PeriodStats per admission window, then collected
  in SlidingWindows(W, P); the window ending at e holds exactly [e - W, e).
- Batch (`JoinAggregates`): rows are pre-aggregated per (entity, block, period),
  where a block is a fixed span of B = max(W, 65536 P) seconds. Each block's
  partials plus the trailing W of the previous block give every window the
  block's rows need. The window values of each (entity, block) are a side input
  that every batch of rows looks its keys up in, after the rows have waited in
  spill files: only statistics are grouped, never rows. One side-input entry
  holds O((B + W) / P) values per aggregate, however hot the key, so a lookup
  stays small. Batch does not reuse SlidingWindows: each element would be
  copied into W / P windows (36 copies for 3h at 5min).

The per-period statistics (count, and sum/min/max of each value column) and the
final formula (`finalize`) are shared by both paths.

Missing values (an optional value column without a default) are skipped, as
SQL's AVG, SUM, MIN and MAX skip NULL: each period also counts the values that
are present, `mean` divides by that count, and a window without any present
value gives the aggregate's default, as an empty window does. `count` counts
rows, whatever their values. Both paths hand missing values to PeriodStats as
NaN, which no valid value can be (the validator rejects non-finite numbers).
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
from collections.abc import Iterable, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics

from schemas.spec import Aggregate, AggregateFunction, DatasetSpec
from transforms.spill import SpillToFiles
from transforms.validation import aggregate_arrow_type, rows_schema

# A block holds this many periods (or the longest window, if longer): large enough
# that a batch of rows spread over a year makes few (entity, block) groups (each
# costs a pass and a grouped element: with 8,192 periods, 28 days at 5 min, a
# 4,096-line taxi batch made 180 of them, and the full spec spent 5% more CPU
# at 3M rows), small enough that one block's period statistics stay within a few
# megabytes however busy the entity (227 days at 5 min).
BLOCK_PERIODS = 65536


@dataclasses.dataclass(frozen=True)
class AggregateGroup:
    """Aggregates that share entity key columns and period: one pass computes them."""

    key_columns: tuple[str, ...]
    period_seconds: int
    aggregates: tuple[Aggregate, ...]

    @property
    def value_columns(self) -> tuple[str, ...]:
        names = {a.value for a in self.aggregates if a.value is not None}
        return tuple(sorted(names))

    @property
    def max_window_periods(self) -> int:
        return max(a.window_seconds for a in self.aggregates) // self.period_seconds

    @property
    def block_periods(self) -> int:
        return max(self.max_window_periods, BLOCK_PERIODS)

    @property
    def label(self) -> str:
        return f"{'_'.join(self.key_columns)}_{self.period_seconds}s"


def group_aggregates(spec: DatasetSpec) -> list[AggregateGroup]:
    groups: dict[tuple, list[Aggregate]] = {}
    for aggregate in spec.aggregates:
        groups.setdefault((tuple(aggregate.key), aggregate.period_seconds), []).append(aggregate)
    return [AggregateGroup(key, period, tuple(aggs)) for (key, period), aggs in groups.items()]


# --- per-period statistics ----------------------------------------------------


@dataclasses.dataclass
class PeriodStats:
    """Statistics per period index, sorted by period, without duplicates.

    `counts` counts rows. `sums`, `mins`, `maxs` and `present` (how many rows
    hold a value) map each value column to an array aligned with `periods`;
    missing values are left out of all four.
    """

    periods: np.ndarray
    counts: np.ndarray
    sums: dict[str, np.ndarray]
    mins: dict[str, np.ndarray]
    maxs: dict[str, np.ndarray]
    present: dict[str, np.ndarray]

    @classmethod
    def from_rows(cls, periods: np.ndarray, values: dict[str, np.ndarray]) -> PeriodStats:
        """From each row's period and value columns, NaN where a value is missing."""
        unique, inverse = np.unique(periods, return_inverse=True)
        size = len(unique)
        sums, mins, maxs, present = {}, {}, {}, {}
        for name, column in values.items():
            has_value = ~np.isnan(column)
            sums[name] = np.bincount(
                inverse, weights=np.where(has_value, column, 0.0), minlength=size
            )
            mins[name] = np.full(size, np.inf)
            np.minimum.at(mins[name], inverse, np.where(has_value, column, np.inf))
            maxs[name] = np.full(size, -np.inf)
            np.maximum.at(maxs[name], inverse, np.where(has_value, column, -np.inf))
            present[name] = np.bincount(inverse, weights=has_value, minlength=size).astype(np.int64)
        return cls(unique, np.bincount(inverse, minlength=size), sums, mins, maxs, present)

    @classmethod
    def merge(cls, parts: Sequence[PeriodStats]) -> PeriodStats:
        if len(parts) == 1:
            return parts[0]
        periods = np.concatenate([p.periods for p in parts])
        unique, inverse = np.unique(periods, return_inverse=True)
        size = len(unique)
        counts = np.bincount(
            inverse, weights=np.concatenate([p.counts for p in parts]), minlength=size
        )
        sums, mins, maxs, present = {}, {}, {}, {}
        for name in parts[0].sums:
            sums[name] = np.bincount(
                inverse, weights=np.concatenate([p.sums[name] for p in parts]), minlength=size
            )
            present[name] = np.bincount(
                inverse, weights=np.concatenate([p.present[name] for p in parts]), minlength=size
            ).astype(np.int64)
            mins[name] = np.full(size, np.inf)
            np.minimum.at(mins[name], inverse, np.concatenate([p.mins[name] for p in parts]))
            maxs[name] = np.full(size, -np.inf)
            np.maximum.at(maxs[name], inverse, np.concatenate([p.maxs[name] for p in parts]))
        return cls(unique, counts.astype(np.int64), sums, mins, maxs, present)

    def select(self, mask: np.ndarray) -> PeriodStats:
        return PeriodStats(
            self.periods[mask],
            self.counts[mask],
            {k: v[mask] for k, v in self.sums.items()},
            {k: v[mask] for k, v in self.mins.items()},
            {k: v[mask] for k, v in self.maxs.items()},
            {k: v[mask] for k, v in self.present.items()},
        )


def finalize(aggregate: Aggregate, count, total, low, high):
    """The aggregate's value from window statistics; `default` where count is 0.
    `count` is what the aggregate counts: rows for `count`, present values of
    its value column for the others.

    Works on scalars and NumPy arrays alike, so batch and streaming share it.
    """
    count = np.asarray(count)
    empty = count == 0
    if aggregate.agg is AggregateFunction.COUNT:
        return np.where(empty, aggregate.default, count).astype(np.int64)
    if aggregate.agg is AggregateFunction.SUM:
        result = total
    elif aggregate.agg is AggregateFunction.MEAN:
        result = np.asarray(total, dtype=np.float64) / np.where(empty, 1, count)
    elif aggregate.agg is AggregateFunction.MIN:
        result = low
    else:
        result = high
    return np.where(empty, float(aggregate.default), result).astype(np.float64)


def _range_reduce(ufunc, values: np.ndarray, low: np.ndarray, high: np.ndarray, empty):
    """ufunc over values[low[i]:high[i]] for every i, exactly (no prefix differences)."""
    padded = np.append(values, empty)
    bounds = np.empty(2 * len(low), dtype=np.int64)
    bounds[0::2], bounds[1::2] = low, high
    reduced = ufunc.reduceat(padded, bounds)[0::2] if len(low) else np.array([], values.dtype)
    return np.where(high > low, reduced, empty)


def window_values(
    stats: PeriodStats, query_periods: np.ndarray, aggregate: Aggregate
) -> np.ndarray:
    """Value of `aggregate` for rows in each query period q: periods [q - n, q - 1]."""
    n = aggregate.window_seconds // aggregate.period_seconds
    low = np.searchsorted(stats.periods, query_periods - n, side="left")
    high = np.searchsorted(stats.periods, query_periods, side="left")
    if aggregate.agg is AggregateFunction.COUNT:
        counts = _range_reduce(np.add, stats.counts, low, high, 0)
    else:
        counts = _range_reduce(np.add, stats.present[aggregate.value], low, high, 0)
    totals = lows = highs = None
    if aggregate.agg in (AggregateFunction.SUM, AggregateFunction.MEAN):
        totals = _range_reduce(np.add, stats.sums[aggregate.value], low, high, 0.0)
    elif aggregate.agg is AggregateFunction.MIN:
        lows = _range_reduce(np.minimum, stats.mins[aggregate.value], low, high, np.inf)
    elif aggregate.agg is AggregateFunction.MAX:
        highs = _range_reduce(np.maximum, stats.maxs[aggregate.value], low, high, -np.inf)
    return finalize(aggregate, counts, totals, lows, highs)


# --- batch ----------------------------------------------------------------------


def entity_codes(
    batch: pa.RecordBatch, key_columns: Sequence[str]
) -> tuple[np.ndarray, list[tuple]]:
    """A dense code per row for its entity (the tuple of key values), and the tuples."""
    if len(key_columns) == 1:
        encoded = pc.dictionary_encode(batch.column(key_columns[0]))
        codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        return codes, [(value,) for value in encoded.dictionary.to_pylist()]
    keys = zip(*(batch.column(name).to_pylist() for name in key_columns), strict=True)
    lookup: dict[tuple, int] = {}
    codes = np.fromiter((lookup.setdefault(key, len(lookup)) for key in keys), np.int64)
    return codes, list(lookup)


@dataclasses.dataclass
class EntityBlocks:
    """A batch's rows grouped by (entity, block) for one aggregate group.

    `segments` holds, per (entity, block) present, the key and the row indices.
    """

    periods: np.ndarray
    segments: list[tuple[tuple, np.ndarray]]

    @classmethod
    def of(cls, batch: pa.RecordBatch, group: AggregateGroup, timestamp_column: str):
        seconds = batch.column(timestamp_column).to_numpy(zero_copy_only=False)
        periods = np.floor_divide(seconds, group.period_seconds)
        blocks = np.floor_divide(periods, group.block_periods)
        codes, entities = entity_codes(batch, group.key_columns)
        order = np.lexsort((blocks, codes))
        changes = (np.diff(codes[order]) != 0) | (np.diff(blocks[order]) != 0)
        segments = [
            ((entities[codes[rows[0]]], int(blocks[rows[0]])), rows)
            for rows in np.split(order, np.flatnonzero(changes) + 1)
            if len(rows)
        ]
        return cls(periods, segments)


def block_period_stats(
    batch: pa.RecordBatch, group: AggregateGroup, timestamp_column: str
) -> list[tuple[tuple[tuple, int], PeriodStats]]:
    """((entity, block), PeriodStats of the batch's rows of that entity and block)
    for every (entity, block) present, in (entity code, block) order.

    One grouping of the whole batch by (entity, period) serves every segment: a
    batch of a few thousand rows spread over a year touches a few hundred
    (entity, block) pairs, and a pass per pair cost more than the pair's rows.
    Each segment's arrays are slices of the batch-wide ones. Sums and counts
    are bincounts in row order, as PeriodStats.from_rows computes them, so
    every value is the same to the bit.
    """
    seconds = batch.column(timestamp_column).to_numpy(zero_copy_only=False)
    periods = np.floor_divide(seconds, group.period_seconds)
    codes, entities = entity_codes(batch, group.key_columns)
    if not len(periods):
        return []
    order = np.lexsort((periods, codes))
    sorted_codes, sorted_periods = codes[order], periods[order]
    starts_group = np.r_[
        True, (sorted_codes[1:] != sorted_codes[:-1]) | (sorted_periods[1:] != sorted_periods[:-1])
    ]
    group_starts = np.flatnonzero(starts_group)
    size = len(group_starts)
    group_of_row = np.empty(len(periods), np.int64)
    group_of_row[order] = np.cumsum(starts_group) - 1
    group_codes, group_periods = sorted_codes[group_starts], sorted_periods[group_starts]
    counts = np.bincount(group_of_row, minlength=size)
    sums, mins, maxs, present = {}, {}, {}, {}
    for name in group.value_columns:
        column = missing_as_nan(batch.column(name))
        has_value = ~np.isnan(column)
        sums[name] = np.bincount(
            group_of_row, weights=np.where(has_value, column, 0.0), minlength=size
        )
        # min and max do not depend on the order, so sorted runs can be reduced.
        mins[name] = np.minimum.reduceat(np.where(has_value, column, np.inf)[order], group_starts)
        maxs[name] = np.maximum.reduceat(np.where(has_value, column, -np.inf)[order], group_starts)
        present[name] = np.bincount(group_of_row, weights=has_value, minlength=size).astype(
            np.int64
        )
    group_blocks = np.floor_divide(group_periods, group.block_periods)
    new_segment = np.r_[
        True, (group_codes[1:] != group_codes[:-1]) | (group_blocks[1:] != group_blocks[:-1])
    ]
    bounds = [*np.flatnonzero(new_segment).tolist(), size]
    segments = []
    for start, end in itertools.pairwise(bounds):
        part = slice(start, end)
        stats = PeriodStats(
            group_periods[part],
            counts[part],
            {name: column[part] for name, column in sums.items()},
            {name: column[part] for name, column in mins.items()},
            {name: column[part] for name, column in maxs.items()},
            {name: column[part] for name, column in present.items()},
        )
        segments.append(((entities[group_codes[start]], int(group_blocks[start])), stats))
    return segments


class BlockStatsDoFn(beam.DoFn):
    """RecordBatch -> ((entity, block), PeriodStats) of its rows, per (entity, block).

    The stats of periods in the last W of a block also go to the next block,
    whose first windows reach back into this one.
    """

    def __init__(self, group: AggregateGroup, timestamp_column: str):
        self._group = group
        self._timestamp_column = timestamp_column

    def process(self, batch: pa.RecordBatch) -> Iterable:
        group = self._group
        spill_start = group.block_periods - group.max_window_periods
        for (entity, block), stats in block_period_stats(batch, group, self._timestamp_column):
            yield (entity, block), stats
            tail = stats.periods - block * group.block_periods >= spill_start
            if tail.any():
                yield (entity, block + 1), stats.select(tail)


def missing_as_nan(column: pa.Array) -> np.ndarray:
    """A numeric column as float64, NaN where the value is missing."""
    return pc.cast(column, pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False)


class MergePeriodStats(beam.CombineFn):
    """Merges PeriodStats of one (entity, block); the accumulator never exceeds
    (B + W) / P periods, because each input covers periods of that span only."""

    def create_accumulator(self) -> list:
        return []

    def add_input(self, accumulator: list, stats: PeriodStats) -> list:
        accumulator.append(stats)
        if len(accumulator) >= 32:
            accumulator[:] = [PeriodStats.merge(accumulator)]
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[list]) -> list:
        parts = [stats for accumulator in accumulators for stats in accumulator]
        return [PeriodStats.merge(parts)] if parts else []

    def extract_output(self, accumulator: list) -> PeriodStats | None:
        return PeriodStats.merge(accumulator) if accumulator else None


def _block_window_values(element, group: AggregateGroup):
    """((entity, block), stats) -> ((entity, block), (query periods, {name: values}))
    for the periods of the block that hold rows."""
    (entity, block), stats = element
    own = stats.periods >= block * group.block_periods
    query = stats.periods[own]
    values = {
        aggregate.name: window_values(stats, query, aggregate) for aggregate in group.aggregates
    }
    return (entity, block), (query, values)


class BlockValuesCache:
    """Window values per (entity, block), looked up in a side input, kept for reuse
    up to `max_bytes` (least recently used out first).

    A batch touches many (entity, block)s and the next batch mostly the same
    ones; each lookup in a runner's side input decodes the block again.
    """

    def __init__(self, max_bytes: int):
        self._max_bytes = max_bytes
        self._entries: collections.OrderedDict = collections.OrderedDict()
        self._bytes = 0

    def get(self, key, lookup):
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            return entry
        found = list(lookup[key])
        if len(found) != 1:
            raise ValueError(
                f"expected one set of window values for {key!r}, got {len(found)}; "
                "the statistics and the rows disagree"
            )
        entry = found[0]
        query, values = entry
        size = query.nbytes + sum(array.nbytes for array in values.values())
        self._entries[key] = entry
        self._bytes += size
        while self._bytes > self._max_bytes and len(self._entries) > 1:
            _, (old_query, old_values) = self._entries.popitem(last=False)
            self._bytes -= old_query.nbytes + sum(a.nbytes for a in old_values.values())
        return entry


class _JoinValuesDoFn(beam.DoFn):
    """RecordBatch -> the same rows with every group's aggregate columns appended,
    from the window values of each group (side inputs keyed by (entity, block))."""

    # Per worker: enough for every block of a few thousand entities' busy periods.
    CACHE_BYTES = 256 << 20

    def __init__(self, groups: Sequence[AggregateGroup], timestamp_column: str):
        self._groups = list(groups)
        self._timestamp_column = timestamp_column
        self._rows_joined = Metrics.counter("preprocess", "aggregate_rows")

    def start_bundle(self):
        # Side inputs may differ between bundles of different windows; batch runs
        # have one window, and a bundle reuses what it looked up.
        self._caches = [BlockValuesCache(self.CACHE_BYTES) for _ in self._groups]

    def process(self, batch: pa.RecordBatch, *group_values) -> Iterable[pa.RecordBatch]:
        for group, lookup, cache in zip(self._groups, group_values, self._caches, strict=True):
            grouped = EntityBlocks.of(batch, group, self._timestamp_column)
            columns = {
                a.name: np.empty(batch.num_rows, dtype=np.int64 if _is_count(a) else np.float64)
                for a in group.aggregates
            }
            for key, rows in grouped.segments:
                query, values = cache.get(key, lookup)
                row_periods = grouped.periods[rows]
                positions = np.searchsorted(query, row_periods)
                found = query[np.minimum(positions, len(query) - 1)] if len(query) else query
                if not len(query) or not np.array_equal(found, row_periods):
                    raise ValueError(
                        f"a row's period has no window value in {key!r}; "
                        "the statistics and the rows disagree"
                    )
                for name, column in columns.items():
                    column[rows] = values[name][positions]
            for aggregate in group.aggregates:
                batch = batch.append_column(
                    aggregate.name,
                    pa.array(columns[aggregate.name], type=aggregate_arrow_type(aggregate)),
                )
        self._rows_joined.inc(batch.num_rows)
        yield batch


def _is_count(aggregate: Aggregate) -> bool:
    return aggregate.agg is AggregateFunction.COUNT


class BlockWindowValues(beam.PTransform):
    """PCollection[pa.RecordBatch] of rows -> ((entity, block), (query periods,
    {aggregate name: values})) for one aggregate group: the value of each of its
    aggregates for every period of the block that holds rows."""

    def __init__(self, group: AggregateGroup, timestamp_column: str):
        super().__init__()
        self._group = group
        self._timestamp_column = timestamp_column

    def expand(self, batches):
        return (
            batches
            | "BlockStats" >> beam.ParDo(BlockStatsDoFn(self._group, self._timestamp_column))
            | "MergePeriodStats" >> beam.CombinePerKey(MergePeriodStats())
            | "WindowValues" >> beam.Map(_block_window_values, self._group)
        )


class JoinAggregates(beam.PTransform):
    """Adds every aggregate of the spec as a column of the validated rows.

    Input: bounded PCollection[pa.RecordBatch] (schema of validated rows).
    Output: the same rows in the same batches, with the aggregate columns
    appended in spec order.

    Only small per-period statistics are grouped by key. The rows themselves
    wait for the window values in files under `spill_dir` (transforms.spill),
    then each batch looks its values up in side inputs keyed by (entity, block),
    so no runner ever shuffles or holds the rows. `spill_dir` must be visible
    to every worker.
    """

    def __init__(self, spec: DatasetSpec, spill_dir: str):
        super().__init__()
        self._spec = spec
        self._groups = group_aggregates(spec)
        self._spill_dir = spill_dir

    def expand(self, batches):
        if not self._groups:
            return batches
        timestamp = self._spec.timestamp_column
        group_values = [
            batches | f"WindowValues[{group.label}]" >> BlockWindowValues(group, timestamp)
            for group in self._groups
        ]
        joined = (
            batches
            | "SpillRows" >> SpillToFiles(self._spill_dir)
            | "JoinValues"
            >> beam.ParDo(
                _JoinValuesDoFn(self._groups, timestamp),
                *(beam.pvalue.AsMultiMap(values) for values in group_values),
            )
        )
        names = rows_schema(self._spec).names
        return joined | "SpecOrder" >> beam.Map(lambda batch: batch.select(names))
