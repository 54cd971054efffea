"""Column statistics over RecordBatches, checked against NumPy and collections
computed directly on the same values (brute-force oracles), plus the merge and
empty-input contracts of the CombineFn and its PTransform."""

from __future__ import annotations

import collections
import json
import random

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.testing.util import assert_that, equal_to

from tests.support import test_pipeline
from transforms.statistics import (
    ComputeStatistics,
    NumericAccumulator,
    StatisticsCombineFn,
    numeric_and_categorical_columns,
)

LEVELS = np.linspace(0.0, 1.0, 11)


def single_pass(combine_fn: StatisticsCombineFn, batches: list[pa.RecordBatch]) -> dict:
    accumulator = combine_fn.create_accumulator()
    for batch in batches:
        accumulator = combine_fn.add_input(accumulator, batch)
    return combine_fn.extract_output(accumulator)


def brute_force_histogram(values: np.ndarray) -> tuple[list[float], list[int]]:
    """20 equal-width bins [e_i, e_i+1) between min and max, the last one closed."""
    low, high = float(values.min()), float(values.max())
    edges = [low + (high - low) * i / 20 for i in range(21)]
    edges[-1] = high
    counts = []
    for i in range(20):
        upper = values <= edges[i + 1] if i == 19 else values < edges[i + 1]
        counts.append(int(np.count_nonzero((values >= edges[i]) & upper)))
    return edges, counts


def taxi_like_batch(rows: int, seed: int) -> pa.RecordBatch:
    rng = np.random.default_rng(seed)
    fares = rng.gamma(2.0, 7.0, rows).round(2)
    fares[rng.random(rows) < 0.1] = np.nan  # becomes null below, not NaN
    return pa.RecordBatch.from_pydict(
        {
            "trip_id": pa.array([f"{seed}-{i:07d}" for i in range(rows)]),
            "fare": pa.array(fares, mask=np.isnan(fares)),
            "passengers": pa.array(rng.integers(1, 7, rows)),
            "payment": pa.array(
                rng.choice(["CARD", "CASH", "NOC", "DIS"], rows, p=[0.6, 0.3, 0.07, 0.03])
            ),
        }
    )


COLUMNS = [
    ("fare", "numeric"),
    ("passengers", "numeric"),
    ("payment", "categorical"),
    ("trip_id", "categorical"),
]


# --- numeric columns -----------------------------------------------------------


def test_numeric_statistics_match_numpy_on_a_flat_nullable_column():
    batches = [taxi_like_batch(700, seed) for seed in (1, 2, 3)]
    stats = single_pass(StatisticsCombineFn(COLUMNS, sample_size=5000), batches)
    fares = np.concatenate([b.column("fare").drop_null().to_numpy() for b in batches])
    nulls = sum(b.column("fare").null_count for b in batches)

    fare = stats["columns"]["fare"]
    assert stats["num_rows"] == 2100
    assert fare["kind"] == "numeric"
    assert fare["count"] == len(fares) == 2100 - nulls
    assert fare["missing"] == nulls > 0
    assert fare["min"] == fares.min()
    assert fare["max"] == fares.max()
    assert fare["mean"] == pytest.approx(fares.mean(), rel=1e-12)
    assert fare["std"] == pytest.approx(fares.std(ddof=0), rel=1e-12)
    assert fare["quantiles"] == pytest.approx(np.quantile(fares, LEVELS), rel=1e-12)
    edges, counts = brute_force_histogram(fares)
    assert fare["histogram"]["edges"] == pytest.approx(edges, rel=1e-12)
    assert fare["histogram"]["counts"] == counts
    assert sum(counts) == len(fares)
    assert "nan_count" not in fare and "inf_count" not in fare


def test_quantiles_and_histogram_are_exact_at_exactly_sample_size_values_with_duplicates():
    rng = np.random.default_rng(5)
    values = rng.integers(0, 30, 1000).astype(np.float64)  # many repeated values
    batches = [
        pa.RecordBatch.from_pydict({"v": pa.array(chunk)}) for chunk in np.array_split(values, 7)
    ]
    column = single_pass(StatisticsCombineFn([("v", "numeric")], sample_size=1000), batches)[
        "columns"
    ]["v"]
    assert column["quantiles"] == pytest.approx(np.quantile(values, LEVELS), abs=0)
    edges, counts = brute_force_histogram(values)
    assert column["histogram"]["edges"] == pytest.approx(edges, rel=1e-12)
    assert column["histogram"]["counts"] == counts
    assert column["sample_count"] == 1000


def test_few_distinct_values_give_exact_quantiles_however_many_rows():
    # One low-cardinality column and nothing else: every row with the same value
    # is identical, so only exact value counts (not a sample) can describe it.
    rng = np.random.default_rng(6)
    trips = np.minimum(rng.poisson(1.2, 30_000), 9)
    batches = [
        pa.RecordBatch.from_pydict({"trips": pa.array(chunk)}) for chunk in np.array_split(trips, 9)
    ]
    column = single_pass(StatisticsCombineFn([("trips", "numeric")], sample_size=100), batches)[
        "columns"
    ]["trips"]
    values = trips.astype(np.float64)
    assert column["quantiles"] == pytest.approx(np.quantile(values, LEVELS), rel=1e-12)
    assert column["histogram"]["counts"] == brute_force_histogram(values)[1]
    assert column["sample_count"] == 30_000
    assert column["integer_valued"] is True


def test_too_many_distinct_values_only_after_merging_still_matches_one_pass():
    # Each half has 300 distinct values, within sample_size; together 600 are not.
    rows = pa.RecordBatch.from_pydict(
        {"id": pa.array([f"r{i}" for i in range(600)]), "v": pa.array(np.arange(600) * 0.5)}
    )
    combine_fn = StatisticsCombineFn([("v", "numeric")], sample_size=400)
    halves = [
        combine_fn.add_input(combine_fn.create_accumulator(), rows.slice(start, 300))
        for start in (0, 300)
    ]
    merged = combine_fn.extract_output(combine_fn.merge_accumulators(halves))
    expected = single_pass(combine_fn, [rows])
    assert merged["columns"]["v"]["sample_count"] == 400
    for key, value in expected["columns"]["v"].items():
        if key in ("mean", "std"):  # float sums in another order
            assert merged["columns"]["v"][key] == pytest.approx(value, rel=1e-12)
        else:
            assert merged["columns"]["v"][key] == value, key
    assert merged["columns"]["v"]["integer_valued"] is False


def test_merging_few_distinct_values_with_too_many_gives_the_one_pass_sample():
    few = pa.RecordBatch.from_pydict(
        {"id": pa.array([f"a{i}" for i in range(300)]), "v": pa.array([0.0, 1.0, 2.0] * 100)}
    )
    many = pa.RecordBatch.from_pydict(
        {"id": pa.array([f"b{i}" for i in range(600)]), "v": pa.array(np.arange(600) + 0.5)}
    )
    combine_fn = StatisticsCombineFn([("v", "numeric")], sample_size=400)
    parts = [combine_fn.add_input(combine_fn.create_accumulator(), b) for b in (few, many)]
    merged = combine_fn.extract_output(combine_fn.merge_accumulators(parts))["columns"]["v"]
    expected = single_pass(combine_fn, [few, many])["columns"]["v"]
    assert merged["sample_count"] == 400
    assert merged["quantiles"] == expected["quantiles"]
    assert merged["histogram"] == expected["histogram"]


def test_a_constant_column_has_all_values_in_the_first_bin():
    batch = pa.RecordBatch.from_pydict({"v": pa.array([2.5] * 9 + [None])})
    column = single_pass(StatisticsCombineFn([("v", "numeric")]), [batch])["columns"]["v"]
    assert column["min"] == column["max"] == 2.5
    assert column["std"] == 0.0
    assert column["histogram"]["counts"] == [9] + [0] * 19
    assert column["histogram"]["edges"] == [2.5] * 21
    assert column["quantiles"] == [2.5] * 11


def test_nan_and_inf_are_counted_and_kept_out_of_the_moments():
    batch = pa.RecordBatch.from_pydict(
        {"v": pa.array([1.0, np.nan, np.inf, -np.inf, 3.0, None], type=pa.float32())}
    )
    column = single_pass(StatisticsCombineFn([("v", "numeric")]), [batch])["columns"]["v"]
    assert column["count"] == 5
    assert column["missing"] == 1
    assert column["nan_count"] == 1
    assert column["inf_count"] == 2
    assert (column["min"], column["max"], column["mean"], column["std"]) == (1.0, 3.0, 2.0, 1.0)
    assert sum(column["histogram"]["counts"]) == 2


def test_a_sample_of_a_large_column_is_a_sample_of_rows_not_of_distinct_values():
    # Half the fares are 0.0: a sample of distinct values would hold one zero
    # among thousands of others, a sample of rows about half zeros.
    rng = np.random.default_rng(11)
    rows = 40_000
    fares = np.where(rng.random(rows) < 0.5, 0.0, rng.uniform(5, 50, rows).round(2))
    batch = pa.RecordBatch.from_pydict(
        {"trip_id": pa.array([f"t{i}" for i in range(rows)]), "fare": pa.array(fares)}
    )
    column = single_pass(
        StatisticsCombineFn([("fare", "numeric")], sample_size=2000),
        [batch.slice(i, 4096) for i in range(0, rows, 4096)],
    )["columns"]["fare"]
    assert column["sample_count"] == 2000
    zero_share = column["histogram"]["counts"][0] / 2000
    assert zero_share == pytest.approx(np.mean(fares == 0.0), abs=0.05)
    true_quantiles = np.quantile(fares, LEVELS)
    assert column["quantiles"][0] == 0.0
    assert column["quantiles"][8] == pytest.approx(true_quantiles[8], rel=0.1)
    # Moments never come from the sample.
    assert column["mean"] == pytest.approx(fares.mean(), rel=1e-9)
    assert column["count"] == rows


def test_the_sample_keeps_the_smallest_priority_then_value_pairs_in_any_order():
    # Three values share priority 5; only the smallest of them fits.
    priorities = np.array([5, 1, 5, 5, 2, 9, 7, 8], dtype=np.uint64)
    values = np.array([9.0, 1.0, 3.0, 7.0, 2.0, 0.5, 0.25, 0.125])
    kept = set()
    for seed in range(6):
        order = np.random.default_rng(seed).permutation(len(values))
        accumulator = NumericAccumulator(sample_size=3)
        for i in order:  # one value at a time, so that every order of arrival is tried
            accumulator.add(values[[i]], priorities[[i]], missing=0)
        accumulator.trim()
        kept.add(tuple(sorted(accumulator.sample_values.tolist())))
    assert kept == {(1.0, 2.0, 3.0)}


def test_a_numeric_column_holding_strings_is_an_error_naming_it():
    batch = pa.RecordBatch.from_pydict({"zone": pa.array(["a"])})
    with pytest.raises(TypeError, match="'zone'"):
        single_pass(StatisticsCombineFn([("zone", "numeric")]), [batch])


# --- categorical columns -------------------------------------------------------


def test_categorical_statistics_match_a_counter():
    batches = [taxi_like_batch(500, seed) for seed in (4, 5)]
    stats = single_pass(StatisticsCombineFn(COLUMNS, top_k=3), batches)
    payments = [v for b in batches for v in b.column("payment").to_pylist()]
    counter = collections.Counter(payments)
    expected_top = sorted(counter.items(), key=lambda item: (-item[1], item[0]))[:3]

    payment = stats["columns"]["payment"]
    assert payment == {
        "kind": "categorical",
        "count": 1000,
        "missing": 0,
        "unique": len(counter),
        "top_values": [list(item) for item in expected_top],
    }
    trip_id = stats["columns"]["trip_id"]
    assert trip_id["unique"] == 1000
    assert len(trip_id["top_values"]) == 3


def test_ties_in_count_are_ordered_by_value_and_nulls_are_missing():
    batch = pa.RecordBatch.from_pydict({"day": pa.array(["Wed", "Mon", None, "Tue", "Mon", "Wed"])})
    day = single_pass(StatisticsCombineFn([("day", "categorical")], top_k=2), [batch])["columns"][
        "day"
    ]
    assert day["top_values"] == [["Mon", 2], ["Wed", 2]]
    assert (day["count"], day["missing"], day["unique"]) == (5, 1, 3)


def test_binary_values_are_decoded_for_display_with_escapes():
    batch = pa.RecordBatch.from_pydict(
        {"raw": pa.array([b"caf\xc3\xa9", b"\xff\xfe", b"\xff\xfe"], type=pa.large_binary())}
    )
    raw = single_pass(StatisticsCombineFn([("raw", "categorical")]), [batch])["columns"]["raw"]
    assert raw["top_values"] == [["\\xff\\xfe", 2], ["café", 1]]


def test_integer_ids_described_as_categorical_carry_every_count():
    ids = [3, 0, 0, 7, 3, 0, -1]
    batch = pa.RecordBatch.from_pydict({"id": pa.array(ids, type=pa.int32())})
    column = single_pass(StatisticsCombineFn([("id", "categorical")], top_k=1), [batch])["columns"][
        "id"
    ]
    assert column["value_counts"] == sorted([v, c] for v, c in collections.Counter(ids).items())
    assert column["top_values"] == [[0, 3]]


def test_past_max_unique_the_distinct_count_is_unknown_but_heavy_values_stay_on_top():
    rng = np.random.default_rng(3)
    rows = 5000
    # 30 % of rows hold "hot"; the rest are (nearly) all distinct.
    zones = np.where(rng.random(rows) < 0.3, "hot", [f"z{i}" for i in range(rows)])
    batches = [
        pa.RecordBatch.from_pydict({"zone": pa.array(chunk)}) for chunk in np.array_split(zones, 10)
    ]
    zone = single_pass(StatisticsCombineFn([("zone", "categorical")], max_unique=50), batches)[
        "columns"
    ]["zone"]
    assert zone["unique"] is None
    assert zone["unique_at_least"] == 50
    assert zone["top_values_approximate"] is True
    true_hot = int(np.count_nonzero(zones == "hot"))
    hot_value, hot_count = zone["top_values"][0]
    assert hot_value == "hot"
    # Misra-Gries: short of the truth by at most count / (max_unique + 1).
    assert true_hot - rows / 51 <= hot_count <= true_hot
    assert "value_counts" not in zone


# --- list-typed columns (TransformDataset(output_record_batches=True)) ---------


def test_list_columns_flatten_values_and_count_empty_or_null_lists_as_missing():
    scaled = [[0.25], [], None, [0.5, 1.0], [0.0]]
    tokens = [[b"a"], [b"b", b"a"], [], [b"a"], None]
    ids = [[1], [2], [2], [], [5]]
    batch = pa.RecordBatch.from_arrays(
        [
            pa.array(scaled, type=pa.large_list(pa.float32())),
            pa.array(tokens, type=pa.large_list(pa.large_binary())),
            pa.array(ids, type=pa.list_(pa.int64())),
        ],
        names=["scaled", "tokens", "ids"],
    )
    stats = single_pass(
        StatisticsCombineFn([("scaled", "numeric"), ("tokens", "categorical"), ("ids", "numeric")]),
        [batch],
    )["columns"]
    flat_scaled = np.array([v for row in scaled if row for v in row])
    assert stats["scaled"]["count"] == 4
    assert stats["scaled"]["missing"] == 2
    assert stats["scaled"]["mean"] == pytest.approx(flat_scaled.mean())
    assert stats["scaled"]["quantiles"] == pytest.approx(np.quantile(flat_scaled, LEVELS))
    assert stats["tokens"]["count"] == 4
    assert stats["tokens"]["missing"] == 2
    assert stats["tokens"]["top_values"] == [["a", 3], ["b", 1]]
    assert (stats["ids"]["count"], stats["ids"]["missing"]) == (4, 1)
    assert (stats["ids"]["min"], stats["ids"]["max"]) == (1.0, 5.0)


def test_a_column_absent_from_a_batch_is_skipped_for_that_batch():
    with_column = pa.RecordBatch.from_pydict({"x": pa.array([1.0, None]), "y": pa.array([1, 2])})
    without = pa.RecordBatch.from_pydict({"y": pa.array([3, 4, 5])})
    stats = single_pass(
        StatisticsCombineFn([("x", "numeric"), ("y", "numeric"), ("z", "categorical")]),
        [with_column, without],
    )
    assert stats["num_rows"] == 5
    assert (stats["columns"]["x"]["count"], stats["columns"]["x"]["missing"]) == (1, 1)
    assert stats["columns"]["y"]["count"] == 5
    assert stats["columns"]["z"] == {
        "kind": "categorical",
        "count": 0,
        "missing": 0,
        "unique": 0,
        "top_values": [],
    }


# --- merging, empty input, the PTransform --------------------------------------


def test_any_split_and_merge_order_gives_the_single_pass_result():
    # More values than the sample holds, with repeated values, so the sample
    # itself (not only exact statistics) must not depend on the bundling.
    rows = pa.Table.from_batches([taxi_like_batch(3000, seed) for seed in (7, 8)])
    combine_fn = StatisticsCombineFn(COLUMNS, sample_size=500, max_unique=10_000)
    expected = single_pass(combine_fn, rows.to_batches(max_chunksize=1000))
    rng = random.Random(0)
    for attempt in range(5):
        shuffled = rows.take(np.random.default_rng(attempt).permutation(rows.num_rows))
        chunks = shuffled.to_batches(max_chunksize=rng.randint(50, 900))
        accumulators = []
        for start in range(0, len(chunks), 3):
            accumulator = combine_fn.create_accumulator()
            for chunk in chunks[start : start + 3]:
                accumulator = combine_fn.add_input(accumulator, chunk)
            accumulators.append(combine_fn.compact(accumulator) if attempt % 2 else accumulator)
        while len(accumulators) > 1:  # a random merge tree
            rng.shuffle(accumulators)
            accumulators.append(
                combine_fn.merge_accumulators([accumulators.pop(), accumulators.pop()])
            )
        merged = combine_fn.extract_output(accumulators[0])
        for name, column in expected["columns"].items():
            for key, value in column.items():
                if key in ("mean", "std"):  # float sums in another order
                    assert merged["columns"][name][key] == pytest.approx(value, rel=1e-12)
                else:
                    assert merged["columns"][name][key] == value, (attempt, name, key)
        assert merged["num_rows"] == 6000


def test_empty_input_gives_zero_rows_and_json_serializable_output():
    combine_fn = StatisticsCombineFn(COLUMNS)
    stats = combine_fn.extract_output(combine_fn.create_accumulator())
    assert stats["num_rows"] == 0
    assert {name: column["count"] for name, column in stats["columns"].items()} == dict.fromkeys(
        ("fare", "passengers", "payment", "trip_id"), 0
    )
    assert stats["columns"]["fare"]["quantiles"] is None
    assert json.loads(json.dumps(stats)) == stats


def test_compute_statistics_emits_exactly_one_dict_even_for_no_input():
    batches = [taxi_like_batch(200, 9), taxi_like_batch(100, 10)]
    expected = single_pass(StatisticsCombineFn(COLUMNS), batches)
    with test_pipeline() as p:
        full = p | "CreateBatches" >> beam.Create(batches) | "Stats" >> ComputeStatistics(COLUMNS)
        empty = (
            p
            | "CreateNothing" >> beam.Create([], reshuffle=False).with_output_types(pa.RecordBatch)
            | "EmptyStats" >> ComputeStatistics(COLUMNS)
        )
        assert_that(
            full | "RowsOfFull" >> beam.Map(lambda s: s["num_rows"]), equal_to([300]), "Full"
        )
        assert_that(
            full | "FareOfFull" >> beam.Map(lambda s: s["columns"]["fare"]["quantiles"]),
            equal_to([expected["columns"]["fare"]["quantiles"]]),
            label="FullFare",
        )
        assert_that(
            empty | "RowsOfEmpty" >> beam.Map(lambda s: s["num_rows"]), equal_to([0]), "Empty"
        )


def test_invalid_configuration_is_rejected():
    with pytest.raises(ValueError, match="kind"):
        StatisticsCombineFn([("x", "ordinal")])
    with pytest.raises(ValueError, match="duplicate"):
        StatisticsCombineFn([("x", "numeric"), ("x", "categorical")])
    with pytest.raises(ValueError, match="sample_size"):
        StatisticsCombineFn([("x", "numeric")], sample_size=0)


def test_kinds_follow_the_arrow_types():
    schema = pa.schema(
        [
            ("fare", pa.float64()),
            ("passengers", pa.int64()),
            ("is_airport", pa.bool_()),
            ("zone", pa.string()),
            ("raw", pa.large_binary()),
            ("scaled", pa.large_list(pa.float32())),
            ("token", pa.large_list(pa.large_binary())),
            ("zone_id", pa.large_list(pa.int64())),
            ("when", pa.timestamp("s")),
            ("point", pa.struct([("x", pa.float64())])),
        ]
    )
    assert numeric_and_categorical_columns(schema, categorical=["zone_id"]) == [
        ("fare", "numeric"),
        ("passengers", "numeric"),
        ("is_airport", "numeric"),
        ("zone", "categorical"),
        ("raw", "categorical"),
        ("scaled", "numeric"),
        ("token", "categorical"),
        ("zone_id", "categorical"),
    ]


def rows_with_extra(extra: float) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {
            "id": pa.array([f"r{i}" for i in range(2000)]),
            "v": pa.array(np.arange(2000) * 0.25),
            "extra": pa.array(np.full(2000, extra)),
        }
    )


def test_row_id_columns_alone_decide_which_rows_are_sampled():
    def quantiles(extra: float, row_id_columns: tuple) -> list:
        combine_fn = StatisticsCombineFn(
            [("v", "numeric")], sample_size=100, row_id_columns=row_id_columns
        )
        return single_pass(combine_fn, [rows_with_extra(extra)])["columns"]["v"]["quantiles"]

    # The sample is a function of the ids only: another column changing leaves it alone...
    assert quantiles(0.0, ("id",)) == quantiles(1.0, ("id",))
    # ...where by default every column feeds the sampling priorities.
    assert quantiles(0.0, ()) != quantiles(1.0, ())


def test_a_batch_without_the_row_id_columns_is_sampled_by_every_column():
    with_ids = StatisticsCombineFn([("v", "numeric")], sample_size=100, row_id_columns=("id",))
    by_default = StatisticsCombineFn([("v", "numeric")], sample_size=100)
    batch = rows_with_extra(0.0).drop_columns(["id"])
    assert single_pass(with_ids, [batch]) == single_pass(by_default, [batch])


@pytest.mark.parametrize(
    "values",
    [
        [3.0, 1.0, 3.0, -2.0, 0.0, 7.0, 1.0],  # narrow integers: counted over the range
        [1e12, -5.0, 1e12, 3.0],  # integers, but a wide range: sorted
        [0.5, 0.25, 0.5, -1.75],  # not integers: sorted
        [4.0],
    ],
)
def test_value_counts_are_numpys_unique_counts(values):
    from transforms.statistics import _value_counts

    values = np.array(values, dtype=np.float64)
    whole = bool(np.all(values == np.floor(values)))
    distinct, counts = _value_counts(values, whole)
    expected_distinct, expected_counts = np.unique(values, return_counts=True)
    assert distinct.dtype == np.float64 and counts.dtype == np.int64
    np.testing.assert_array_equal(distinct, expected_distinct)
    np.testing.assert_array_equal(counts, expected_counts)
