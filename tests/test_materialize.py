"""transforms.materialize and pipeline.materialize without a store: the periods
the streaming job emits, the values of each, and the command's flag checks.
(tests/test_online_store_parity.py runs both jobs into the Bigtable emulator.)"""

from __future__ import annotations

import random

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

from pipeline.options import validate_materialize_options, validate_stream_options
from schemas.spec import parse_spec
from tests.aggregate_reference import stream_periods_reference, stream_values_reference
from tests.support import ZONES_SPEC_DOCUMENT, test_pipeline
from transforms import aggregates
from transforms.aggregates import group_aggregates
from transforms.materialize import EventTimeBounds, StreamGroupValues, stream_periods

SPEC = parse_spec(ZONES_SPEC_DOCUMENT)
GROUP = group_aggregates(SPEC)[0]  # n_60s and mean_x_30s per zone, 10 s periods


@pytest.mark.parametrize("seed", range(30))
def test_stream_periods_equal_the_definition(seed):
    generator = random.Random(seed)
    n = generator.randint(1, 12)
    periods = sorted(set(generator.sample(range(-40, 200), generator.randint(1, 30))))
    low = generator.choice([None, generator.randint(-50, 150)])
    high = generator.choice([None, generator.randint(-20, 260)])
    got = stream_periods(np.array(periods), n, low, high)
    assert got.dtype == np.int64
    assert got.tolist() == stream_periods_reference(periods, n, low, high)


def test_stream_periods_of_nothing_and_of_touching_runs():
    assert stream_periods(np.array([], dtype=np.int64), 3, None, None).tolist() == []
    # 0 opens (0, 3], 3 opens (3, 6]: one run 1..6; 10 opens its own.
    assert stream_periods(np.array([0, 3, 10]), 3, None, None).tolist() == [
        *range(1, 7),
        *range(11, 14),
    ]
    assert stream_periods(np.array([0, 3, 10]), 3, 5, 12).tolist() == [5, 6, 11]
    assert stream_periods(np.array([0]), 3, 9, None).tolist() == []


def test_bounds_keep_the_periods_that_hold_an_instant_of_start_to_end():
    # Periods of 10 s: [40, 50) holds 45, [60, 70) holds 61; [70, 80) does not.
    assert EventTimeBounds(45, 61).period_range(10) == (4, 7)
    assert EventTimeBounds(40, 70).period_range(10) == (4, 7)
    assert EventTimeBounds().period_range(10) == (None, None)


def zone_rows(count: int, seed: int, span: int) -> list[dict]:
    generator = random.Random(seed)
    # Quarters add up exactly in float64, so any summation order gives the same
    # mean and the comparison can be exact.
    return [
        {
            "id": f"r{i}",
            "when": 1_767_225_600 + generator.randrange(span),
            "zone": generator.choice(["north", "south", "east"]),
            "x": generator.randrange(400) / 4,
            "y": 0.0,
        }
        for i in range(count)
    ]


def batches_of(rows, size):
    from transforms.validation import arrow_schema

    schema = arrow_schema(SPEC)
    return [
        pa.RecordBatch.from_pylist(
            [{name: row.get(name) for name in schema.names} for row in rows[i : i + size]],
            schema=schema,
        )
        for i in range(0, len(rows), size)
    ]


@pytest.mark.parametrize(
    "bounds",
    [EventTimeBounds(), EventTimeBounds(1_767_225_600 + 95, 1_767_225_600 + 402)],
    ids=["all", "bounded"],
)
def test_stream_values_over_several_blocks_equal_the_definition(monkeypatch, bounds):
    # Blocks of 8 periods (80 s) over 800 s, so that windows cross blocks and
    # quiet stretches (no row for longer than a window) leave gaps.
    monkeypatch.setattr(aggregates, "BLOCK_PERIODS", 8)
    rows = zone_rows(120, seed=5, span=800)
    rows = [r for r in rows if not 300 <= r["when"] - 1_767_225_600 < 420]
    expected = stream_values_reference(
        rows, SPEC.timestamp_column, GROUP, bounds.period_range(GROUP.period_seconds)
    )
    # The 30 s mean of a period whose last 30 s are empty (rows only 40-60 s
    # back) gets its default, as the stream's window of 60 s still emits it.
    zone_times = [(r["zone"], r["when"]) for r in rows]
    assert any(
        not any(zone == entity[0] and q * 10 - 30 <= t < q * 10 for zone, t in zone_times)
        for entity, (q, _) in expected
    ), "a shorter window's default is covered"
    with test_pipeline() as p:
        values = (
            p
            | beam.Create(batches_of(rows, 17))
            | StreamGroupValues(GROUP, SPEC.timestamp_column, bounds)
        )
        assert_that(values, equal_to(expected))


def store_problems(validate, *flags):
    return [p for p in validate(PipelineOptions(list(flags))) if "bigtable" in p]


def test_a_half_named_store_is_refused_by_the_stream():
    assert store_problems(validate_stream_options) == []
    assert store_problems(validate_stream_options, "--bigtable_table", "t") == [
        "--bigtable_project is required with the other --bigtable_* flags",
        "--bigtable_instance is required with the other --bigtable_* flags",
    ]


def test_materialize_needs_a_whole_store_and_good_bounds():
    assert validate_materialize_options(PipelineOptions(["--bigtable_instance", "i"])) == [
        "--run_dir is required",
        "--bigtable_project is required",
        "--bigtable_table is required",
    ]
    store = ["--run_dir", "r", "--bigtable_project", "p", "--bigtable_instance", "i"]
    store += ["--bigtable_table", "t"]
    assert validate_materialize_options(PipelineOptions(store)) == []
    assert validate_materialize_options(
        PipelineOptions([*store, "--start", "2026-01-02", "--end", "2026-01-01T00:00:00Z"])
    ) == ["--end must be later than --start"]
    assert validate_materialize_options(PipelineOptions([*store, "--start", "soon"])) == [
        "--start 'soon' is not a timestamp (ISO 8601 or epoch seconds)"
    ]


def test_the_stream_refuses_a_store_for_a_spec_without_aggregates(tmp_path):
    import yaml

    from pipeline import stream
    from tests.support import spec_document

    spec_path = tmp_path / "plain.yaml"
    spec_path.write_text(yaml.safe_dump(spec_document()))
    argv = ["--spec", str(spec_path), "--transform_dir", str(tmp_path), "--output_dir"]
    argv += [str(tmp_path / "out"), "--input_topic", "projects/p/topics/t"]
    argv += ["--bigtable_project", "p", "--bigtable_instance", "i", "--bigtable_table", "t"]
    with pytest.raises(stream.OptionsError, match="has no aggregates to write there"):
        stream.prepare(argv)


def test_materialize_refuses_a_directory_that_is_no_run(tmp_path, capsys):
    from pipeline import materialize

    argv = ["--run_dir", str(tmp_path), "--bigtable_project", "p"]
    argv += ["--bigtable_instance", "i", "--bigtable_table", "t"]
    assert materialize.run(argv) == 2
    assert "has no manifest.json: it is not a complete" in capsys.readouterr().err


def test_materialize_refuses_a_recorded_input_that_changed(tmp_path):
    from pipeline import manifest as manifest_io
    from pipeline.materialize import recorded_inputs
    from pipeline.options import OptionsError

    csv_path = tmp_path / "events.csv"
    csv_path.write_text("id,when,zone,x,y\na,2026-01-01 00:00:00,north,1,0\n")
    entry = {"path": str(csv_path), "fingerprint": manifest_io.file_fingerprint(str(csv_path))}
    inputs = recorded_inputs({"inputs": [entry]}, SPEC)
    assert list(inputs.layouts) == [str(csv_path)] and inputs.bigquery is None
    csv_path.write_text("id,when,zone,x,y\na,2026-01-01 00:00:00,north,2,0\n")
    with pytest.raises(OptionsError, match="changed since the batch run"):
        recorded_inputs({"inputs": [entry]}, SPEC)
    csv_path.unlink()
    with pytest.raises(OptionsError, match="is gone"):
        recorded_inputs({"inputs": [entry]}, SPEC)
    table = recorded_inputs({"inputs": [{"bigquery": "bq://p.d.t", "query": None}]}, SPEC)
    assert table.bigquery.table == "p.d.t"
    query = recorded_inputs({"inputs": [{"bigquery": "bq:query", "query": "SELECT 1"}]}, SPEC)
    assert query.bigquery.query == "SELECT 1"


def test_materialize_help_names_its_flags(capsys):
    from pipeline import materialize

    assert materialize.run(["--help"]) == 0
    text = capsys.readouterr().out
    for flag in ("--run_dir", "--start", "--end", "--input", "--query", "--bigtable_table"):
        assert f"  {flag} " in text, flag


def test_input_flags_override_the_recorded_inputs(tmp_path):
    from pipeline.materialize import flag_inputs

    csv_path = tmp_path / "other.csv"
    csv_path.write_text("id,when,zone,x,y\na,2026-01-01 00:00:00,north,1,0\n")
    assert flag_inputs(PipelineOptions([]), SPEC) is None
    inputs = flag_inputs(PipelineOptions(["--input", str(csv_path)]), SPEC)
    assert list(inputs.layouts) == [str(csv_path)] and inputs.bigquery is None
    query = flag_inputs(PipelineOptions(["--query", "SELECT 1"]), SPEC)
    assert query.bigquery.query == "SELECT 1" and not query.layouts


def test_stream_help_names_the_store_flags(capsys):
    from pipeline import stream

    assert stream.run(["--help"]) == 0
    text = capsys.readouterr().out
    for flag in ("--bigtable_project", "--bigtable_instance", "--bigtable_table", "--create_table"):
        assert f"  {flag} " in text, flag
