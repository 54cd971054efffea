"""The spec loader on tables unlike the taxi one: no event time, no key,
missing-value tokens, aggregates over optional columns (issue 18)."""

from __future__ import annotations

import pytest

from schemas.spec import RECORD_KEY, SpecError, parse_spec


def problems_of(document: dict) -> list[str]:
    with pytest.raises(SpecError) as raised:
        parse_spec(document, "test.yaml")
    return raised.value.problems


def plain_table(**extra) -> dict:
    """A table with neither event time nor key."""
    return {
        "name": "plain",
        "columns": [
            {"name": "size", "type": "float", "required": False, "null_tokens": ["-"]},
            {"name": "colour", "type": "string", "required": False},
            {"name": "price", "type": "float"},
        ],
        "label": "price",
        "null_tokens": ["NA", "NULL", "\\N"],
        "features": [
            {"name": "size_z", "source": "size", "transform": ["fill_missing", "scale_to_z_score"]},
        ],
        **extra,
    }


def with_fill_value(document: dict) -> dict:
    document["features"][0]["transform"] = [{"fill_missing": {"value": 0.0}}, "scale_to_z_score"]
    return document


def test_a_table_without_event_time_or_key_loads_with_a_derived_key():
    spec = parse_spec(with_fill_value(plain_table()))
    assert spec.timestamp_column is None
    assert spec.key_column is None
    assert spec.record_key == RECORD_KEY == "__record_key__"
    assert spec.derives_record_key
    assert spec.split_key is None  # the whole record is hashed


def test_a_declared_key_is_the_record_key_and_the_split_key(taxi_spec):
    assert taxi_spec.record_key == taxi_spec.key_column == "trip_id"
    assert not taxi_spec.derives_record_key
    assert taxi_spec.split_key == "trip_id"


def test_a_split_key_can_be_named_without_a_record_key():
    document = with_fill_value(plain_table(split={"key": "price"}))
    assert parse_spec(document).split_key == "price"


def test_missing_tokens_join_the_empty_field_the_spec_and_the_column():
    spec = parse_spec(with_fill_value(plain_table()))
    assert spec.missing_tokens("size") == frozenset({"", "NA", "NULL", "\\N", "-"})
    assert spec.missing_tokens(spec.column("colour")) == frozenset({"", "NA", "NULL", "\\N"})


def test_by_default_only_the_empty_field_is_missing(taxi_spec):
    assert all(taxi_spec.missing_tokens(c) == frozenset({""}) for c in taxi_spec.columns)


def test_blank_and_padded_null_tokens_are_refused():
    document = with_fill_value(plain_table(null_tokens=["", " NA"]))
    document["columns"][0]["null_tokens"] = ["  "]
    assert problems_of(document) == [
        "columns[0] (size).null_tokens: '  ': the empty field always means missing",
        "null_tokens: '': the empty field always means missing",
        "null_tokens: ' NA' has leading or trailing whitespace",
    ]


def test_aggregates_without_event_time_are_refused_with_a_clear_message(taxi_doc):
    # The timestamp column stays a column (its calendar features still work);
    # only its role as the event time goes.
    del taxi_doc["timestamp_column"]
    assert problems_of(taxi_doc) == [
        "aggregates: aggregates need an event time: set timestamp_column"
    ]
    taxi_doc["aggregates"] = []
    taxi_doc["features"] = [f for f in taxi_doc["features"] if not f["name"].startswith("zone_")]
    assert parse_spec(taxi_doc).timestamp_column is None


def test_timestamp_attribute_needs_a_timestamp_column():
    document = with_fill_value(plain_table(timestamp_attribute="event_time"))
    assert problems_of(document) == [
        "timestamp_attribute: it fills the timestamp column: set timestamp_column"
    ]


def test_no_column_may_take_the_derived_key_name():
    document = with_fill_value(plain_table())
    document["columns"].append({"name": RECORD_KEY, "type": "string"})
    assert problems_of(document) == [
        "columns[3] (__record_key__): the name is reserved for the derived record key"
    ]


def test_a_feature_cannot_take_the_derived_key_name():
    document = with_fill_value(plain_table())
    document["features"].append({"name": RECORD_KEY, "source": "price", "transform": "log1p"})
    assert problems_of(document) == [
        "features[1] (__record_key__): name is the key column's output name"
    ]


def test_aggregates_may_read_an_optional_column(taxi_doc):
    for column in taxi_doc["columns"]:
        if column["name"] == "fare_amount":
            column_with_optional_value = dict(column, name="tip", required=False)
    taxi_doc["columns"].append(column_with_optional_value)
    mean = next(a for a in taxi_doc["aggregates"] if a["agg"] == "mean")
    mean["value"] = "tip"
    spec = parse_spec(taxi_doc)
    assert next(a for a in spec.aggregates if a.agg.value == "mean").value == "tip"


def test_null_tokens_change_the_spec_hash_and_their_absence_does_not(taxi_doc):
    first = parse_spec(taxi_doc).spec_hash
    assert parse_spec(dict(taxi_doc, null_tokens=[])).spec_hash == first
    assert parse_spec(dict(taxi_doc, null_tokens=["NA"])).spec_hash != first


def test_out_of_range_tolerance_defaults_and_is_bounded(taxi_doc):
    assert parse_spec(taxi_doc).anomalies.out_of_range_tolerance == 0.05
    taxi_doc["anomalies"] = {"out_of_range_tolerance": 1.5}
    assert problems_of(taxi_doc) == [
        "anomalies.out_of_range_tolerance: Input should be less than or equal to 1"
    ]


def test_every_column_name_the_job_adds_is_reserved():
    from schemas.spec import RECORD_KEY, RESERVED_COLUMN_NAMES
    from transforms.analyze import LABEL_PASSTHROUGH, PASSTHROUGH_KEY
    from transforms.messages import EVENT_TIME

    assert set(RESERVED_COLUMN_NAMES) == {
        RECORD_KEY,
        EVENT_TIME,
        PASSTHROUGH_KEY,
        LABEL_PASSTHROUGH,
    }
