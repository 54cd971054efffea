"""Descriptive statistics of Arrow RecordBatches: one Beam CombineFn, one PTransform.

TensorFlow Data Validation would be the usual tool, but its newest release pins
TensorFlow, pyarrow and tfx-bsl below the versions this project runs, so the
statistics that the anomaly checks (`pipeline/anomalies.py`) and the run report
(`pipeline/report.py`) read are computed here, over the same RecordBatches the
pipeline already carries: the flat validated rows and the list-typed batches of
`tft_beam.TransformDataset(output_record_batches=True)`.

`StatisticsCombineFn.extract_output` returns a JSON-serializable dict:

    {"num_rows": N, "columns": {name: column statistics}}

numeric column:     kind, count, missing, min, max, mean, std, quantiles (11: 0 %,
                    10 %, ..., 100 %), histogram {edges (21), counts (20)},
                    sample_count (values behind quantiles and histogram),
                    integer_valued, and nan_count / inf_count when there are any
categorical column: kind, count, missing, unique (or null with unique_at_least),
                    top_values [[value, count], ...], and value_counts for
                    integer values (ids) while every distinct value is counted

`count` counts non-missing values (a list contributes each element), `missing`
counts rows without any value: a null, or an empty list. A column absent from a
batch is skipped for that batch, so its `missing` counts only rows of batches
that carried it.

Quantiles (numpy.quantile's linear method) and histograms are exact while a
numeric column has at most `sample_size` distinct finite values, from their
counts, and otherwise come from a bottom-k sample (see `value_priorities`):
every finite value gets a pseudo-random 64-bit priority derived from the
content of its row, and the sample is the `sample_size` values with the
smallest (priority, value). Because a priority depends on nothing but the row,
the sample is the same however the runner splits the input into bundles and in
whichever order it merges accumulators, and it holds every value when a column
has at most `sample_size` finite values, which keeps quantiles and histograms
exact there too.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

NUMERIC = "numeric"
CATEGORICAL = "categorical"
KINDS = (NUMERIC, CATEGORICAL)
QUANTILE_LEVELS = tuple(i / 10 for i in range(11))
HISTOGRAM_BINS = 20

# splitmix64's finalizer: a bijection on 64-bit words whose output bits each
# depend on every input bit, so sums and products of raw values become
# well-spread priorities.
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_BYTE_BASE = np.uint64(0x100000001B3)  # odd, so powers of it never become 0 mod 2**64
_NULL_VALUE = np.uint64(0x5BD1E9955BD1E995)
_ROW_SEED = np.uint64(0x2545F4914F6CDD1D)


def _mix(words: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer, element-wise on uint64 (wrapping arithmetic is intended)."""
    z = words.astype(np.uint64, copy=True)
    z ^= z >> np.uint64(30)
    z *= _MIX_1
    z ^= z >> np.uint64(27)
    z *= _MIX_2
    z ^= z >> np.uint64(31)
    return z


def _name_word(name: str) -> np.uint64:
    """A stable 64-bit word for a column name (Python's hash() is salted per process)."""
    data = np.frombuffer(name.encode("utf-8"), dtype=np.uint8).astype(np.uint64) + np.uint64(1)
    powers = _powers(len(data))
    return np.uint64(_mix(np.array([np.sum(data * powers, dtype=np.uint64)]))[0])


def _powers(length: int) -> np.ndarray:
    """[1, B, B**2, ...] modulo 2**64, `length` words."""
    powers = np.full(length, _BYTE_BASE, dtype=np.uint64)
    if length:
        powers[0] = 1
    return np.cumprod(powers, dtype=np.uint64)


def _segment_sums(words: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Wrapping sums of consecutive segments of `words` with the given lengths
    (a zero length gives 0, which np.add.reduceat would not)."""
    totals = np.zeros(len(words) + 1, dtype=np.uint64)
    np.cumsum(words, dtype=np.uint64, out=totals[1:])
    ends = np.cumsum(lengths)
    return totals[ends] - totals[ends - lengths]


def _bytes_words(values: pa.Array) -> np.ndarray:
    """A polynomial hash of each string or binary value, vectorised over the data buffer."""
    values = values.cast(pa.large_binary())
    _, offsets_buffer, data_buffer = values.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int64)[
        values.offset : values.offset + len(values) + 1
    ]
    lengths = np.diff(offsets)
    if data_buffer is None or offsets[-1] == offsets[0]:
        data = np.empty(0, dtype=np.uint64)
    else:
        data = np.frombuffer(data_buffer, dtype=np.uint8)[offsets[0] : offsets[-1]]
        data = data.astype(np.uint64) + np.uint64(1)  # so that b"\0" differs from b""
    # Each byte's position within its own value picks its power of the base.
    starts = offsets[:-1] - offsets[0]
    positions = np.arange(len(data)) - np.repeat(starts, lengths)
    sums = _segment_sums(data * _powers(int(lengths.max(initial=0)))[positions], lengths)
    return sums ^ (lengths.astype(np.uint64) * _GOLDEN)


def _value_words(values: pa.Array) -> np.ndarray | None:
    """One uint64 per value (nulls included) that identifies the value, or None for
    types that carry no comparable content here (structs, nested lists, decimals)."""
    value_type = values.type
    if pa.types.is_dictionary(value_type):
        return _value_words(values.dictionary_decode())
    if pa.types.is_floating(value_type):
        floats = values.cast(pa.float64()).fill_null(0.0).to_numpy(zero_copy_only=False)
        # -0.0 == 0.0 and every NaN is the same missing-ish value: give them one word each.
        floats = np.where(np.isnan(floats), np.nan, floats + 0.0)
        words = floats.view(np.uint64)
    elif pa.types.is_integer(value_type) or pa.types.is_temporal(value_type):
        if pa.types.is_temporal(value_type):
            # Their storage integers (Arrow cannot cast every temporal type to int64).
            storage = pa.int32() if value_type.bit_width == 32 else pa.int64()
            values = values.view(storage)
        integers = values.cast(pa.int64(), safe=False).fill_null(0)
        words = integers.to_numpy(zero_copy_only=False).view(np.uint64)
    elif pa.types.is_boolean(value_type):
        words = values.fill_null(False).to_numpy(zero_copy_only=False).astype(np.uint64)
    elif _is_bytes_like(value_type):
        words = _bytes_words(values)
    else:
        return None
    words = _mix(words)
    if values.null_count:
        words[~values.is_valid().to_numpy(zero_copy_only=False)] = _NULL_VALUE
    return words


def _is_bytes_like(value_type: pa.DataType) -> bool:
    return (
        pa.types.is_string(value_type)
        or pa.types.is_large_string(value_type)
        or pa.types.is_binary(value_type)
        or pa.types.is_large_binary(value_type)
        or pa.types.is_fixed_size_binary(value_type)
    )


def _is_list_like(value_type: pa.DataType) -> bool:
    return (
        pa.types.is_list(value_type)
        or pa.types.is_large_list(value_type)
        or pa.types.is_fixed_size_list(value_type)
    )


def _list_lengths(column: pa.Array) -> np.ndarray:
    lengths = pc.list_value_length(column).fill_null(0)
    return lengths.to_numpy(zero_copy_only=False).astype(np.int64)


def row_words(batch: pa.RecordBatch, columns: Iterable[str] | None = None) -> np.ndarray:
    """One uint64 per row, a function of the row's content only.

    Every column takes part, in name order, so rows that differ anywhere (the
    record key makes raw rows unique) get unrelated words; columns of a type
    with no word (`_value_words`) are left out. A list contributes its elements
    in order and its length. With `columns`, only those take part.
    """
    words = np.full(batch.num_rows, _ROW_SEED, dtype=np.uint64)
    for name in sorted(batch.schema.names if columns is None else columns):
        column = batch.column(name)
        if _is_list_like(column.type):
            element_words = _value_words(column.flatten())
            if element_words is None:
                continue
            lengths = _list_lengths(column)
            positions = np.arange(len(element_words)) - np.repeat(
                np.cumsum(lengths) - lengths, lengths
            )
            element_words = _mix(element_words + positions.astype(np.uint64) * _GOLDEN)
            column_words = _segment_sums(element_words, lengths) ^ (
                lengths.astype(np.uint64) * _MIX_1
            )
        else:
            column_words = _value_words(column)
            if column_words is None:
                continue
        words = _mix(words * _GOLDEN + (column_words ^ _name_word(name)))
    return words


def value_priorities(row_word: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Sampling priority of each value: its row's word mixed with its position in
    the row's list, so the elements of one list get different priorities.

    Rows identical in every column share their priorities (they are
    indistinguishable), which only correlates their chance of being sampled.
    """
    return _mix(row_word + positions.astype(np.uint64) * _GOLDEN)


def flatten_column(column: pa.Array) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """(non-null values, row index of each value, position of each in its row's list).

    A flat column has one value per non-null row at position 0; a list column
    (list, large_list, fixed_size_list) has its elements, where a null or empty
    list contributes nothing and null elements are dropped.
    """
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if _is_list_like(column.type):
        if _is_list_like(column.type.value_type):
            raise TypeError(f"nested lists are not supported: {column.type}")
        lengths = _list_lengths(column)
        values = column.flatten()
        if len(values) == len(column) and np.all(lengths == 1):
            # One value per row, as every transformed feature has: no repeats needed.
            rows = np.arange(len(column), dtype=np.int64)
            positions = np.zeros(len(column), dtype=np.int64)
        else:
            rows = np.repeat(np.arange(len(column), dtype=np.int64), lengths)
            positions = np.arange(len(values), dtype=np.int64) - np.repeat(
                np.cumsum(lengths) - lengths, lengths
            )
        if pa.types.is_dictionary(values.type):
            values = values.dictionary_decode()
    else:
        values = column
        rows = np.arange(len(column), dtype=np.int64)
        positions = np.zeros(len(column), dtype=np.int64)
    if values.null_count:
        valid = values.is_valid()
        values = values.filter(valid)
        keep = valid.to_numpy(zero_copy_only=False)
        rows, positions = rows[keep], positions[keep]
    return values, rows, positions


def _rows_with_values(rows: np.ndarray) -> int:
    """Distinct row indices in `rows`, which flatten_column yields in non-decreasing order."""
    return int(np.count_nonzero(np.diff(rows))) + 1 if len(rows) else 0


def _as_float64(values: pa.Array, name: str) -> np.ndarray:
    value_type = values.type
    if not (
        pa.types.is_integer(value_type)
        or pa.types.is_floating(value_type)
        or pa.types.is_boolean(value_type)
    ):
        raise TypeError(f"numeric column {name!r} holds {value_type} values")
    # Unchecked: integers beyond 2**53 round, as they would in any float statistic.
    return values.cast(pa.float64(), safe=False).to_numpy(zero_copy_only=False)


def _value_counts(values: np.ndarray, whole: bool) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(values, return_counts=True) of finite float64 values (`whole`:
    all are integers); by a count over their range when they are integers in a
    narrow one (ids, buckets, counts), which costs a pass instead of a sort."""
    low, high = values.min(), values.max()
    if whole and high - low < 4 * len(values):
        counts = np.bincount((values - low).astype(np.int64))
        present = np.flatnonzero(counts)
        return present + low, counts[present]
    return np.unique(values, return_counts=True)


class NumericAccumulator:
    """Moments, extremes, exact value counts while they are few, and a bottom-k
    sample of one numeric column.

    Moments use Chan et al.'s pairwise update, so merging accumulators is as
    accurate as one pass. NaN and ±inf are counted but kept out of min, max,
    mean, std, the value counts and the sample: one inf would make a mean or a
    histogram useless.

    Quantiles and the histogram come from the exact counts of distinct values
    while the column has at most `sample_size` of them (counts, ids, calendar
    parts: exact however many rows), else from the sample. The counts also
    cover what the sample cannot: rows that are identical in every column of
    their batch share a priority, so a batch holding only a few low-cardinality
    columns would otherwise be sampled whole values at a time.
    """

    def __init__(self, sample_size: int):
        self.sample_size = sample_size
        self.count = 0  # non-missing values, NaN and inf included
        self.missing = 0
        self.nan_count = 0
        self.inf_count = 0
        self.finite_count = 0
        self.mean = 0.0
        self.m2 = 0.0  # sum of squared deviations from the mean
        self.min = math.inf
        self.max = -math.inf
        self.integer_valued = True  # every finite value is a whole number
        self.sample_priorities = np.empty(0, dtype=np.uint64)
        self.sample_values = np.empty(0, dtype=np.float64)
        # Largest priority in the sample once it has been trimmed to sample_size.
        self.priority_bound: np.uint64 | None = None
        # Sorted distinct finite values and their counts, None once there are
        # more than sample_size of them; unfolded per-batch counts wait in pending.
        self.distinct: tuple[np.ndarray, np.ndarray] | None = (
            np.empty(0, dtype=np.float64),
            np.empty(0, dtype=np.int64),
        )
        self.pending: list[tuple[np.ndarray, np.ndarray]] = []
        self.pending_length = 0

    def add(self, values: np.ndarray, priorities: np.ndarray, missing: int) -> None:
        """Adds float64 `values` (with their sampling priorities) and `missing` rows."""
        self.count += len(values)
        self.missing += missing
        finite = np.isfinite(values)
        nan_count = int(np.count_nonzero(np.isnan(values)))
        self.nan_count += nan_count
        self.inf_count += len(values) - int(np.count_nonzero(finite)) - nan_count
        values, priorities = values[finite], priorities[finite]
        if len(values):
            batch_mean = float(values.mean())
            batch_m2 = float(np.square(values - batch_mean).sum())
            self._merge_moments(len(values), batch_mean, batch_m2)
            self.min = min(self.min, float(values.min()))
            self.max = max(self.max, float(values.max()))
            whole = bool(np.all(values == np.floor(values)))
            self.integer_valued = self.integer_valued and whole
            self._add_sample(priorities, values)
            if self.distinct is not None:  # once dropped, counting them buys nothing
                self._add_distinct(*_value_counts(values, whole))

    def merge(self, other: NumericAccumulator) -> None:
        self.count += other.count
        self.missing += other.missing
        self.nan_count += other.nan_count
        self.inf_count += other.inf_count
        if other.finite_count:
            self._merge_moments(other.finite_count, other.mean, other.m2)
            self.min = min(self.min, other.min)
            self.max = max(self.max, other.max)
            self.integer_valued = self.integer_valued and other.integer_valued
            self._add_sample(other.sample_priorities, other.sample_values)
            if other.distinct is None:
                self._drop_distinct()
            else:
                for values, counts in [other.distinct, *other.pending]:
                    self._add_distinct(values, counts)

    def _merge_moments(self, count: int, mean: float, m2: float) -> None:
        total = self.finite_count + count
        delta = mean - self.mean
        self.mean += delta * count / total
        self.m2 += m2 + delta * delta * self.finite_count * count / total
        self.finite_count = total

    def _add_distinct(self, values: np.ndarray, counts: np.ndarray) -> None:
        if self.distinct is None:
            return
        self.pending.append((values, counts.astype(np.int64)))
        self.pending_length += len(values)
        # Folding once the pending counts outgrow the folded ones (and a floor)
        # keeps the sorting cost per value constant.
        if self.pending_length > max(len(self.distinct[0]), self.sample_size):
            self.fold()

    def _drop_distinct(self) -> None:
        self.distinct, self.pending, self.pending_length = None, [], 0

    def fold(self) -> None:
        """Folds pending value counts into `distinct`, dropping them past sample_size."""
        if self.distinct is None or not self.pending:
            return
        values = np.concatenate([self.distinct[0], *(v for v, _ in self.pending)])
        counts = np.concatenate([self.distinct[1], *(c for _, c in self.pending)])
        self.pending, self.pending_length = [], 0
        distinct, index = np.unique(values, return_inverse=True)
        if len(distinct) > self.sample_size:
            # Whether this happens depends only on the values, not on how the
            # runner bundled them, so the choice of source stays deterministic.
            self._drop_distinct()
            return
        self.distinct = (distinct, np.bincount(index, weights=counts).astype(np.int64))

    def _add_sample(self, priorities: np.ndarray, values: np.ndarray) -> None:
        if self.priority_bound is not None:
            # A full sample already holds sample_size values at or below the bound,
            # so nothing above it can enter: most values of a large column stop here.
            entering = priorities <= self.priority_bound
            priorities, values = priorities[entering], values[entering]
        self.sample_priorities = np.concatenate([self.sample_priorities, priorities])
        self.sample_values = np.concatenate([self.sample_values, values])
        # Trimming only past twice the size keeps the sort cost per value constant.
        if len(self.sample_values) > 2 * self.sample_size:
            self.trim()

    def trim(self) -> None:
        """Keeps the `sample_size` values with the smallest (priority, value); ties in
        both are the same value, so the kept multiset is well defined."""
        if len(self.sample_values) <= self.sample_size:
            return
        priorities, values = self.sample_priorities, self.sample_values
        # A linear-time selection: only ties at the bound need sorting by value.
        bound = np.partition(priorities, self.sample_size - 1)[self.sample_size - 1]
        keep = priorities < bound
        tied = np.flatnonzero(priorities == bound)
        wanted = self.sample_size - int(np.count_nonzero(keep))
        keep[tied[np.argsort(values[tied], kind="stable")[:wanted]]] = True
        self.sample_priorities, self.sample_values = priorities[keep], values[keep]
        self.priority_bound = bound

    def extract(self) -> dict[str, Any]:
        self.trim()
        self.fold()
        stats: dict[str, Any] = {"kind": NUMERIC, "count": self.count, "missing": self.missing}
        if self.finite_count:
            if self.distinct is not None:
                values, counts = self.distinct
            else:
                values = np.sort(self.sample_values)
                counts = np.ones(len(values), dtype=np.int64)
            stats.update(
                min=self.min,
                max=self.max,
                mean=self.mean,
                std=math.sqrt(max(self.m2, 0.0) / self.finite_count),
                quantiles=weighted_quantiles(values, counts, QUANTILE_LEVELS),
                histogram=equal_width_histogram(values, counts),
                sample_count=int(counts.sum()),
                integer_valued=self.integer_valued,
            )
        else:
            stats.update(dict.fromkeys(("min", "max", "mean", "std", "quantiles", "histogram")))
            stats["sample_count"] = 0
        if self.nan_count:
            stats["nan_count"] = self.nan_count
        if self.inf_count:
            stats["inf_count"] = self.inf_count
        return stats


def weighted_quantiles(
    sorted_values: np.ndarray, counts: np.ndarray, levels: Sequence[float]
) -> list[float]:
    """numpy.quantile's default (linear) quantiles of the values repeated `counts` times,
    without repeating them."""
    total = int(counts.sum())
    ends = np.cumsum(counts)  # the value at sorted position i has the first end > i
    positions = (total - 1) * np.asarray(levels, dtype=np.float64)
    below = np.floor(positions)
    fraction = positions - below
    above = np.minimum(below + 1, total - 1)
    low = sorted_values[np.searchsorted(ends, below, side="right")]
    high = sorted_values[np.searchsorted(ends, above, side="right")]
    # numpy's own interpolation, so that exact quantiles equal numpy.quantile's bit for bit.
    difference = high - low
    result = np.where(
        fraction >= 0.5, high - difference * (1 - fraction), low + difference * fraction
    )
    return [float(q) for q in result]


def equal_width_histogram(
    sorted_values: np.ndarray, counts: np.ndarray, bins: int = HISTOGRAM_BINS
) -> dict:
    """{"edges": bins + 1 floats, "counts": bins ints} of the values, each repeated
    `counts` times, over [min, max] of the values.

    Bins are [edge_i, edge_i+1), the last one closed, like numpy.histogram. When
    every value is equal all of them are in the first bin, and all edges equal it.
    """
    low, high = float(sorted_values[0]), float(sorted_values[-1])
    if low == high:
        histogram = np.zeros(bins, dtype=np.int64)
        histogram[0] = counts.sum()
        return {"edges": [low] * (bins + 1), "counts": histogram.tolist()}
    edges = np.linspace(low, high, bins + 1)
    # Binning against the edges themselves (not (x - low) / width) keeps every
    # value on the side of an edge that a reader comparing with the edges expects.
    index = np.clip(np.searchsorted(edges, sorted_values, side="right") - 1, 0, bins - 1)
    histogram = np.bincount(index, weights=counts, minlength=bins)
    return {"edges": [float(e) for e in edges], "counts": [int(c) for c in histogram]}


class CategoricalAccumulator:
    """Exact value counts of one categorical column, up to a bound on distinct values.

    Counts are kept as Arrow arrays and merged with a group-by, not in a Python
    dict: a high-cardinality column such as a record key would otherwise cost a
    Python operation per value. Past `max_unique` distinct values the counts
    become a Misra-Gries summary (mergeable, Agarwal et al. 2012): counts are then
    lower bounds, each short of the truth by at most count / (max_unique + 1),
    which still finds every value more frequent than that; the distinct count is
    then unknown.
    """

    def __init__(self, max_unique: int):
        self.max_unique = max_unique
        self.count = 0
        self.missing = 0
        self.overflowed = False
        self.values: pa.Array | None = None  # distinct values, in no particular order
        self.counts = np.empty(0, dtype=np.int64)  # count of each of `values`
        # Per-batch value counts not yet folded into values/counts.
        self.pending: list[tuple[pa.Array, np.ndarray]] = []
        self.pending_length = 0

    def add(self, values: pa.Array, missing: int) -> None:
        """Adds non-null `values` and `missing` rows."""
        self.count += len(values)
        self.missing += missing
        if len(values):
            value_counts = pc.value_counts(_category_keys(values))
            counts = value_counts.field("counts").to_numpy(zero_copy_only=False)
            self._add_counts(value_counts.field("values"), counts.astype(np.int64))

    def merge(self, other: CategoricalAccumulator) -> None:
        self.count += other.count
        self.missing += other.missing
        self.overflowed = self.overflowed or other.overflowed
        if other.values is not None:
            self._add_counts(other.values, other.counts)
        for values, counts in other.pending:
            self._add_counts(values, counts)

    def _add_counts(self, values: pa.Array, counts: np.ndarray) -> None:
        self.pending.append((values, counts))
        self.pending_length += len(values)
        # Folding once the pending counts outgrow the folded ones (and a floor)
        # keeps the group-by cost per value constant.
        if self.pending_length > max(len(self.counts), _MIN_FOLD_LENGTH):
            self.fold()

    def fold(self) -> None:
        """Folds pending counts into values/counts and applies the distinct-value bound."""
        if not self.pending:
            return
        parts = ([(self.values, self.counts)] if self.values is not None else []) + self.pending
        table = pa.table(
            {
                "value": pa.concat_arrays([values for values, _ in parts]),
                "count": np.concatenate([counts for _, counts in parts]),
            }
        )
        grouped = table.group_by("value").aggregate([("count", "sum")])
        self.values = grouped.column("value").combine_chunks()
        self.counts = grouped.column("count_sum").to_numpy().astype(np.int64)
        self.pending, self.pending_length = [], 0
        # Reducing only past twice the bound keeps the cost per value constant.
        if len(self.counts) > 2 * self.max_unique:
            cut = np.sort(self.counts)[::-1][self.max_unique]
            keep = self.counts > cut
            self.values = self.values.filter(pa.array(keep))
            self.counts = self.counts[keep] - cut
            self.overflowed = True

    def extract(self, top_k: int) -> dict[str, Any]:
        self.fold()
        values = self.values if self.values is not None else pa.array([], pa.large_binary())
        exact = not self.overflowed and len(values) <= self.max_unique
        table = pa.table({"value": values, "count": self.counts})
        ranked = table.take(
            pc.sort_indices(table, sort_keys=[("count", "descending"), ("value", "ascending")])
        ).slice(0, top_k)
        stats: dict[str, Any] = {
            "kind": CATEGORICAL,
            "count": self.count,
            "missing": self.missing,
            "unique": len(values) if exact else None,
            "top_values": [
                [display_value(value), count]
                for value, count in zip(
                    ranked.column("value").to_pylist(),
                    ranked.column("count").to_pylist(),
                    strict=True,
                )
            ],
        }
        if not exact:
            stats["unique_at_least"] = self.max_unique
        if self.overflowed:
            stats["top_values_approximate"] = True
        if exact and pa.types.is_integer(values.type):
            # Ids (vocabulary, bucket, hash outputs): every count, so that a reader
            # can count the values at or beyond any bound, e.g. the
            # out-of-vocabulary ids at or above a vocabulary's size.
            by_value = table.take(pc.sort_indices(table, sort_keys=[("value", "ascending")]))
            stats["value_counts"] = [
                [value, count]
                for value, count in zip(
                    by_value.column("value").to_pylist(),
                    by_value.column("count").to_pylist(),
                    strict=True,
                )
            ]
        return stats


_MIN_FOLD_LENGTH = 1 << 16


def _category_keys(values: pa.Array) -> pa.Array:
    """One key type per kind of value, so batches of one column always concatenate:
    raw batches carry strings and transformed ones large_binary, and integer
    widths may differ. Bytes are decoded only for display."""
    if _is_bytes_like(values.type):
        return values.cast(pa.large_binary())
    if pa.types.is_integer(values.type):
        return values.cast(pa.int64())
    if pa.types.is_floating(values.type):
        return values.cast(pa.float64())
    return values


def display_value(value: Any) -> Any:
    """A JSON value for a category: bytes decoded as UTF-8, undecodable bytes escaped."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    return value


class StatisticsAccumulator:
    """Rows seen and one accumulator per column."""

    def __init__(self, columns: dict[str, NumericAccumulator | CategoricalAccumulator]):
        self.num_rows = 0
        self.columns = columns


class StatisticsCombineFn(beam.CombineFn):
    """pa.RecordBatch elements -> one statistics dict (see the module docstring).

    `columns` lists (name, kind), kind "numeric" or "categorical". A column may
    be flat (float, int, bool, string, binary; nullable) or a list of those; a
    column missing from a batch is skipped for that batch. Any other batch
    columns only feed the sampling priorities. A numeric column holding
    non-numeric values raises TypeError, naming it.

    `row_id_columns` names columns that identify a row, such as the record key.
    When a batch has them all, only they feed the sampling priorities, which
    spares hashing every column of every row; rows with the same key then share
    their priorities. Otherwise every column does.
    """

    def __init__(
        self,
        columns: Sequence[tuple[str, str]],
        sample_size: int = 10_000,
        top_k: int = 20,
        max_unique: int = 100_000,
        row_id_columns: Sequence[str] = (),
    ):
        super().__init__()
        columns = [(str(name), str(kind)) for name, kind in columns]
        names = [name for name, _ in columns]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate column names in {names}")
        for name, kind in columns:
            if kind not in KINDS:
                raise ValueError(f"column {name!r}: kind must be one of {KINDS}, got {kind!r}")
        for parameter, value in (
            ("sample_size", sample_size),
            ("top_k", top_k),
            ("max_unique", max_unique),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{parameter} must be a positive integer, got {value!r}")
        self._columns = columns
        self._row_id_columns = tuple(row_id_columns)
        self._sample_size = sample_size
        self._top_k = top_k
        self._max_unique = max_unique

    def create_accumulator(self) -> StatisticsAccumulator:
        return StatisticsAccumulator(
            {
                name: NumericAccumulator(self._sample_size)
                if kind == NUMERIC
                else CategoricalAccumulator(self._max_unique)
                for name, kind in self._columns
            }
        )

    def add_input(
        self, accumulator: StatisticsAccumulator, batch: pa.RecordBatch
    ) -> StatisticsAccumulator:
        accumulator.num_rows += batch.num_rows
        present = set(batch.schema.names)
        batch_row_words = None  # hashed once per batch, and only for numeric columns
        for name, column_accumulator in accumulator.columns.items():
            if name not in present:
                continue
            values, rows, positions = flatten_column(batch.column(name))
            missing = batch.num_rows - _rows_with_values(rows)
            if isinstance(column_accumulator, NumericAccumulator):
                if batch_row_words is None:
                    batch_row_words = row_words(batch, self._row_words_columns(present))
                priorities = value_priorities(batch_row_words[rows], positions)
                column_accumulator.add(_as_float64(values, name), priorities, missing)
            else:
                column_accumulator.add(values, missing)
        return accumulator

    def _row_words_columns(self, present: set[str]) -> tuple[str, ...] | None:
        if self._row_id_columns and present.issuperset(self._row_id_columns):
            return self._row_id_columns
        return None

    def merge_accumulators(
        self, accumulators: Iterable[StatisticsAccumulator]
    ) -> StatisticsAccumulator:
        accumulators = iter(accumulators)
        merged = next(accumulators)  # Beam allows mutating the first accumulator
        for accumulator in accumulators:
            merged.num_rows += accumulator.num_rows
            for name, column_accumulator in accumulator.columns.items():
                merged.columns[name].merge(column_accumulator)
        return merged

    def compact(self, accumulator: StatisticsAccumulator) -> StatisticsAccumulator:
        # Shrinks what is shuffled between the combiner lifting and the final merge.
        for column_accumulator in accumulator.columns.values():
            if isinstance(column_accumulator, NumericAccumulator):
                column_accumulator.trim()
            column_accumulator.fold()
        return accumulator

    def extract_output(self, accumulator: StatisticsAccumulator) -> dict[str, Any]:
        columns = {}
        for name, column_accumulator in accumulator.columns.items():
            if isinstance(column_accumulator, NumericAccumulator):
                columns[name] = column_accumulator.extract()
            else:
                columns[name] = column_accumulator.extract(self._top_k)
        return {"num_rows": accumulator.num_rows, "columns": columns}


class ComputeStatistics(beam.PTransform):
    """PCollection[pa.RecordBatch] -> PCollection holding exactly one statistics dict.

    Bounded input in the global window (batch pipelines). An empty input still
    gives one dict, with num_rows 0 and every column's count 0. No dead-letter
    output: statistics read rows that validation already accepted. For
    TransformDataset's (RecordBatch, passthrough) pairs, map to the batch first.
    """

    def __init__(
        self,
        columns: Sequence[tuple[str, str]],
        sample_size: int = 10_000,
        top_k: int = 20,
        max_unique: int = 100_000,
        row_id_columns: Sequence[str] = (),
    ):
        super().__init__()
        self._combine_fn = StatisticsCombineFn(
            columns, sample_size, top_k, max_unique, row_id_columns
        )

    def expand(self, batches: beam.PCollection) -> beam.PCollection:
        # CombineGlobally emits extract_output(create_accumulator()) for an empty
        # input, which is what makes the output exactly one element.
        return batches | "CombineColumnStatistics" >> beam.CombineGlobally(self._combine_fn)


def numeric_and_categorical_columns(
    schema: pa.Schema, categorical: Iterable[str] = ()
) -> list[tuple[str, str]]:
    """(name, kind) for every column of `schema` that statistics can describe.

    Strings and binary are categorical; integers, floats and booleans numeric,
    except names in `categorical` (ids, such as vocabulary outputs, are integers
    whose per-value counts matter more than their mean). Lists count as their
    element type. Other types (timestamps, structs, decimals, nested lists) are
    left out: the pipeline's own batches never hold them.
    """
    forced = set(categorical)
    columns = []
    for field in schema:
        value_type = field.type
        if _is_list_like(value_type):
            value_type = value_type.value_type
        if pa.types.is_dictionary(value_type):
            value_type = value_type.value_type
        if _is_bytes_like(value_type):
            columns.append((field.name, CATEGORICAL))
        elif (
            pa.types.is_integer(value_type)
            or pa.types.is_floating(value_type)
            or pa.types.is_boolean(value_type)
        ):
            columns.append((field.name, CATEGORICAL if field.name in forced else NUMERIC))
    return columns


def spec_statistics_columns(spec) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(raw columns, transformed features) to describe for a dataset spec.

    Raw: every validated column and aggregate except the record key (unique per
    row, so its statistics say nothing). Transformed: every declared feature and
    the label; categorical outputs (vocabulary ids, buckets, hashes, crosses) as
    categorical, so that their statistics count each id.
    """
    from schemas.spec import Kind
    from transforms.validation import rows_schema

    raw = [
        column
        for column in numeric_and_categorical_columns(rows_schema(spec))
        if column[0] != spec.record_key
    ]
    transformed = [
        (name, CATEGORICAL if kind in (Kind.CATEGORICAL, Kind.STRING) else NUMERIC)
        for name, (kind, _) in spec.feature_kinds().items()
    ]
    transformed.append((spec.label, NUMERIC))
    return raw, transformed
