"""Streaming steps under TestStream: admission and lateness, live aggregates at
window boundaries, parity of the live values with a brute-force reference."""

from __future__ import annotations

import contextlib
import json

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from tests.aggregate_reference import reference_values
from tests.support import minimal_spec
from transforms.admission import AdmitOnTime, admission_window_seconds
from transforms.live_aggregates import JoinLiveAggregates

START = 1_767_225_600  # 2026-01-01T00:00:00Z, a multiple of every period below
LATENESS = 5


def streaming_pipeline():
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    return TestPipeline(runner="BundleBasedDirectRunner", options=options)


def zone_spec(aggregates=None):
    columns = [
        {"name": "id", "type": "string"},
        {"name": "when", "type": "timestamp"},
        {"name": "zone", "type": "string"},
        {"name": "x", "type": "float"},
        {"name": "y", "type": "float"},
    ]
    if aggregates is None:
        aggregates = [
            {"name": "n", "key": ["zone"], "agg": "count", "window": "30s", "period": "10s"},
            {
                "name": "avg",
                "key": ["zone"],
                "agg": "mean",
                "value": "x",
                "window": "20s",
                "period": "10s",
                "default": -1.0,
            },
        ]
    return minimal_spec(columns=columns, aggregates=aggregates)


def row(name, zone, offset, x=1.0):
    return {"id": name, "when": START + offset, "zone": zone, "x": x, "y": 0.0}


def event(r):
    return TimestampedValue(r, r["when"])


def arrivals(events) -> TestStream:
    """A TestStream adding each row, then moving the watermark to the time given
    with it when that is later than the current watermark."""
    stream = TestStream().advance_watermark_to(START - 1)
    watermark = START - 1
    for r, then in events:
        stream = stream.add_elements([event(r)])
        if then > watermark:
            stream, watermark = stream.advance_watermark_to(then), then
    return stream.advance_watermark_to_infinity()


def reference(spec, rows):
    """{id: {aggregate: value}} straight from the definition, over `rows`."""
    table = pa.Table.from_pylist(rows)
    result = {r["id"]: {} for r in rows}
    for aggregate in spec.aggregates:
        values = reference_values(
            table,
            spec.timestamp_column,
            {
                "key": aggregate.key,
                "value": aggregate.value,
                "agg": aggregate.agg.value,
                "period_seconds": aggregate.period_seconds,
                "window_seconds": aggregate.window_seconds,
                "default": aggregate.default,
            },
        )
        for r, value in zip(rows, values, strict=True):
            result[r["id"]][aggregate.name] = value
    return result


def test_admission_window_is_the_gcd_of_the_periods():
    spec = zone_spec(
        [
            {"name": "a", "key": ["zone"], "agg": "count", "window": "1h", "period": "10min"},
            {"name": "b", "key": ["id"], "agg": "count", "window": "1h", "period": "15min"},
        ]
    )
    assert admission_window_seconds(spec) == 300
    assert admission_window_seconds(minimal_spec()) == 60


@contextlib.contextmanager
def live_pipeline(spec, stream):
    """Admitted rows with aggregates as (id, (values rounded to 9 places)) and late
    dead letters as (id, reason prefix), from one TestStream; the pipeline runs
    when the block ends."""
    results = {}
    with streaming_pipeline() as p:
        rows = p | stream
        admission = rows | AdmitOnTime(spec, LATENESS, 3600)
        live = admission.admitted | JoinLiveAggregates(spec, LATENESS)
        names = [a.name for a in spec.aggregates]
        results["rows"] = (
            live["rows"]
            | "Values" >> beam.Map(lambda r: (r["id"], tuple(round(r[n], 9) for n in names)))
            | "RowsToGlobal" >> beam.WindowInto(beam.window.GlobalWindows())
        )
        results["late"] = (
            admission.late
            | "LateIds" >> beam.Map(lambda d: (json.loads(d["line"])["id"], d["reason"][:5]))
            | "LateToGlobal" >> beam.WindowInto(beam.window.GlobalWindows())
        )
        yield results


def test_late_rows_within_lateness_are_admitted_and_later_ones_dead_lettered():
    spec = zone_spec()
    a, b, c = row("a", "z", 1, 2.0), row("b", "z", 9, 4.0), row("c", "y", 12)
    d = row("d", "z", 10, 8.0)  # first second of period 1: sees a, b, e but not itself
    e = row("e", "z", 3, 6.0)  # arrives late, within the lateness: admitted
    f = row("f", "z", 5, 100.0)  # arrives after period 0 closed + lateness: late
    g = row("g", "z", 25, 1.0)
    stream = (
        TestStream()
        .advance_watermark_to(START)
        .add_elements([event(a), event(b), event(c), event(d)])
        .advance_watermark_to(START + 10 + LATENESS - 1)
        .add_elements([event(e)])
        .advance_watermark_to(START + 10 + LATENESS + 1)
        .add_elements([event(f), event(g)])
        .advance_watermark_to_infinity()
    )
    admitted = [a, b, c, d, e, g]
    expected = reference(spec, admitted)
    # The reference itself: d sees a, b and e (count 3, mean x 4.0), never f.
    assert expected["d"] == {"n": 3, "avg": 4.0}
    names = [agg.name for agg in spec.aggregates]
    with live_pipeline(spec, stream) as results:
        assert_that(
            results["rows"],
            equal_to(
                [(r["id"], tuple(round(expected[r["id"]][n], 9) for n in names)) for r in admitted]
            ),
            label="AdmittedWithAggregates",
        )
        assert_that(results["late"], equal_to([("f", "late:")]), label="LateDeadLetters")


def test_window_boundaries_follow_the_batch_definition():
    spec = zone_spec()
    # Rows on period boundaries and exactly one window length apart: a row at
    # t sees [e - W, e) with e = floor(t / P) * P, so the row at 30 no longer
    # sees the row at 0 for the 30 s count, and the 20 s mean at 29 sees 0..19.
    rows = [
        row("r0", "z", 0, 1.0),
        row("r10", "z", 10, 2.0),
        row("r19", "z", 19, 3.0),
        row("r20", "z", 20, 4.0),
        row("r29", "z", 29, 5.0),
        row("r30", "z", 30, 6.0),
        row("r40", "z", 40, 7.0),
        row("r80", "z", 80, 8.0),  # nothing in [50, 80): the defaults
        row("q35", "q", 35, 9.0),  # another zone never mixes in
    ]
    stream = arrivals([(r, r["when"]) for r in sorted(rows, key=lambda r: r["when"])])
    expected = reference(spec, rows)
    assert expected["r30"]["n"] == 5 and expected["r80"] == {"n": 0, "avg": -1.0}
    names = [agg.name for agg in spec.aggregates]
    with live_pipeline(spec, stream) as results:
        assert_that(
            results["rows"],
            equal_to(
                [(r["id"], tuple(round(expected[r["id"]][n], 9) for n in names)) for r in rows]
            ),
            label="Boundaries",
        )
        assert_that(results["late"], equal_to([]), label="NoLate")


@pytest.mark.parametrize("seed", [3, 11])
def test_random_out_of_order_events_match_the_reference(seed):
    import random

    spec = zone_spec()
    generator = random.Random(seed)
    rows = [
        row(f"k{i}", generator.choice("abc"), generator.randrange(0, 200), generator.random())
        for i in range(120)
    ]
    # Arrival order is shuffled within a few seconds of event time, always
    # inside the allowed lateness, so every row is admitted.
    arrival = sorted(rows, key=lambda r: r["when"] + generator.uniform(-LATENESS + 1, 0))
    stream = arrivals([(r, r["when"] - LATENESS + 1) for r in arrival])
    expected = reference(spec, rows)
    names = [agg.name for agg in spec.aggregates]
    with live_pipeline(spec, stream) as results:
        assert_that(
            results["rows"],
            equal_to(
                [(r["id"], tuple(round(expected[r["id"]][n], 9) for n in names)) for r in rows]
            ),
            label="Random",
        )
        assert_that(results["late"], equal_to([]), label="NoLate")
