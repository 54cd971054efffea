"""The preprocessing_fn built from taxi.yaml: exact values on a handful of rows.

Expected values come from independent NumPy/datetime oracles over the same rows,
never from the code under test.
"""

from __future__ import annotations

import datetime as dt

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest

from pipeline.sample_data import HEADER as COLUMNS
from schemas.spec import DatetimePart
from tests.support import minimal_spec, test_pipeline
from transforms.preprocessing import civil_from_days, datetime_part
from transforms.validation import arrow_schema, rows_schema

pytestmark = pytest.mark.slow


# --- calendar arithmetic against Python's datetime ------------------------------


def test_calendar_parts_match_datetime_for_every_day_1900_to_2100():
    start = dt.date(1900, 1, 1)
    days = np.arange(
        (start - dt.date(1970, 1, 1)).days, (dt.date(2100, 12, 31) - dt.date(1970, 1, 1)).days + 1
    )
    seconds = days * 86400 + 13 * 3600 + 7 * 60
    dates = [dt.date(1970, 1, 1) + dt.timedelta(days=int(d)) for d in days]
    year, month, day = civil_from_days(days, np.where)
    assert year.tolist() == [d.year for d in dates]
    assert month.tolist() == [d.month for d in dates]
    assert day.tolist() == [d.day for d in dates]
    assert datetime_part(seconds, DatetimePart.DAY_OF_YEAR, np.where).tolist() == [
        d.timetuple().tm_yday for d in dates
    ]
    assert datetime_part(seconds, DatetimePart.DAY_OF_WEEK, np.where).tolist() == [
        d.weekday() for d in dates
    ]
    assert set(datetime_part(seconds, DatetimePart.HOUR, np.where).tolist()) == {13}
    assert set(datetime_part(seconds, DatetimePart.MINUTE, np.where).tolist()) == {7}


def test_calendar_parts_are_the_same_in_tensorflow():
    import tensorflow as tf

    seconds = np.array([-86400 * 365 * 30 + 12345, 0, 951782400, 1709164800, 4102444799])
    for part in DatetimePart:
        expected = datetime_part(seconds, part, np.where)
        got = datetime_part(tf.constant(seconds, tf.int64), part, tf.where).numpy()
        assert got.tolist() == expected.tolist(), part


# --- the taxi preprocessing_fn on a handful of rows ----------------------------

BASE = int(dt.datetime(2025, 6, 2, tzinfo=dt.UTC).timestamp())  # a Monday
TRAIN = [
    # trip_id, hours after BASE, plon, plat, dlon, dlat, passengers, zone, payment, vendor, fare
    ("t00", 0, -73.99, 40.75, -73.98, 40.76, 1, "Midtown", "CARD", "CMT", 7.5),
    ("t01", 5, -73.95, 40.77, -73.99, 40.74, 2, "Midtown", "CARD", None, 12.0),
    ("t02", 26, -73.78, 40.64, -73.98, 40.75, 1, "JFK Airport", "CASH", "VTS", 70.0),
    ("t03", 50, -74.01, 40.70, -74.00, 40.73, 3, "Financial District", "CARD", "CMT", 9.25),
    ("t04", 75, -73.97, 40.78, -73.96, 40.77, 1, "Upper West Side", "CASH", None, 6.0),
    ("t05", 99, -73.87, 40.77, -73.98, 40.76, 1, "LaGuardia Airport", "CARD", "VTS", 35.0),
    ("t06", 123, -73.99, 40.73, -73.99, 40.75, 5, "Midtown", "NO_CHARGE", "CMT", 8.0),
    ("t07", 150, -73.96, 40.80, -73.95, 40.81, 1, "Harlem", "CARD", "DDS", 5.5),
    ("t08", 170, -73.94, 40.71, -73.99, 40.72, 2, "Williamsburg", "NO_CHARGE", "CMT", 15.0),
    ("t09", 190, -73.95, 40.74, -73.98, 40.75, 1, "Midtown", "CARD", None, 11.0),
    ("t10", 200, -74.00, 40.74, -73.98, 40.78, 1, "Chelsea", "CASH", "VTS", 13.0),
    ("t11", 230, -73.98, 40.76, -73.97, 40.75, 4, "Midtown", "CARD", "CMT", 6.5),
    ("t12", 260, -73.99, 40.72, -73.95, 40.78, 1, "Greenwich Village", "DISPUTE", "CMT", 19.0),
]
EVAL = [
    ("e00", 3, -73.90, 40.70, -73.90, 40.70, 1, "Nowhere", "CARD", "XYZ", 10.0),
    ("e01", 27, -73.99, 40.75, -73.98, 40.76, 1, "Midtown", "CASH", "CMT", 8.0),
]


def zone_trips(index: int) -> int:
    """Stand-in aggregate values: the aggregates have their own tests."""
    return (index * 7) % 11


def zone_mean_fare(index: int) -> float:
    return 5.0 + (index * 3) % 13


def to_batch(rows, spec) -> pa.RecordBatch:
    columns = {name: [row[i] for row in rows] for i, name in enumerate(COLUMNS)}
    columns["pickup_datetime"] = [BASE + 3600 * h for h in columns["pickup_datetime"]]
    columns["zone_trips_1h"] = [zone_trips(i) for i in range(len(rows))]
    columns["zone_mean_fare_3h"] = [zone_mean_fare(i) for i in range(len(rows))]
    return pa.RecordBatch.from_pydict(columns, schema=rows_schema(spec))


def run_transform(spec, splits: dict, tmp_path) -> tuple[dict, object]:
    """Runs AnalyzeAndTransform and returns ({split: {key: features}}, TFTransformOutput)."""
    import tensorflow as tf
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam

    from transforms.analyze import AnalyzeAndTransform
    from transforms.tfrecords import WriteTFRecordBatches

    out = str(tmp_path / "out")
    with test_pipeline() as p:
        inputs = {
            name: p | f"Create[{name}]" >> beam.Create([batch]) for name, batch in splits.items()
        }
        transformed = inputs | AnalyzeAndTransform(spec, str(tmp_path / "tmp"))
        _ = transformed.transform_fn | tft_beam.WriteTransformFn(out)
        for name, examples in transformed.examples.items():
            _ = examples | f"Write[{name}]" >> WriteTFRecordBatches(
                f"{out}/{name}/part", num_shards=1
            )
    tft_output = tft.TFTransformOutput(out)
    feature_spec = dict(tft_output.transformed_feature_spec())
    feature_spec[spec.key_column] = tf.io.FixedLenFeature([], tf.string)
    decoded = {}
    for name in splits:
        records = list(tf.data.TFRecordDataset(tf.io.gfile.glob(f"{out}/{name}/part*")))
        rows = {}
        for record in records:
            example = tf.io.parse_single_example(record, feature_spec)
            values = {k: v.numpy() for k, v in example.items()}
            rows[values.pop(spec.key_column).decode()] = values
        decoded[name] = rows
    return decoded, tft_output


@pytest.fixture(scope="module")
def taxi_result(taxi_spec, tmp_path_factory):
    splits = {"train": to_batch(TRAIN, taxi_spec), "eval": to_batch(EVAL, taxi_spec)}
    spec = taxi_spec.model_copy(
        update={
            "split": taxi_spec.split.model_copy(update={"percentages": {"train": 90, "eval": 10}})
        }
    )
    return run_transform(spec, splits, tmp_path_factory.mktemp("taxi"))


def column(rows, name):
    return np.array([row[COLUMNS.index(name)] for row in rows], dtype=np.float64)


def test_every_row_keeps_its_key_and_label(taxi_result):
    decoded, _ = taxi_result
    assert sorted(decoded["train"]) == [row[0] for row in TRAIN]
    assert sorted(decoded["eval"]) == [row[0] for row in EVAL]
    for row in TRAIN:
        assert decoded["train"][row[0]]["fare_amount"] == pytest.approx(row[10])


def test_calendar_features(taxi_result):
    decoded, _ = taxi_result
    for row in TRAIN:
        moment = dt.datetime.fromtimestamp(BASE + 3600 * row[1], dt.UTC)
        features = decoded["train"][row[0]]
        assert features["day_of_week"] == moment.weekday()
        assert features["hour_of_day"] == moment.hour


def test_scale_to_0_1_uses_train_min_and_max(taxi_result):
    decoded, _ = taxi_result
    for name in ("pickup_longitude", "pickup_latitude", "dropoff_longitude", "dropoff_latitude"):
        values = column(TRAIN, name)
        expected = (values - values.min()) / (values.max() - values.min())
        got = np.array([decoded["train"][row[0]][f"{name}_scaled"] for row in TRAIN])
        np.testing.assert_allclose(got, expected, atol=1e-4)
        # Eval is scaled with train's statistics, so it may leave [0, 1]. Coordinates
        # are float32 in the graph (about 1e-5 degrees of resolution near -74).
        eval_value = (column(EVAL, name)[0] - values.min()) / (values.max() - values.min())
        assert decoded["eval"]["e00"][f"{name}_scaled"] == pytest.approx(eval_value, abs=1e-3)


def test_deltas_and_distance_are_z_scored_over_train(taxi_result):
    decoded, _ = taxi_result
    latdiff = column(TRAIN, "dropoff_latitude") - column(TRAIN, "pickup_latitude")
    londiff = column(TRAIN, "dropoff_longitude") - column(TRAIN, "pickup_longitude")
    distance = np.log1p(np.hypot(latdiff, londiff))
    for name, values in (("latdiff_z", latdiff), ("londiff_z", londiff), ("euclidean_z", distance)):
        expected = (values - values.mean()) / values.std()
        got = np.array([decoded["train"][row[0]][name] for row in TRAIN])
        np.testing.assert_allclose(got, expected, atol=2e-3)


def test_aggregate_columns_are_transformed_like_raw_columns(taxi_result):
    decoded, _ = taxi_result
    trips = np.log1p([zone_trips(i) for i in range(len(TRAIN))])
    fares = np.array([zone_mean_fare(i) for i in range(len(TRAIN))])
    for name, values in (("zone_trips_1h_log_z", trips), ("zone_mean_fare_3h_z", fares)):
        expected = (values - values.mean()) / values.std()
        got = np.array([decoded["train"][row[0]][name] for row in TRAIN])
        np.testing.assert_allclose(got, expected, atol=1e-4)


def test_passenger_count_passes_through(taxi_result):
    decoded, _ = taxi_result
    assert [decoded["train"][row[0]]["passenger_count"] for row in TRAIN] == [
        row[6] for row in TRAIN
    ]


def test_quantile_buckets_are_in_range_and_ordered(taxi_result):
    decoded, _ = taxi_result
    for name in ("pickup_longitude", "pickup_latitude", "dropoff_longitude", "dropoff_latitude"):
        values = column(TRAIN, name)
        buckets = np.array([decoded["train"][row[0]][f"{name}_bucket"] for row in TRAIN])
        assert buckets.min() >= 0 and buckets.max() <= 9
        order = np.argsort(values, kind="stable")
        assert np.all(np.diff(buckets[order]) >= 0), f"{name} buckets must follow value order"
        assert len(set(buckets.tolist())) >= 5, "13 distinct-ish values should fill many buckets"


def test_vocabularies_rank_by_train_frequency_and_send_unknowns_to_oov(taxi_result):
    decoded, tft_output = taxi_result
    # CARD 6, CASH 3, NO_CHARGE 2, DISPUTE 1 in train.
    ids = {row[8]: decoded["train"][row[0]]["payment_type_id"] for row in TRAIN}
    assert ids == {"CARD": 0, "CASH": 1, "NO_CHARGE": 2, "DISPUTE": 3}
    assert tft_output.vocabulary_size_by_name("payment_type_id") == 4
    zone_vocab = tft_output.vocabulary_by_name("pickup_zone_id")
    assert zone_vocab[0] == b"Midtown"
    zone_size = len(zone_vocab)
    assert zone_size == len({row[7] for row in TRAIN})
    assert zone_size <= decoded["eval"]["e00"]["pickup_zone_id"] < zone_size + 2
    assert decoded["eval"]["e01"]["pickup_zone_id"] == 0


def test_missing_vendor_is_filled_before_the_vocabulary(taxi_result):
    decoded, tft_output = taxi_result
    vocab = [v.decode() for v in tft_output.vocabulary_by_name("vendor_id_id")]
    assert vocab[0] == "CMT"  # 6 of 13
    assert "UNKNOWN" in vocab  # 3 rows without a vendor
    unknown_id = vocab.index("UNKNOWN")
    for row in TRAIN:
        expected = unknown_id if row[9] is None else vocab.index(row[9])
        assert decoded["train"][row[0]]["vendor_id_id"] == expected
    assert decoded["eval"]["e00"]["vendor_id_id"] == len(vocab)  # the one OOV bucket


def test_crosses_are_consistent_and_in_range(taxi_result):
    decoded, _ = taxi_result
    by_day_hour = {}
    for features in [*decoded["train"].values(), *decoded["eval"].values()]:
        assert 0 <= features["day_hour"] < 168
        assert 0 <= features["pickup_cell"] < 100
        assert 0 <= features["pickup_dropoff_cell"] < 10000
        pair = (int(features["day_of_week"]), int(features["hour_of_day"]))
        assert by_day_hour.setdefault(pair, features["day_hour"]) == features["day_hour"]
    # Rows at different (day, hour) pairs mostly get different ids.
    assert len(set(by_day_hour.values())) >= len(by_day_hour) - 2


def test_transformed_schema_declares_every_feature(taxi_result, taxi_spec):
    _, tft_output = taxi_result
    names = set(tft_output.transformed_feature_spec())
    assert names == {f.name for f in taxi_spec.features} | {taxi_spec.label}


# --- the escape hatch -----------------------------------------------------------


def test_custom_preprocessing_fn_is_composed_with_the_declarative_part(tmp_path):
    spec = minimal_spec(preprocessing_fn="tests.custom_preprocessing:x_times_y")
    batch = pa.RecordBatch.from_pydict(
        {"id": ["a", "b", "c"], "when": [0, 1, 2], "x": [1.0, 2.0, 3.0], "y": [4.0, 5.0, 6.0]},
        schema=arrow_schema(spec),
    )
    decoded, _ = run_transform(spec, {"train": batch, "eval": batch}, tmp_path)
    assert {k: float(v["x_times_y"]) for k, v in decoded["train"].items()} == {
        "a": 4.0,
        "b": 10.0,
        "c": 18.0,
    }
    assert decoded["train"]["a"]["x_z"] == pytest.approx(-1.2247, abs=1e-3)


def test_custom_preprocessing_fn_may_not_redefine_a_declared_feature(tmp_path):
    from transforms.preprocessing import make_preprocessing_fn

    spec = minimal_spec(preprocessing_fn="tests.custom_preprocessing:clashing")
    fn = make_preprocessing_fn(spec)
    import tensorflow as tf

    message = "returns feature\\(s\\) x_z that the spec already declares"
    # tf.Transform analyzers are traced in graph mode, as AnalyzeDataset does.
    with tf.compat.v1.Graph().as_default(), pytest.raises(ValueError, match=message):
        fn(
            {
                "id": tf.constant(["a"]),
                "when": tf.constant([0], tf.int64),
                "x": tf.constant([1.0]),
                "y": tf.constant([2.0]),
            }
        )


def test_days_from_civil_inverts_civil_from_days():
    from transforms.preprocessing import days_from_civil

    days = np.arange(-800_000, 800_000, 37)
    year, month, day = civil_from_days(days, np.where)
    np.testing.assert_array_equal(days_from_civil(year, month, day, np.where), days)


def test_a_raising_preprocessing_fn_is_named_with_its_inputs():
    import tensorflow as tf

    from transforms.preprocessing import PreprocessingFnError, make_preprocessing_fn

    spec = minimal_spec(preprocessing_fn="tests.custom_preprocessing:reads_a_missing_input")
    message = (
        "preprocessing_fn tests.custom_preprocessing:reads_a_missing_input raised KeyError: "
        "'no_such_column'; its inputs were id, when, x, y"
    )
    with tf.compat.v1.Graph().as_default(), pytest.raises(PreprocessingFnError) as raised:
        make_preprocessing_fn(spec)(
            {
                "id": tf.constant(["a"]),
                "when": tf.constant([0], tf.int64),
                "x": tf.constant([1.0]),
                "y": tf.constant([2.0]),
            }
        )
    assert str(raised.value) == message


def test_ops_of_a_feature_carry_its_name_for_run_time_errors():
    import tensorflow as tf

    from transforms.preprocessing import make_preprocessing_fn

    spec = minimal_spec()
    with tf.compat.v1.Graph().as_default() as graph:
        make_preprocessing_fn(spec)(
            {
                "id": tf.constant(["a"]),
                "when": tf.constant([0], tf.int64),
                "x": tf.constant([1.0]),
                "y": tf.constant([2.0]),
            }
        )
    names = [op.name for op in graph.get_operations()]
    for feature in spec.features:
        assert any(name.startswith(f"{feature.name}/") for name in names), feature.name
