"""BigQuery input: flag rules, and rows mapped onto the CSV path's validation."""

from __future__ import annotations

import datetime as dt
import decimal

import pytest

from tests.support import minimal_spec
from transforms.bigquery_source import BigQueryRows, BigQuerySource, BigQuerySourceError
from transforms.csv_source import layout_from_first_line
from transforms.records import field_text
from transforms.validation import InputValidator, LineParser


@pytest.mark.parametrize(
    "inputs, query, expected",
    [
        (["data/*.csv"], None, None),
        (["bq://p.d.t"], None, BigQuerySource(table="p.d.t")),
        (None, "SELECT 1", BigQuerySource(query="SELECT 1")),
    ],
)
def test_flags_name_the_source(inputs, query, expected):
    assert BigQuerySource.from_flags(inputs, query) == expected


@pytest.mark.parametrize(
    "inputs, query, message",
    [
        (["bq://p.d"], None, "--input bq://p.d must look like bq://project.dataset.table"),
        (["bq://p.d.t", "x.csv"], None, "a bq:// --input cannot be combined with other inputs"),
        (["x.csv"], "SELECT 1", "give either --input or --query, not both"),
    ],
)
def test_bad_bigquery_flags_are_usage_errors(inputs, query, message):
    with pytest.raises(BigQuerySourceError, match=message):
        BigQuerySource.from_flags(inputs, query)


def test_bad_bigquery_flags_exit_2_before_anything_runs(tmp_path, capsys):
    from pipeline import preprocess
    from tests.support import TAXI_SPEC

    argv = [
        "--spec",
        str(TAXI_SPEC),
        "--input",
        "bq://only.two",
        "--output_dir",
        str(tmp_path / "o"),
    ]
    assert preprocess.run(argv) == 2
    assert "bq://project.dataset.table" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_values_become_field_text():
    moment = dt.datetime(2026, 1, 1, 0, 0, 10)
    assert field_text(moment) == "2026-01-01T00:00:10+00:00"
    assert field_text(moment.replace(tzinfo=dt.UTC)) == "2026-01-01T00:00:10+00:00"
    assert field_text(None) == ""
    assert field_text(0.1) == "0.1"
    assert field_text(decimal.Decimal("2.50")) == "2.50"
    assert field_text(dt.date(2026, 1, 2)) == "2026-01-02"


SPEC = minimal_spec(
    columns=[
        {"name": "id", "type": "string"},
        {"name": "when", "type": "timestamp"},
        {"name": "x", "type": "float", "max": 10.0},
        {"name": "y", "type": "float"},
    ]
)


def parse_rows(rows):
    return InputValidator(SPEC, BigQueryRows(SPEC, "bq://p.d.t")).parse(rows)


def test_a_bigquery_row_and_the_same_csv_line_give_the_same_row():
    row = {"id": "k", "when": dt.datetime(2026, 1, 1, 0, 0, 10, tzinfo=dt.UTC), "x": 1.5, "y": -2.0}
    validated = parse_rows([row])
    layouts = {"f.csv": layout_from_first_line("f.csv", 0, "id,when,x,y", SPEC)}
    from_csv = LineParser(SPEC, layouts).parse([("f.csv", b"k,2026-01-01 00:00:10,1.5,-2.0")])
    assert validated.dead_letters == []
    assert validated.valid.to_pylist() == from_csv.valid.to_pylist()


def test_bad_bigquery_rows_are_dead_letters_with_reasons():
    when = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    rows = [
        {"id": "a", "when": when, "x": 11.0, "y": 0.0},
        {"id": "b", "when": None, "x": 1.0, "y": 0.0},
        {"id": "c", "when": when, "x": 1.0},
        {"id": "d", "when": when, "x": float("nan"), "y": 0.0},
    ]
    validated = parse_rows(rows)
    dead = validated.dead_letters
    assert (validated.valid.num_rows, validated.header_lines) == (0, 0)
    assert sorted(d["reason"] for d in dead) == [
        "column(s) y not in the BigQuery row",
        "when: required value is missing",
        "x: 'nan' is not a finite number",
        "x: 11.0 is above max 10",
    ]
    assert {d["source"] for d in dead} == {"bq://p.d.t"}
