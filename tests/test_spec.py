"""The spec loader: taxi.yaml's invariants, and one test per kind of bad spec."""

from __future__ import annotations

import subprocess
import sys

import pytest

from schemas.spec import Kind, SpecError, load_spec, parse_spec
from tests.support import ROOT, TAXI_SPEC


def problems_of(document: dict) -> list[str]:
    with pytest.raises(SpecError) as raised:
        parse_spec(document, "test.yaml")
    return raised.value.problems


def feature(doc: dict, name: str) -> dict:
    return next(f for f in doc["features"] if f["name"] == name)


# --- taxi.yaml ---------------------------------------------------------------


def test_taxi_spec_declares_the_reference_feature_engineering(taxi_spec):
    kinds = taxi_spec.feature_kinds()
    assert kinds["day_of_week"] == (Kind.CATEGORICAL, 7)
    assert kinds["hour_of_day"] == (Kind.CATEGORICAL, 24)
    for coordinate in ("pickup_longitude", "pickup_latitude", "dropoff_longitude"):
        assert kinds[f"{coordinate}_scaled"] == (Kind.FLOAT, None)
        assert kinds[f"{coordinate}_bucket"] == (Kind.CATEGORICAL, 10)
    assert kinds["pickup_dropoff_cell"][0] is Kind.CATEGORICAL
    assert kinds["day_hour"] == (Kind.CATEGORICAL, 168)
    assert {"latdiff_z", "londiff_z", "euclidean_z", "passenger_count"} <= set(kinds)
    assert taxi_spec.label == "fare_amount"
    assert taxi_spec.column(taxi_spec.timestamp_column).type.value == "timestamp"


def test_every_bucketized_feature_has_one_bucket_count(taxi_spec):
    for feat in taxi_spec.features:
        buckets = [step for step in feat.transform if step.type == "bucketize"]
        assert len(buckets) <= 1
        if buckets:
            assert buckets[0].num_buckets >= 2


def test_every_vocabulary_has_oov_buckets_in_taxi(taxi_spec):
    vocabularies = [s for f in taxi_spec.features for s in f.transform if s.type == "vocabulary"]
    assert len(vocabularies) == 3
    assert all(step.num_oov_buckets >= 1 for step in vocabularies)


def test_spec_hash_changes_with_content(taxi_doc):
    first = parse_spec(taxi_doc).spec_hash
    taxi_doc["split"]["percentages"] = {"train": 70, "eval": 30}
    assert parse_spec(taxi_doc).spec_hash != first


def test_step_shorthands_are_equivalent(taxi_doc):
    feature(taxi_doc, "euclidean_z")["transform"] = [{"type": "log1p"}, "scale_to_z_score"]
    spec = parse_spec(taxi_doc)
    steps = next(f for f in spec.features if f.name == "euclidean_z").transform
    assert [s.type for s in steps] == ["log1p", "scale_to_z_score"]


def test_loading_the_spec_does_not_import_tensorflow_or_beam():
    code = (
        "import sys; from schemas.spec import load_spec; load_spec(sys.argv[1]); "
        "print(sorted(m for m in ('tensorflow', 'apache_beam') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(TAXI_SPEC)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "[]"


# --- bad specs: one test per kind ---------------------------------------------


def test_misspelled_transformation_is_named_with_a_suggestion(taxi_doc):
    feature(taxi_doc, "latdiff_z")["transform"] = "scale_to_zscore"
    (problem,) = problems_of(taxi_doc)
    assert problem.startswith("features[7] (latdiff_z).transform:")
    assert "unknown transformation 'scale_to_zscore'" in problem
    assert "did you mean 'scale_to_z_score'" in problem


def test_feature_over_a_missing_column(taxi_doc):
    feature(taxi_doc, "passenger_count")["source"] = "passenger_cnt"
    (problem,) = problems_of(taxi_doc)
    assert "features[6] (passenger_count)" in problem
    assert "source 'passenger_cnt' is not a column" in problem
    assert "did you mean 'passenger_count'" in problem


def test_unknown_field_is_rejected(taxi_doc):
    taxi_doc["columns"][2]["maximum"] = 3
    (problem,) = problems_of(taxi_doc)
    assert problem == "columns[2] (pickup_longitude).maximum: unknown field (check its spelling)"


def test_unknown_column_type(taxi_doc):
    taxi_doc["columns"][0]["type"] = "text"
    (problem,) = problems_of(taxi_doc)
    assert problem.startswith("columns[0] (trip_id).type:")


def test_duplicate_column(taxi_doc):
    taxi_doc["columns"].append(dict(taxi_doc["columns"][0]))
    assert any("duplicate column name" in p for p in problems_of(taxi_doc))


def test_required_column_with_default(taxi_doc):
    taxi_doc["columns"][2]["default"] = -73.9
    assert problems_of(taxi_doc) == [
        "columns[2] (pickup_longitude): a required column cannot have a default"
    ]


def test_default_outside_the_columns_range(taxi_doc):
    passengers = next(c for c in taxi_doc["columns"] if c["name"] == "passenger_count")
    passengers["default"] = 0
    (problem,) = problems_of(taxi_doc)
    assert "default 0 is below min 1" in problem


def test_min_above_max(taxi_doc):
    taxi_doc["columns"][2]["min"] = 0
    (problem,) = problems_of(taxi_doc)
    assert "min 0.0 is greater than max -73.65" in problem


def test_range_on_a_string_column(taxi_doc):
    zone = next(c for c in taxi_doc["columns"] if c["name"] == "pickup_zone")
    zone["min"] = 1
    assert any("min/max apply only" in p for p in problems_of(taxi_doc))


def test_unknown_timezone(taxi_doc):
    taxi_doc["columns"][1]["timezone"] = "Mars/Olympus"
    assert problems_of(taxi_doc) == [
        "columns[1] (pickup_datetime): unknown timezone 'Mars/Olympus'"
    ]


def test_timestamp_column_must_be_a_timestamp(taxi_doc):
    taxi_doc["timestamp_column"] = "fare_amount"
    assert problems_of(taxi_doc) == [
        "timestamp_column: column 'fare_amount' is float, expected timestamp"
    ]


def test_label_must_exist(taxi_doc):
    taxi_doc["label"] = "fare"
    assert any(p.startswith("label: column 'fare' does not exist") for p in problems_of(taxi_doc))


def test_key_column_must_be_required(taxi_doc):
    taxi_doc["key_column"] = "vendor_id"
    assert "key_column: column 'vendor_id' must be required" in problems_of(taxi_doc)


@pytest.mark.parametrize(
    "percentages, expected",
    [
        ({"train": 80, "eval": 10}, "split.percentages: add up to 90, not 100"),
        ({"train": 100}, "split.percentages: must include 'eval'"),
        ({"train": 100, "eval": 0}, "split.percentages: every percentage must be positive"),
    ],
)
def test_bad_split_rule(taxi_doc, percentages, expected):
    taxi_doc["split"]["percentages"] = percentages
    assert expected in problems_of(taxi_doc)


def test_step_applied_to_the_wrong_kind(taxi_doc):
    feature(taxi_doc, "pickup_zone_id")["transform"] = "scale_to_z_score"
    (problem,) = problems_of(taxi_doc)
    assert "scale_to_z_score): does not apply to string values" in problem


def test_vocabulary_must_be_the_last_step(taxi_doc):
    feature(taxi_doc, "payment_type_id")["transform"] = ["vocabulary", "scale_to_z_score"]
    problems = problems_of(taxi_doc)
    assert any("vocabulary): must be the last step" in p for p in problems)


def test_cross_needs_two_sources(taxi_doc):
    feature(taxi_doc, "day_hour")["sources"] = ["day_of_week"]
    assert any("a cross takes two or more 'sources'" in p for p in problems_of(taxi_doc))


def test_feature_can_only_use_earlier_features(taxi_doc):
    cross = feature(taxi_doc, "day_hour")
    taxi_doc["features"].remove(cross)
    taxi_doc["features"].insert(0, cross)
    problems = problems_of(taxi_doc)
    assert any("source 'day_of_week' is not a column" in p for p in problems)


def test_optional_column_without_default_needs_fill_missing(taxi_doc):
    feature(taxi_doc, "vendor_id_id")["transform"] = {"vocabulary": {"num_oov_buckets": 1}}
    (problem,) = problems_of(taxi_doc)
    assert "optional without a default, so the first step must be fill_missing" in problem


def test_fill_missing_value_of_the_wrong_type(taxi_doc):
    feature(taxi_doc, "vendor_id_id")["transform"][0] = {"fill_missing": {"value": 3}}
    (problem,) = problems_of(taxi_doc)
    assert "value 3 is not a string" in problem


def test_bad_step_parameter(taxi_doc):
    feature(taxi_doc, "pickup_latitude_bucket")["transform"] = {"bucketize": {"num_buckets": 1}}
    (problem,) = problems_of(taxi_doc)
    assert problem.startswith("features[11] (pickup_latitude_bucket).transform[0].num_buckets:")


def test_derived_column_arity(taxi_doc):
    taxi_doc["derived"][0]["inputs"] = ["dropoff_latitude"]
    assert any("subtract takes exactly 2 inputs" in p for p in problems_of(taxi_doc))


def test_feature_name_clashing_with_the_label(taxi_doc):
    feature(taxi_doc, "latdiff_z")["name"] = "fare_amount"
    assert any("name is the label's output name" in p for p in problems_of(taxi_doc))


def test_bad_preprocessing_fn_reference(taxi_doc):
    taxi_doc["preprocessing_fn"] = "not a reference"
    (problem,) = problems_of(taxi_doc)
    assert problem.startswith("preprocessing_fn:")


def test_all_problems_are_reported_at_once(taxi_doc):
    taxi_doc["label"] = "fare"
    feature(taxi_doc, "passenger_count")["source"] = "passenger_cnt"
    assert len(problems_of(taxi_doc)) == 2


def test_unreadable_and_invalid_yaml(tmp_path):
    with pytest.raises(SpecError, match="cannot read the spec"):
        load_spec(str(tmp_path / "missing.yaml"))
    broken = tmp_path / "broken.yaml"
    broken.write_text("columns: [\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(str(broken))
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n")
    with pytest.raises(SpecError, match="must be a YAML mapping"):
        load_spec(str(scalar))


def test_taxi_declares_the_zone_aggregates(taxi_spec):
    by_name = {a.name: a for a in taxi_spec.aggregates}
    trips, fares = by_name["zone_trips_1h"], by_name["zone_mean_fare_3h"]
    assert (trips.key, trips.agg.value, trips.window_seconds, trips.period_seconds) == (
        ["pickup_zone"],
        "count",
        3600,
        300,
    )
    assert (fares.key, fares.agg.value, fares.value, fares.window_seconds) == (
        ["pickup_zone"],
        "mean",
        "fare_amount",
        3 * 3600,
    )
    kinds = taxi_spec.feature_kinds()
    assert kinds["zone_trips_1h_log_z"] == (Kind.FLOAT, None)


@pytest.mark.parametrize(
    "text, seconds",
    [("30s", 30), ("5min", 300), ("5m", 300), ("1h", 3600), ("2d", 172800), (90, 90)],
)
def test_durations(text, seconds):
    from schemas.spec import parse_duration

    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["0s", "5 parsecs", "-1h", True, 0])
def test_bad_durations(text):
    from schemas.spec import parse_duration

    with pytest.raises(ValueError):
        parse_duration(text)


def test_label_kind_follows_the_label_column(taxi_doc):
    assert parse_spec(taxi_doc).label_kind == "regression"
    taxi_doc["columns"].append({"name": "tipped", "type": "int", "allowed": [0, 1]})
    taxi_doc["label"] = "tipped"
    assert parse_spec(taxi_doc).label_kind == "binary"
