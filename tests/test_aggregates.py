"""Windowed aggregates against a brute-force reference computed inside the test.

The reference reads the semantics literally: for a row of entity k at t, with
e = floor(t / P) * P, aggregate every row of k with event time in [e - W, e).
"""

from __future__ import annotations

import random

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest

from schemas.spec import SpecError
from tests.support import minimal_spec, test_pipeline
from transforms.aggregates import (
    JoinAggregates,
    PeriodStats,
    group_aggregates,
)
from transforms.csv_source import layout_from_first_line
from transforms.validation import LineParser, arrow_schema

HOUR = 3600


def make_spec(aggregates: list[dict], extra_columns: tuple[dict, ...] = ()):
    return minimal_spec(
        name="events",
        columns=[
            {"name": "id", "type": "string"},
            {"name": "when", "type": "timestamp"},
            {"name": "zone", "type": "string"},
            {"name": "vendor", "type": "int"},
            {"name": "fare", "type": "float"},
            *extra_columns,
        ],
        label="fare",
        aggregates=aggregates,
        features=[{"name": "fare_z", "source": "fare", "transform": "scale_to_z_score"}],
    )


ALL_AGGREGATES = [
    {"name": "zone_count_1h", "key": ["zone"], "agg": "count", "window": "1h", "period": "5min"},
    {
        "name": "zone_mean_3h",
        "key": ["zone"],
        "agg": "mean",
        "value": "fare",
        "window": "3h",
        "period": "5min",
        "default": -1.0,
    },
    {
        "name": "vendor_sum_2h",
        "key": ["vendor"],
        "agg": "sum",
        "value": "fare",
        "window": "2h",
        "period": "30min",
    },
    {
        "name": "pair_min_90m",
        "key": ["zone", "vendor"],
        "agg": "min",
        "value": "fare",
        "window": "90min",
        "period": "15min",
        "default": 0.0,
    },
    {
        "name": "pair_max_1d",
        "key": ["zone", "vendor"],
        "agg": "max",
        "value": "fare",
        "window": "1d",
        "period": "15min",
        "default": 0.0,
    },
]


def brute_force(rows: list[dict], aggregate) -> dict[str, float]:
    """{row id: value}, by scanning every row for every row."""
    period, window = aggregate.period_seconds, aggregate.window_seconds
    result = {}
    for row in rows:
        end = (row["when"] // period) * period
        seen = [
            other
            for other in rows
            if all(other[k] == row[k] for k in aggregate.key)
            and end - window <= other["when"] < end
        ]
        # SQL semantics: sum, mean, min and max skip missing values; count counts rows.
        values = (
            [other[aggregate.value] for other in seen if other[aggregate.value] is not None]
            if aggregate.value
            else []
        )
        if not seen or (aggregate.agg != "count" and not values):
            result[row["id"]] = aggregate.default
        elif aggregate.agg == "count":
            result[row["id"]] = len(seen)
        elif aggregate.agg == "sum":
            result[row["id"]] = sum(values)
        elif aggregate.agg == "mean":
            result[row["id"]] = sum(values) / len(values)
        elif aggregate.agg == "min":
            result[row["id"]] = min(values)
        else:
            result[row["id"]] = max(values)
    return result


def random_rows(count: int, seed: int, span_hours: int = 60) -> list[dict]:
    rng = random.Random(seed)
    start = 1_735_689_600  # 2025-01-01 00:00:00 UTC, a period boundary
    rows = []
    for i in range(count):
        if i % 7 == 0:  # exactly on a 5-minute (and often 15/30-minute) boundary
            when = start + rng.randrange(0, span_hours * 12) * 300
        else:
            when = start + rng.randrange(0, span_hours * HOUR)
        rows.append(
            {
                "id": f"r{i:04d}",
                "when": when,
                "zone": rng.choice(["north", "south", "east", "west"]),
                "vendor": rng.choice([1, 2, 3]),
                "fare": round(rng.uniform(2, 90), 2),
            }
        )
    rows.append(
        {"id": "lonely", "when": start + 5 * HOUR, "zone": "island", "vendor": 9, "fare": 7.0}
    )
    return rows


def to_batches(rows: list[dict], spec, batch_size: int) -> list[pa.RecordBatch]:
    schema = arrow_schema(spec)
    return [
        pa.RecordBatch.from_pylist(rows[i : i + batch_size], schema=schema)
        for i in range(0, len(rows), batch_size)
    ]


def run_join(spec, batches) -> dict[str, dict]:
    """Runs JoinAggregates and returns {row id: row dict}, read back from a file."""
    import glob
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        with test_pipeline() as p:
            _ = (
                p
                | beam.Create(batches)
                | JoinAggregates(spec, f"{directory}/spill")
                | beam.FlatMap(lambda batch: batch.to_pylist())
                | beam.Map(json.dumps)
                | beam.io.WriteToText(f"{directory}/rows")
            )
        results = []
        for path in glob.glob(f"{directory}/rows*"):
            with open(path) as handle:
                results.extend(json.loads(line) for line in handle)
    return {row["id"]: row for row in results}


def assert_matches_reference(spec, rows, joined):
    assert sorted(joined) == sorted(row["id"] for row in rows)
    for aggregate in spec.aggregates:
        expected = brute_force(rows, aggregate)
        for row_id, value in expected.items():
            got = joined[row_id][aggregate.name]
            if aggregate.agg == "count":
                assert got == value, (aggregate.name, row_id)
            else:
                assert got == pytest.approx(value, rel=1e-9, abs=1e-9), (aggregate.name, row_id)


@pytest.fixture(scope="module")
def spec():
    return make_spec(ALL_AGGREGATES)


def test_random_data_matches_brute_force_for_every_row_and_aggregate(spec):
    rows = random_rows(600, seed=1)
    joined = run_join(spec, to_batches(rows, spec, batch_size=97))
    assert_matches_reference(spec, rows, joined)
    # The data must exercise both full and empty windows.
    counts = [row["zone_count_1h"] for row in joined.values()]
    assert 0 in counts and max(counts) >= 5


def test_input_order_and_batching_do_not_matter(spec):
    rows = random_rows(300, seed=2)
    shuffled = list(rows)
    random.Random(3).shuffle(shuffled)
    first = run_join(spec, to_batches(rows, spec, batch_size=300))
    second = run_join(spec, to_batches(shuffled, spec, batch_size=17))
    assert first.keys() == second.keys()
    for row_id, row in first.items():
        # Counts are exact; float sums are added in another order when the
        # batching differs, so they agree to rounding.
        for column, value in row.items():
            if isinstance(value, float):
                assert second[row_id][column] == pytest.approx(value, rel=1e-12), row_id
            else:
                assert second[row_id][column] == value, (row_id, column)
    assert_matches_reference(spec, rows, second)


def test_events_on_boundaries_see_only_earlier_periods(spec):
    start = 1_735_689_600
    rows = [
        {"id": "a", "when": start, "zone": "z", "vendor": 1, "fare": 10.0},
        {"id": "b", "when": start + 300, "zone": "z", "vendor": 1, "fare": 20.0},
        {"id": "c", "when": start + 300, "zone": "z", "vendor": 1, "fare": 30.0},
        {"id": "d", "when": start + 599, "zone": "z", "vendor": 1, "fare": 40.0},
        {"id": "e", "when": start + 600, "zone": "z", "vendor": 1, "fare": 50.0},
        {"id": "f", "when": start + 3900, "zone": "z", "vendor": 1, "fare": 60.0},
    ]
    joined = run_join(spec, to_batches(rows, spec, batch_size=6))
    counts = {row_id: row["zone_count_1h"] for row_id, row in joined.items()}
    # b and c share a boundary: neither sees the other, nor d (same period, later).
    # f at 1h05m sees [5min, 1h05m): b, c, d, e but not a.
    assert counts == {"a": 0, "b": 1, "c": 1, "d": 1, "e": 4, "f": 4}
    assert joined["e"]["zone_mean_3h"] == pytest.approx((10 + 20 + 30 + 40) / 4)
    assert joined["a"]["zone_mean_3h"] == -1.0  # empty window: the declared default
    assert_matches_reference(spec, rows, joined)


def test_a_key_with_a_single_event_gets_the_defaults(spec):
    rows = random_rows(50, seed=4)
    joined = run_join(spec, to_batches(rows, spec, batch_size=50))
    lonely = joined["lonely"]
    assert lonely["zone_count_1h"] == 0
    assert lonely["zone_mean_3h"] == -1.0
    assert lonely["pair_min_90m"] == 0.0


def test_timestamps_with_offsets_aggregate_by_their_utc_instant():
    spec = make_spec(ALL_AGGREGATES[:1])
    header = "id,when,zone,vendor,fare"
    lines = [
        "a,2025-01-01T10:00:00+02:00,z,1,5",  # 08:00 UTC
        "b,2025-01-01 08:30:00 UTC,z,1,5",
        "c,2025-01-01T03:45:00-05:00,z,1,5",  # 08:45 UTC
        "d,2025-01-01T09:00:00Z,z,1,5",  # window [08:00, 09:00) holds a, b and c
    ]
    layout = layout_from_first_line("f.csv", 0, header, spec)
    parsed = LineParser(spec, {"f.csv": layout}).parse([("f.csv", line.encode()) for line in lines])
    assert parsed.dead_letters == []
    joined = run_join(spec, [parsed.valid])
    assert {k: v["zone_count_1h"] for k, v in joined.items()} == {"a": 0, "b": 1, "c": 2, "d": 3}


def test_a_hot_key_across_many_blocks_matches_brute_force():
    from transforms.aggregates import BLOCK_PERIODS

    spec = make_spec(
        [
            {"name": "n_3h", "key": ["zone"], "agg": "count", "window": "3h", "period": "1min"},
            {
                "name": "max_3h",
                "key": ["zone"],
                "agg": "max",
                "value": "fare",
                "window": "3h",
                "period": "1min",
            },
        ]
    )
    rng = random.Random(5)
    start = 1_735_689_600
    span = 4 * BLOCK_PERIODS * 60  # four blocks of one key, windows straddling each boundary
    rows = [
        {
            "id": f"h{i}",
            "when": start + rng.randrange(0, span),
            "zone": "hot",
            "vendor": 1,
            "fare": float(rng.randrange(1, 50)),
        }
        for i in range(1500)
    ]
    rows += [
        {
            "id": f"edge{b}",
            "when": start + b * BLOCK_PERIODS * 60 + 30,
            "zone": "hot",
            "vendor": 1,
            "fare": 99.0,
        }
        for b in range(1, 4)
    ]
    # Rows in the last minutes of each block, whose windows the edge rows must see
    # across the boundary (however sparse the random rows are in a block).
    rows += [
        {
            "id": f"before{b}-{j}",
            "when": start + b * BLOCK_PERIODS * 60 - 60 * (j + 1),
            "zone": "hot",
            "vendor": 1,
            "fare": float(10 + j),
        }
        for b in range(1, 4)
        for j in range(5)
    ]
    joined = run_join(spec, to_batches(rows, spec, batch_size=100))
    assert_matches_reference(spec, rows, joined)
    assert all(joined[f"edge{b}"]["n_3h"] > 0 for b in range(1, 4))


# --- building blocks --------------------------------------------------------------


def test_period_stats_merge_equals_stats_of_all_rows():
    rng = np.random.default_rng(0)
    periods = rng.integers(0, 20, size=200)
    fares = rng.uniform(0, 100, size=200)
    whole = PeriodStats.from_rows(periods, {"fare": fares})
    parts = [
        PeriodStats.from_rows(periods[i : i + 30], {"fare": fares[i : i + 30]})
        for i in range(0, 200, 30)
    ]
    merged = PeriodStats.merge(parts)
    np.testing.assert_array_equal(merged.periods, whole.periods)
    np.testing.assert_array_equal(merged.counts, whole.counts)
    np.testing.assert_allclose(merged.sums["fare"], whole.sums["fare"])
    np.testing.assert_array_equal(merged.mins["fare"], whole.mins["fare"])
    np.testing.assert_array_equal(merged.maxs["fare"], whole.maxs["fare"])


def test_groups_share_key_and_period(spec):
    groups = group_aggregates(spec)
    assert [(g.key_columns, g.period_seconds, len(g.aggregates)) for g in groups] == [
        (("zone",), 300, 2),
        (("vendor",), 1800, 1),
        (("zone", "vendor"), 900, 2),
    ]
    assert groups[0].block_periods * 300 >= 86400


# --- spec rules -------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, message",
    [
        ({"window": "7min"}, "window (420s) must be a whole multiple of period (300s)"),
        ({"value": "fare"}, "count takes no 'value'"),
        ({"agg": "mean"}, "mean needs a 'value' column"),
        ({"key": ["zones"]}, "column 'zones' does not exist"),
        ({"window": "1 fortnight"}, "is not a duration like 30s, 5min, 1h or 2d"),
        ({"default": 0.5}, "default of a count must be an integer"),
        ({"name": "fare"}, "name is already used by a column or aggregate"),
    ],
)
def test_bad_aggregate_specs(change, message):
    aggregate = {**ALL_AGGREGATES[0], **change}
    with pytest.raises(SpecError) as raised:
        make_spec([aggregate])
    assert any(message in problem for problem in raised.value.problems), raised.value.problems


def test_aggregate_value_must_be_numeric():
    aggregate = {**ALL_AGGREGATES[1], "value": "zone"}
    with pytest.raises(SpecError, match="column 'zone' is string, expected float or int"):
        make_spec([aggregate])


# --- missing values (issue 18) ---------------------------------------------------


def make_optional_value_spec():
    """ALL_AGGREGATES, but over `tip`, an optional column without a default."""
    aggregates = [dict(a, value="tip") if "value" in a else a for a in ALL_AGGREGATES]
    return make_spec(aggregates, ({"name": "tip", "type": "float", "required": False},))


def rows_with_missing_tips(seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = random_rows(300, seed)
    for row in rows:
        row["tip"] = None if rng.random() < 0.4 else round(rng.uniform(0, 20), 2)
    # An entity whose only earlier rows have no tip: sum/mean/min/max give the default.
    start = 1_735_689_600
    rows.append({"id": "dry1", "when": start, "zone": "dry", "vendor": 7, "fare": 5.0, "tip": None})
    rows.append(
        {"id": "dry2", "when": start + HOUR, "zone": "dry", "vendor": 7, "fare": 6.0, "tip": 1.0}
    )
    return rows


def test_aggregates_skip_missing_values_like_sql_and_match_brute_force():
    spec = make_optional_value_spec()
    rows = rows_with_missing_tips(seed=5)
    joined = run_join(spec, to_batches(rows, spec, batch_size=64))
    assert_matches_reference(spec, rows, joined)
    # dry2 sees one earlier row (dry1), which has no tip: rows counted, values skipped.
    assert joined["dry2"]["zone_count_1h"] == 1
    assert joined["dry2"]["zone_mean_3h"] == -1.0  # the default, not 0 / 1 or NaN
    assert joined["dry2"]["pair_max_1d"] == 0.0


def test_a_window_of_only_missing_values_gives_the_default():
    spec = make_optional_value_spec()
    (mean,) = [a for a in spec.aggregates if a.agg == "mean"]
    from transforms.aggregates import window_values

    stats = PeriodStats.from_rows(np.array([0, 1, 1]), {"tip": np.array([np.nan, np.nan, 4.0])})
    assert stats.counts.tolist() == [1, 2]
    assert stats.present["tip"].tolist() == [0, 1]
    # Period 2 sees periods 0 and 1 (window 3h = 36 periods): one value, 4.0.
    assert window_values(stats, np.array([1, 2]), mean).tolist() == [-1.0, 4.0]


def test_streaming_period_stats_skip_missing_values_as_batch_does():
    from transforms.live_aggregates import RowsToPeriodStats

    spec = make_optional_value_spec()
    group = next(g for g in group_aggregates(spec) if g.value_columns)
    rows = [
        {"when": 0, "tip": None},
        {"when": 10, "tip": 2.5},
        {"when": 4000, "tip": None},
    ]
    combine = RowsToPeriodStats(group, "when")
    accumulator = combine.create_accumulator()
    for row in rows:
        accumulator = combine.add_input(accumulator, row)
    live = combine.extract_output(accumulator)
    periods = np.array([row["when"] // group.period_seconds for row in rows])
    batch = PeriodStats.from_rows(periods, {"tip": np.array([np.nan, 2.5, np.nan])})
    for field in ("periods", "counts"):
        assert getattr(live, field).tolist() == getattr(batch, field).tolist()
    for field in ("sums", "mins", "maxs", "present"):
        assert getattr(live, field)["tip"].tolist() == getattr(batch, field)["tip"].tolist()
    assert live.present["tip"].tolist() == [1, 0]


def test_the_run_reference_skips_missing_values_as_the_pipeline_does():
    """tests/aggregate_reference.py, which checks whole runs, agrees with the
    pipeline (and so with brute_force above) on rows with missing values."""
    from tests.aggregate_reference import reference_values

    spec = make_optional_value_spec()
    rows = rows_with_missing_tips(seed=9)
    joined = run_join(spec, to_batches(rows, spec, batch_size=50))
    table = pa.Table.from_pylist([joined[row["id"]] for row in rows])
    for aggregate in spec.aggregates:
        definition = {
            "key": aggregate.key,
            "value": aggregate.value,
            "agg": aggregate.agg.value,
            "period_seconds": aggregate.period_seconds,
            "window_seconds": aggregate.window_seconds,
            "default": aggregate.default,
        }
        expected = reference_values(table, "when", definition)
        got = table.column(aggregate.name).to_numpy().astype(np.float64)
        np.testing.assert_allclose(got, expected, rtol=1e-9, err_msg=aggregate.name)
    assert table.column("tip").null_count > 50


@pytest.mark.parametrize("key_columns", [("zone",), ("zone", "vendor")])
def test_block_period_stats_are_each_segments_own_period_stats(key_columns):
    """The batch-wide grouping gives, bit for bit, what PeriodStats.from_rows gives
    on each (entity, block)'s rows alone (the brute-force reference)."""
    from schemas.spec import Aggregate
    from transforms.aggregates import (
        AggregateGroup,
        EntityBlocks,
        PeriodStats,
        block_period_stats,
        missing_as_nan,
    )

    rng = np.random.default_rng(7)
    rows = 5000
    period = 300
    aggregates = (
        Aggregate(name="n", key=list(key_columns), agg="count", window="1h", period="5min"),
        Aggregate(
            name="f", key=list(key_columns), agg="mean", value="fare", window="3h", period="5min"
        ),
        Aggregate(
            name="t", key=list(key_columns), agg="max", value="tip", window="1h", period="5min"
        ),
    )
    group = AggregateGroup(key_columns, period, aggregates)
    fares = rng.gamma(2.0, 10.0, rows)
    tips = np.where(rng.random(rows) < 0.3, np.nan, rng.normal(3.0, 2.0, rows))
    batch = pa.RecordBatch.from_pydict(
        {
            # Over eight years: many blocks; a few zones and vendors.
            "ts": rng.integers(1_600_000_000, 1_600_000_000 + 8 * 365 * 86400, rows),
            "zone": rng.choice(["a", "b", "c", "d"], rows).tolist(),
            "vendor": rng.choice(["x", "y"], rows).tolist(),
            "fare": pa.array(fares),
            "tip": pa.array(tips, mask=np.isnan(tips)),
        }
    )
    got = block_period_stats(batch, group, "ts")
    grouped = EntityBlocks.of(batch, group, "ts")
    values = {name: missing_as_nan(batch.column(name)) for name in group.value_columns}
    expected = [
        (key, PeriodStats.from_rows(grouped.periods[r], {n: c[r] for n, c in values.items()}))
        for key, r in grouped.segments
    ]
    assert len(got) == len(expected) > 20
    for (key, stats), (expected_key, reference) in zip(got, expected, strict=True):
        assert key == expected_key
        for field in ("periods", "counts"):
            np.testing.assert_array_equal(getattr(stats, field), getattr(reference, field))
            assert getattr(stats, field).dtype == getattr(reference, field).dtype
        for field in ("sums", "mins", "maxs", "present"):
            mine, theirs = getattr(stats, field), getattr(reference, field)
            assert set(mine) == set(theirs) == {"fare", "tip"}
            for name in mine:
                # Bit for bit: the sums add in the same order.
                assert mine[name].tobytes() == theirs[name].tobytes(), (key, field, name)
