"""Anomaly checks: injected problems are found, their look-alikes are not.

Statistics come from StatisticsCombineFn over small RecordBatches built here;
expected rates and distances are computed directly from the injected values.
"""

from __future__ import annotations

import collections
import json
import math

import numpy as np
import pyarrow as pa
import pytest

from pipeline.anomalies import (
    AnomalyThresholds,
    find_anomalies,
    jensen_shannon_divergence,
    numeric_drift,
    oov_count,
)
from schemas.spec import SpecError, parse_spec
from tests.support import ZONES_SPEC_DOCUMENT
from transforms.statistics import StatisticsCombineFn

DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
ANOMALY_KEYS = {"kind", "stage", "feature", "split", "value", "threshold", "message"}


def statistics(columns: dict[str, pa.Array], kinds: dict[str, str]) -> dict:
    combine_fn = StatisticsCombineFn(list(kinds.items()))
    accumulator = combine_fn.add_input(
        combine_fn.create_accumulator(), pa.RecordBatch.from_pydict(columns)
    )
    return combine_fn.extract_output(accumulator)


def tft_vocabulary(train_values: list[str]) -> dict[str, int]:
    """tf.Transform's order: by descending frequency, ties by descending value."""
    counts = collections.Counter(train_values)
    ranked = sorted(counts, key=lambda value: (counts[value], value), reverse=True)
    return {value: index for index, value in enumerate(ranked)}


def as_ids(values: list[str], vocabulary: dict[str, int]) -> pa.Array:
    """One-element id lists, out-of-vocabulary values in the one OOV bucket (= size)."""
    return pa.array(
        [[vocabulary.get(value, len(vocabulary))] for value in values],
        type=pa.large_list(pa.int64()),
    )


def of_kind(anomalies: list[dict], kind: str) -> list[dict]:
    return [a for a in anomalies if a["kind"] == kind]


@pytest.fixture
def days():
    rng = np.random.default_rng(0)
    train = rng.choice(DAYS, 2000).tolist()
    evaluation = rng.choice(DAYS, 400).tolist()
    return train, evaluation


def test_a_renamed_category_on_eval_gives_its_oov_rate(days):
    train, evaluation = days
    # The eval extract spells Tuesday 'Tues': every Tuesday leaves the vocabulary.
    evaluation = ["Tues" if day == "Tue" else day for day in evaluation]
    vocabulary = tft_vocabulary(train)
    kinds = {"day_id": "categorical"}
    transformed = {
        "train": statistics({"day_id": as_ids(train, vocabulary)}, kinds),
        "eval": statistics({"day_id": as_ids(evaluation, vocabulary)}, kinds),
    }
    raw = statistics({"day": pa.array(train)}, {"day": "categorical"})

    anomalies = find_anomalies(raw, transformed, {"day_id": len(vocabulary)}, AnomalyThresholds())

    expected_rate = evaluation.count("Tues") / len(evaluation)
    assert expected_rate > 0.1
    (oov,) = of_kind(anomalies, "oov_rate")
    assert oov["feature"] == "day_id"
    assert oov["split"] == "eval"
    assert oov["value"] == pytest.approx(expected_rate)
    assert oov["threshold"] == 0.01
    assert "day_id" in oov["message"]


def test_eval_values_inside_the_vocabulary_give_no_oov_anomaly(days):
    train, evaluation = days
    vocabulary = tft_vocabulary(train)
    kinds = {"day_id": "categorical"}
    transformed = {"eval": statistics({"day_id": as_ids(evaluation, vocabulary)}, kinds)}
    raw = statistics({"day": pa.array(train)}, {"day": "categorical"})
    anomalies = find_anomalies(raw, transformed, {"day_id": len(vocabulary)}, AnomalyThresholds())
    assert of_kind(anomalies, "oov_rate") == []


def test_oov_rate_at_the_threshold_is_not_an_anomaly_and_above_it_is():
    ids = [0] * 99 + [7]  # one of 100 values is out of a 7-entry vocabulary
    transformed = {"eval": statistics({"id": pa.array(ids)}, {"id": "categorical"})}
    raw = statistics({"x": pa.array([1.0, 2.0])}, {"x": "numeric"})
    at_limit = AnomalyThresholds(max_oov_rate=0.01)
    below_limit = AnomalyThresholds(max_oov_rate=0.005)
    assert of_kind(find_anomalies(raw, transformed, {"id": 7}, at_limit), "oov_rate") == []
    assert len(of_kind(find_anomalies(raw, transformed, {"id": 7}, below_limit), "oov_rate")) == 1


def test_oov_counts_ids_at_or_above_the_size_and_negative_ids():
    ids = [0, 1, 2, 3, 3, 4, -1, 9]
    column = statistics({"id": pa.array(ids)}, {"id": "categorical"})["columns"]["id"]
    assert oov_count(column, 3) == sum(1 for i in ids if i >= 3 or i < 0)
    # A numeric description settles the count only when the range does.
    numeric = statistics({"id": pa.array([0, 1, 2])}, {"id": "numeric"})["columns"]["id"]
    assert oov_count(numeric, 3) == 0
    assert oov_count(numeric, 2) is None


def test_a_scaled_feature_outside_0_1_on_eval_is_out_of_range():
    kinds = {"fare_scaled": "numeric"}
    transformed = {
        "train": statistics({"fare_scaled": pa.array([0.0, 0.4, 1.0])}, kinds),
        "eval": statistics({"fare_scaled": pa.array([0.2, 1.35, 0.9])}, kinds),
        "test": statistics({"fare_scaled": pa.array([-0.5, 0.3])}, kinds),
    }
    raw = statistics({"fare": pa.array([3.0, 5.0])}, {"fare": "numeric"})
    anomalies = find_anomalies(
        raw, transformed, {}, AnomalyThresholds(), scaled_features=["fare_scaled"]
    )
    found = {(a["split"], a["value"], a["threshold"]) for a in of_kind(anomalies, "out_of_range")}
    assert found == {("eval", 1.35, 1.0), ("test", -0.5, 0.0)}


def scaled_statistics(eval_values: list[float], train_values=(0.0, 0.4, 1.0)) -> dict:
    kinds = {"fare_scaled": "numeric"}
    return {
        "train": statistics({"fare_scaled": pa.array(list(train_values))}, kinds),
        "eval": statistics({"fare_scaled": pa.array(eval_values)}, kinds),
    }


def out_of_range(transformed: dict, thresholds: AnomalyThresholds) -> set:
    raw = statistics({"fare": pa.array([3.0, 5.0])}, {"fare": "numeric"})
    anomalies = find_anomalies(raw, transformed, {}, thresholds, scaled_features=["fare_scaled"])
    return {(a["split"], a["value"]) for a in of_kind(anomalies, "out_of_range")}


def test_eval_may_exceed_0_1_by_the_tolerance_but_not_more():
    # The bundled sample's eval reaches 1.00204: sampling, not a shift.
    assert out_of_range(scaled_statistics([-0.03, 0.5, 1.00204]), AnomalyThresholds()) == set()
    assert out_of_range(scaled_statistics([0.5, 1.05]), AnomalyThresholds()) == set()
    # A real shift: eval reaches past train's range by a fifth of it.
    assert out_of_range(scaled_statistics([-0.2, 1.2]), AnomalyThresholds()) == {
        ("eval", -0.2),
        ("eval", 1.2),
    }
    strict = AnomalyThresholds(out_of_range_tolerance=0.0)
    assert out_of_range(scaled_statistics([0.5, 1.00204]), strict) == {("eval", 1.00204)}


def test_the_tolerance_does_not_apply_to_the_split_that_was_scaled():
    # Train defines the range: any value of train outside [0, 1] is a bug in the graph.
    transformed = scaled_statistics([0.5], train_values=[0.0, 1.01])
    assert out_of_range(transformed, AnomalyThresholds()) == {("train", 1.01)}
    # ...but float32 rounding a few ulps outside is not.
    transformed = scaled_statistics([0.5], train_values=[-1e-8, 1.0 + 1e-8])
    assert out_of_range(transformed, AnomalyThresholds()) == set()


def test_the_tolerance_is_read_from_the_spec():
    spec = parse_spec({**ZONES_SPEC_DOCUMENT, "anomalies": {"out_of_range_tolerance": 0.2}})
    assert AnomalyThresholds.from_spec(spec).out_of_range_tolerance == 0.2
    assert AnomalyThresholds.from_spec(parse_spec(ZONES_SPEC_DOCUMENT)).out_of_range_tolerance == (
        0.05
    )


def test_a_constant_and_an_always_missing_feature_are_found():
    rows = 50
    raw = statistics(
        {
            "vendor": pa.array(["CMT"] * rows),
            "fare": pa.array(np.linspace(3, 60, rows)),
            "tip": pa.array([None] * rows, type=pa.float64()),
        },
        {"vendor": "categorical", "fare": "numeric", "tip": "numeric"},
    )
    transformed = {
        "train": statistics(
            {
                "fare_z": pa.array(np.linspace(-1, 1, rows)),
                "airport_fee": pa.array([[1.25]] * rows, type=pa.large_list(pa.float32())),
                "note": pa.array([[]] * rows, type=pa.large_list(pa.large_binary())),
            },
            {"fare_z": "numeric", "airport_fee": "numeric", "note": "categorical"},
        )
    }
    anomalies = find_anomalies(raw, transformed, {}, AnomalyThresholds())
    constant = {(a["stage"], a["feature"], a["value"]) for a in of_kind(anomalies, "constant")}
    missing = {(a["stage"], a["feature"], a["value"]) for a in of_kind(anomalies, "always_missing")}
    assert constant == {("raw", "vendor", "CMT"), ("transformed", "airport_fee", 1.25)}
    assert missing == {("raw", "tip", rows), ("transformed", "note", rows)}


def normal_fares(seed: int, shift: float = 0.0, rows: int = 3000) -> pa.Array:
    return pa.array(np.random.default_rng(seed).normal(15.0 + shift, 4.0, rows))


def test_a_shifted_numeric_column_drifts_and_a_resampled_one_does_not():
    kinds = {"fare": "numeric", "tip": "numeric"}
    baseline_raw = statistics({"fare": normal_fares(1), "tip": normal_fares(2)}, kinds)
    # fare moves by two standard deviations; tip is a new sample of the same law.
    current_raw = statistics({"fare": normal_fares(3, shift=8.0), "tip": normal_fares(4)}, kinds)
    anomalies = find_anomalies(
        current_raw,
        {},
        {},
        AnomalyThresholds(),
        baseline={"raw": baseline_raw, "transformed": {}},
    )
    (drift,) = of_kind(anomalies, "drift")
    assert drift["feature"] == "fare"
    assert drift["stage"] == "raw"
    assert drift["value"] > 0.3
    assert drift["threshold"] == 0.1


def test_categorical_drift_is_the_largest_change_in_a_value_share():
    kinds = {"payment": "categorical", "vendor": "categorical"}
    baseline_raw = statistics(
        {
            "payment": pa.array(["CARD"] * 50 + ["CASH"] * 50),
            "vendor": pa.array(["CMT"] * 70 + ["VTS"] * 30),
        },
        kinds,
    )
    current_raw = statistics(
        {
            "payment": pa.array(["CARD"] * 80 + ["CASH"] * 15 + ["DIS"] * 5),
            "vendor": pa.array(["CMT"] * 72 + ["VTS"] * 28),
        },
        kinds,
    )
    anomalies = find_anomalies(
        current_raw, {}, {}, AnomalyThresholds(), baseline={"raw": baseline_raw}
    )
    (drift,) = of_kind(anomalies, "drift")
    assert drift["feature"] == "payment"
    assert drift["value"] == pytest.approx(max(abs(0.80 - 0.50), abs(0.15 - 0.50), 0.05))


def test_jensen_shannon_divergence_on_known_histograms():
    uniform_20 = {"edges": np.linspace(0, 1, 21).tolist(), "counts": [5] * 20}
    uniform_10 = {"edges": np.linspace(0, 1, 11).tolist(), "counts": [7] * 10}
    disjoint = {"edges": np.linspace(2, 3, 21).tolist(), "counts": [1] * 20}
    left_half = {"edges": np.linspace(0, 0.5, 21).tolist(), "counts": [3] * 20}
    # The same law binned differently: re-binning on common edges must see no change.
    assert jensen_shannon_divergence(uniform_20, uniform_10) == pytest.approx(0.0, abs=1e-12)
    assert jensen_shannon_divergence(uniform_20, disjoint) == pytest.approx(1.0)
    # Uniform on [0, 1] against uniform on [0, 0.5]: P = (1/2, 1/2), Q = (1, 0) on the halves.
    p, q = np.array([0.5, 0.5]), np.array([1.0, 0.0])
    m = (p + q) / 2

    def kl(a, b):
        return sum(x * math.log2(x / y) for x, y in zip(a, b, strict=True) if x > 0)

    expected = (kl(p, m) + kl(q, m)) / 2
    assert jensen_shannon_divergence(uniform_20, left_half) == pytest.approx(expected)
    point = {"edges": [0.25] * 21, "counts": [9] + [0] * 19}
    assert jensen_shannon_divergence(point, point) == 0.0


def test_every_anomaly_has_the_documented_keys_and_one_sentence():
    raw = statistics({"vendor": pa.array(["CMT"] * 5)}, {"vendor": "categorical"})
    transformed = {"eval": statistics({"id": pa.array([0, 5, 5])}, {"id": "categorical"})}
    anomalies = find_anomalies(raw, transformed, {"id": 2}, AnomalyThresholds())
    assert {a["kind"] for a in anomalies} == {"constant", "oov_rate"}
    for anomaly in anomalies:
        assert set(anomaly) == ANOMALY_KEYS
        assert anomaly["message"].endswith(".") and "\n" not in anomaly["message"]
    assert json.loads(json.dumps(anomalies)) == anomalies


def test_thresholds_come_from_the_spec_with_defaults():
    spec = parse_spec(ZONES_SPEC_DOCUMENT)
    assert AnomalyThresholds.from_spec(spec) == AnomalyThresholds(0.01, 0.1, 0.1, 0.05)
    tuned = parse_spec(
        {**ZONES_SPEC_DOCUMENT, "anomalies": {"max_oov_rate": 0.05, "numeric_drift": 0.2}}
    )
    assert AnomalyThresholds.from_spec(tuned) == AnomalyThresholds(0.05, 0.2, 0.1, 0.05)
    # Thresholds judge statistics and change no output, so they leave the spec hash alone.
    assert tuned.spec_hash == spec.spec_hash


def test_thresholds_outside_0_1_are_rejected_by_spec_and_dataclass():
    with pytest.raises(SpecError) as raised:
        parse_spec({**ZONES_SPEC_DOCUMENT, "anomalies": {"categorical_drift": 1.5, "oov": 1}})
    assert any(p.startswith("anomalies.categorical_drift") for p in raised.value.problems)
    assert any(p.startswith("anomalies.oov: unknown field") for p in raised.value.problems)
    with pytest.raises(ValueError, match="numeric_drift"):
        AnomalyThresholds(numeric_drift=-0.1)


def test_integer_histograms_with_different_edges_are_compared_value_by_value():
    # Counts 0..7 and 0..6 of one law: their 20 equal-width bins differ in width,
    # so a whole number sits in bins of different widths on each side.
    rng = np.random.default_rng(2)
    kinds = {"trips": "numeric"}
    first = statistics({"trips": pa.array(np.minimum(rng.poisson(1.0, 4000), 7))}, kinds)
    second = statistics({"trips": pa.array(np.minimum(rng.poisson(1.0, 4000), 6))}, kinds)
    first, second = first["columns"]["trips"], second["columns"]["trips"]
    assert first["integer_valued"] and second["integer_valued"]
    assert first["max"] != second["max"]

    def law(column):
        shares = np.zeros(8)
        edges, counts = column["histogram"]["edges"], column["histogram"]["counts"]
        for value in range(8):
            for i, count in enumerate(counts):
                last = i == len(counts) - 1
                if edges[i] <= value and (value < edges[i + 1] or (last and value <= edges[-1])):
                    shares[value] += count
        return shares / shares.sum()

    p, q = law(first), law(second)
    m = (p + q) / 2
    expected = sum(
        (x * math.log2(x / z) if x else 0) / 2 + (y * math.log2(y / z) if y else 0) / 2
        for x, y, z in zip(p, q, m, strict=True)
    )
    assert expected < 0.01
    assert numeric_drift(first, second) == pytest.approx(expected, abs=1e-12)
