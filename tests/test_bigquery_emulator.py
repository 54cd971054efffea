"""BigQuery input end to end, against the bqemulator BigQuery emulator
(tests/bigquery_emulator.py): a table and a query give the same transformed
output as the same rows read from CSV."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.stream_scenario import typed_records
from tests.support import TAXI_SPEC

pytestmark = [pytest.mark.emulator, pytest.mark.slow]
ROWS = 10_000

BIGQUERY_TYPES = {"float": "FLOAT64", "int": "INT64", "string": "STRING", "timestamp": "TIMESTAMP"}


@pytest.fixture(scope="module")
def trips(tmp_path_factory, bigquery_emulator):
    """The same 10,000 sample rows as a CSV file and as a BigQuery table."""
    from pipeline.sample_data import generate_rows, write_csv
    from schemas.spec import load_spec

    spec = load_spec(str(TAXI_SPEC))
    # Typed columns cannot hold the sample's messy values ('forty' in a FLOAT64).
    records = generate_rows(ROWS, seed=21, messy_fraction=0.0)
    csv_path = tmp_path_factory.mktemp("bigquery") / "trips.csv"
    write_csv(records, str(csv_path))
    rows = typed_records(spec, records)
    timestamp = spec.timestamp_column
    for row in rows:
        row[timestamp] = dt.datetime.fromtimestamp(row[timestamp], dt.UTC)
    schema = [(column.name, BIGQUERY_TYPES[column.type.value]) for column in spec.columns]
    bigquery_emulator.create_table("taxi", "trips", schema, rows)
    return csv_path, f"{bigquery_emulator.project}.taxi.trips"


def preprocess(output_dir, *input_flags) -> dict:
    import json

    from pipeline import preprocess as job

    # One in-process worker: the fixture redirects the BigQuery clients by patching
    # them in this process, which worker processes would not see.
    argv = [
        "--spec", str(TAXI_SPEC), "--output_dir", str(output_dir), "--direct_num_workers", "1",
        *input_flags,
    ]  # fmt: skip
    assert job.run(argv) == 0
    return json.loads((output_dir / "manifest.json").read_text())


@pytest.fixture(scope="module")
def csv_output(trips, tmp_path_factory):
    csv_path, _ = trips
    output = tmp_path_factory.mktemp("from_csv") / "out"
    preprocess(output, "--input", str(csv_path))
    return output


def test_a_bigquery_table_gives_the_output_of_the_same_rows_as_csv(
    trips, csv_output, tmp_path, bigquery_emulator
):
    from pipeline.compare_runs import compare

    _, table = trips
    output = tmp_path / "from_table"
    manifest = preprocess(
        output, "--input", f"bq://{table}", "--project", bigquery_emulator.project
    )
    assert manifest["inputs"] == [{"bigquery": f"bq://{table}", "query": None}]
    assert manifest["counts"]["read"] == ROWS
    report = compare(str(csv_output), str(output))
    assert report["problems"] == []
    assert sum(split["keys"] for split in report["splits"].values()) == manifest["counts"]["valid"]


def test_a_query_reads_through_the_same_path(trips, csv_output, tmp_path, bigquery_emulator):
    from pipeline.compare_runs import compare

    _, table = trips
    output = tmp_path / "from_query"
    manifest = preprocess(
        output, "--query", f"SELECT * FROM `{table}`", "--project", bigquery_emulator.project
    )
    assert manifest["inputs"][0]["bigquery"] == "bq:query"
    assert compare(str(csv_output), str(output))["problems"] == []
