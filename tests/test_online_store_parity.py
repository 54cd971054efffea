"""The online store filled two ways on the real Bigtable emulator: the streaming
job (in-process, TestStream) and `pipeline.materialize` over a batch run of the
same events give identical tables, cell by cell, equal to a brute-force
reference; a rerun leaves the same cells; --start/--end keep only their periods."""

from __future__ import annotations

import json
import random

import pytest
import yaml

from tests.aggregate_reference import stream_values_reference
from tests.support import ZONES_SPEC_DOCUMENT

pytest_plugins = ["tests.bigtable_emulator"]
pytestmark = [pytest.mark.emulator, pytest.mark.slow]

START = 1_767_225_600  # 2026-01-01T00:00:00Z
LATENESS = 20


def make_events(count: int, seed: int = 4) -> list[dict]:
    """Events over 400 s in three zones, none in [200, 290) s so that windows
    empty out and the shorter window's default is written too. x is a multiple
    of 1/4: its sums are exact in float64 in any order, so the stream and the
    batch history, which add in different orders, give the very same mean."""
    generator = random.Random(seed)
    events = []
    while len(events) < count:
        offset = generator.randrange(400)
        if 200 <= offset < 290:
            continue
        events.append(
            {
                "id": f"e{len(events):04d}",
                "when": START + offset,
                "zone": generator.choice(["north", "south", "east"]),
                "x": generator.randrange(400) / 4,
                "y": round(generator.uniform(-5, 5), 3),
            }
        )
    return events


def utc(seconds: int) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))


@pytest.fixture(scope="module")
def batch_run(tmp_path_factory):
    """The spec file, the events, and a batch run over them (run_dir and transform_dir)."""
    from pipeline import preprocess

    root = tmp_path_factory.mktemp("store")
    spec_path = root / "zones.yaml"
    spec_path.write_text(yaml.safe_dump(ZONES_SPEC_DOCUMENT))
    events = make_events(160)
    csv_path = root / "events.csv"
    lines = ["id,when,zone,x,y"] + [
        f"{e['id']},{utc(e['when'])},{e['zone']},{e['x']},{e['y']}" for e in events
    ]
    csv_path.write_text("\n".join(lines) + "\n")
    out = root / "batch"
    argv = ["--spec", str(spec_path), "--input", str(csv_path), "--output_dir", str(out)]
    assert preprocess.run(argv) == 0
    return spec_path, events, out


def materialize(run_dir, emulator, table: str, *flags: str) -> int:
    from pipeline import materialize as command

    argv = ["--run_dir", str(run_dir), *emulator.store_flags(table), *flags]
    return command.run([*argv, "--direct_num_workers", "1"])


def expected_cells(spec, events, period_range=None) -> dict:
    """{row key: [(timestamp micros, value), ...] newest first}, as read_all
    returns them, from the reference's values."""
    from transforms.aggregates import group_aggregates
    from transforms.online_store import MICROS, group_cells

    rows: dict[bytes, list] = {}
    for group in group_aggregates(spec):
        bounds = period_range(group.period_seconds) if period_range else (None, None)
        for element in stream_values_reference(events, spec.timestamp_column, group, bounds):
            for cell in group_cells(element, group):
                rows.setdefault(cell.row_key, []).append((cell.period_start * MICROS, cell.value))
    return {key: sorted(cells, reverse=True) for key, cells in rows.items()}


def run_stream(spec_path, transform_dir, output_dir, events, emulator, table: str) -> None:
    """pipeline.stream's graph with the store on, over a TestStream of the events
    in event-time order with jitter inside the allowed lateness."""
    from apache_beam.io.gcp.pubsub import PubsubMessage
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.test_stream import TestStream
    from apache_beam.transforms.window import TimestampedValue

    from pipeline import stream
    from pipeline.options import create_online_store_if_missing
    from schemas.spec import load_spec

    spec = load_spec(str(spec_path))
    argv = ["--spec", str(spec_path), "--transform_dir", str(transform_dir), "--output_dir"]
    argv += [str(output_dir), "--input_topic", "projects/test/topics/events"]
    argv += ["--allowed_lateness", f"{LATENESS}s", *emulator.store_flags(table)]
    options = PipelineOptions(argv)
    options.view_as(StandardOptions).streaming = True
    assert stream.validate_stream_options(options) == []
    create_online_store_if_missing(options, spec)
    generator = random.Random(2)
    ordered = sorted(events, key=lambda e: e["when"] + generator.uniform(0, LATENESS - 2))
    test_stream = TestStream().advance_watermark_to(START - 1)
    watermark = START - 1
    for event in ordered:
        document = json.dumps({**event, "when": utc(event["when"])}).encode()
        test_stream = test_stream.add_elements(
            [TimestampedValue(PubsubMessage(document, {}), event["when"] + LATENESS // 2)]
        )
        if event["when"] - LATENESS // 2 > watermark:
            watermark = event["when"] - LATENESS // 2
            test_stream = test_stream.advance_watermark_to(watermark)
    test_stream = test_stream.advance_watermark_to_infinity()
    with TestPipeline(runner="BundleBasedDirectRunner", options=options) as p:
        stream.build_pipeline(p, options, spec, messages=p | test_stream)


@pytest.fixture(scope="module")
def materialized(batch_run, bigtable_emulator):
    from schemas.spec import load_spec

    spec_path, _, run_dir = batch_run
    assert materialize(run_dir, bigtable_emulator, "materialized") == 0
    return load_spec(str(spec_path)), bigtable_emulator.read_all("materialized")


def test_materialize_writes_the_reference_cells(batch_run, materialized):
    _, events, _ = batch_run
    spec, cells = materialized
    expected = expected_cells(spec, events)
    # Defaults are written too: a 30 s mean over an empty stretch, within 60 s of rows.
    assert b"0.0" in {value for row in expected.values() for _, value in row}
    assert cells == expected


def test_the_stream_writes_the_same_table_as_materialize(
    batch_run, materialized, bigtable_emulator, tmp_path
):
    spec_path, events, transform_dir = batch_run
    _, cells = materialized
    run_stream(spec_path, transform_dir, tmp_path, events, bigtable_emulator, "streamed")
    assert bigtable_emulator.read_all("streamed") == cells


def test_a_rerun_leaves_the_same_cells(batch_run, materialized, bigtable_emulator):
    _, _, run_dir = batch_run
    _, cells = materialized
    assert materialize(run_dir, bigtable_emulator, "materialized", "--create_table", "never") == 0
    assert bigtable_emulator.read_all("materialized") == cells


def test_start_and_end_keep_the_periods_holding_an_instant_between(
    batch_run, materialized, bigtable_emulator
):
    from transforms.materialize import EventTimeBounds

    _, events, run_dir = batch_run
    spec, cells = materialized
    start, end = START + 95, START + 301
    code = materialize(
        run_dir, bigtable_emulator, "bounded", "--start", utc(start), "--end", str(end)
    )
    assert code == 0
    bounded = bigtable_emulator.read_all("bounded")
    # Periods of 10 s starting 90 .. 300 s: the first holds 95, the last 300.
    stamps = {stamp for row in bounded.values() for stamp, _ in row}
    assert min(stamps) == (START + 90) * 1_000_000 and max(stamps) == (START + 300) * 1_000_000
    assert bounded == expected_cells(spec, events, EventTimeBounds(start, end).period_range)
    # The same cells as the unbounded run has for those periods: values see rows before --start.
    first, last = (START + 90) * 1_000_000, (START + 300) * 1_000_000
    assert bounded == {
        key: kept
        for key, row in cells.items()
        if (kept := [(t, v) for t, v in row if first <= t <= last])
    }
