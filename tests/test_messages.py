"""JSON message parsing: the same rules as CSV, JSON types checked, event time
from the body or from an attribute, and every bad message a dead letter."""

from __future__ import annotations

import json

import pytest
from apache_beam.io.gcp.pubsub import PubsubMessage

from tests.support import minimal_spec
from transforms.messages import PubsubMessages, attribute_event_seconds, row_to_json
from transforms.validation import InputValidator, LineParser


def spec(**overrides):
    columns = [
        {"name": "id", "type": "string"},
        {"name": "when", "type": "timestamp"},
        {"name": "n", "type": "int", "required": False, "default": 1, "min": 0},
        {"name": "x", "type": "float", "max": 10.0},
        {"name": "y", "type": "float"},
        {"name": "kind", "type": "string", "allowed": ["a", "b"], "required": False},
    ]
    return minimal_spec(columns=columns, **overrides)


def parse(spec_, *documents, attributes=None):
    messages = [
        PubsubMessage(
            d if isinstance(d, bytes) else json.dumps(d).encode(), attributes, message_id="1"
        )
        for d in documents
    ]
    validated = InputValidator(spec_, PubsubMessages(spec_)).parse(messages)
    assert validated.header_lines == 0
    for record in validated.dead_letters:
        assert record["source"] == "pubsub:1"
    return validated.valid.to_pylist(), [d["reason"] for d in validated.dead_letters]


GOOD = {"id": "k", "when": "2026-01-01 00:00:10", "n": 2, "x": 1.5, "y": -2.0, "kind": "a"}


def test_a_message_and_the_same_csv_line_give_the_same_row():
    s = spec()
    rows, reasons = parse(s, GOOD)
    layouts = {"f.csv": _layout(s)}
    csv_rows = LineParser(s, layouts).parse([("f.csv", b"k,2026-01-01 00:00:10,2,1.5,-2.0,a")])
    assert reasons == []
    assert rows == csv_rows.valid.to_pylist()
    assert rows[0]["when"] == 1_767_225_610


def _layout(s):
    from transforms.csv_source import layout_from_first_line

    return layout_from_first_line("f.csv", 0, ",".join(s.column_names), s)


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"id": 5}, "id: expected a string, got a number"),
        ({"x": "1.5"}, "x: expected a number, got a string"),
        ({"n": True}, "n: expected a number, got a boolean"),
        ({"y": [1]}, "y: expected a number, got an array"),
        ({"when": 1.5}, "when: expected an ISO 8601 string or integer epoch seconds, got a number"),
        ({"x": 11}, "x: 11 is above max 10"),
        ({"n": -1}, "n: -1 is below min 0"),
        ({"n": 2.5}, "n: '2.5' is not an integer"),
        ({"kind": "c"}, "kind: 'c' is not an allowed value (a, b)"),
        ({"y": None}, "y: required value is missing"),
        ({"when": "2026-02-30 00:00:00"}, "when: '2026-02-30 00:00:00' is not a valid timestamp"),
        ({"n": 10**30}, "n: '1000000000000000000000000000000' is not an integer"),
    ],
)
def test_bad_values_are_dead_letters_with_the_column_and_reason(change, reason):
    rows, reasons = parse(spec(), {**GOOD, **change})
    assert (rows, reasons) == ([], [reason])


def test_missing_optional_values_take_their_defaults_and_extra_fields_are_ignored():
    document = {k: v for k, v in GOOD.items() if k not in ("n", "kind")}
    rows, reasons = parse(spec(), {**document, "comment": "not in the spec"})
    assert reasons == []
    assert rows[0]["n"] == 1 and rows[0]["kind"] is None


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"{", "invalid JSON: Expecting property name enclosed in double quotes"),
        (b"", "invalid JSON: Expecting value"),
        (b"[]", "message is an array, not a JSON object"),
        (b"\xff", "invalid UTF-8 at byte 0"),
        (
            b"[" * 100_000 + b"]" * 100_000,
            "invalid JSON: nested too deeply (line of 200,000 characters, cut to the first "
            "10,000 here)",
        ),
    ],
)
def test_undecodable_messages_are_dead_letters(data, reason):
    assert parse(spec(), data) == ([], [reason])


def test_nan_and_infinity_are_not_finite_numbers():
    _, reasons = parse(spec(), b'{"id": "k", "when": 0, "x": NaN, "y": Infinity}')
    assert reasons == ["x: 'nan' is not a finite number"]


def test_event_time_from_an_attribute_fills_the_timestamp_column():
    s = spec(timestamp_attribute="ts")
    body = {k: v for k, v in GOOD.items() if k != "when"}
    rows, _ = parse(s, body, attributes={"ts": "1767225610000"})
    assert rows[0]["when"] == 1_767_225_610
    rows, _ = parse(s, body, attributes={"ts": "2026-01-01T00:00:10Z"})
    assert rows[0]["when"] == 1_767_225_610
    rows, reasons = parse(s, GOOD, attributes={"ts": "2026-01-01T00:00:10Z"})
    assert reasons == [] and len(rows) == 1


@pytest.mark.parametrize(
    "attributes, document, reason",
    [
        ({}, GOOD, "when: timestamp attribute 'ts' is missing"),
        ({"ts": "noon"}, GOOD, "when: timestamp attribute 'ts' value 'noon' is not a timestamp"),
        (
            {"ts": "2026-01-01T00:00:11Z"},
            GOOD,
            "when: timestamp attribute 'ts' (2026-01-01T00:00:11Z) disagrees with the body's "
            "when (2026-01-01 00:00:10)",
        ),
    ],
)
def test_bad_timestamp_attributes_are_dead_letters(attributes, document, reason):
    assert parse(spec(timestamp_attribute="ts"), document, attributes=attributes) == ([], [reason])


def test_attribute_timestamps_follow_the_pubsub_convention():
    assert attribute_event_seconds("1500") == 1
    assert attribute_event_seconds("1970-01-01T00:01:00+00:00") == 60


def test_a_row_written_as_json_parses_back_to_itself():
    rows, _ = parse(spec(), GOOD)
    again, reasons = parse(spec(), json.loads(row_to_json(rows[0])))
    assert (again, reasons) == (rows, [])


def test_validated_rows_become_stream_elements_at_their_event_time():
    import apache_beam as beam
    import pyarrow as pa
    from apache_beam.testing.util import assert_that, equal_to

    from tests.support import test_pipeline
    from transforms.messages import RowsAtEventTime

    batch = pa.RecordBatch.from_pylist([{"id": "k", "when": 60}, {"id": "j", "when": 120}])
    with test_pipeline() as p:
        stamped = (
            p
            | beam.Create([batch])
            | RowsAtEventTime("when")
            | beam.Map(lambda row, at=beam.DoFn.TimestampParam: (row, int(at)))
        )
        expected = [({"id": "k", "when": 60}, 60), ({"id": "j", "when": 120}, 120)]
        assert_that(stamped, equal_to(expected))
