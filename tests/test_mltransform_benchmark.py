"""The MLTransform anchor (benchmarks/mltransform_baseline.py) does the benchmark's
work: its features are the NumPy floor's, checked as test_benchmarks checks the
plain tf.Transform baseline."""

from __future__ import annotations

import math

import pytest

from tests.benchmark_features import (
    FEATURES,
    assert_same_features,
    read_features,
    run_implementations,
)

LINE = "0009-000000007,2025-07-07 20:46:27 UTC,-73.95,40.77,-73.98,40.73,,Harlem,CASH,VTS,9.23"


def test_the_parse_step_gives_every_feature_its_own_source_column():
    from benchmarks.mltransform_baseline import mltransform_input

    inputs = mltransform_input(LINE)

    assert set(inputs) == set(FEATURES)
    assert inputs["pickup_longitude_scaled"] == inputs["pickup_longitude_bucket"] == -73.95
    assert inputs["dropoff_latitude_scaled"] == inputs["dropoff_latitude_bucket"] == 40.73
    assert inputs["passenger_count_z"] == 1.0  # missing: the spec's default
    assert (inputs["pickup_zone_id"], inputs["payment_type_id"]) == ("Harlem", "CASH")
    assert inputs["hour_of_day"] == 20
    # latdiff -0.04, londiff -0.03: a 3-4-5 triangle.
    assert math.isclose(inputs["euclidean_z"], 0.05, rel_tol=1e-9)


@pytest.mark.slow
def test_mltransform_and_floor_compute_the_same_features(tmp_path):
    from benchmarks.mltransform_baseline import ARTIFACTS_DIR

    modules = ("benchmarks.mltransform_baseline", "benchmarks.numpy_floor")
    outputs = run_implementations(modules, tmp_path)

    # MLTransform itself analysed the data: it wrote tf.Transform's transform_fn.
    artifacts = outputs["benchmarks.mltransform_baseline"] / ARTIFACTS_DIR
    assert list(artifacts.glob("*/transform_fn/saved_model.pb")), "no MLTransform artifacts"
    mltransform = read_features(outputs["benchmarks.mltransform_baseline"])
    floor = read_features(outputs["benchmarks.numpy_floor"])
    assert_same_features(mltransform, floor)


def test_the_harness_compares_ours_with_every_anchor_by_wall_and_cpu():
    from benchmarks.run import format_ratios, ours_ratios

    size = {
        "ours": {"median_wall_seconds": 20.0, "median_cpu_seconds": 36.0},
        "baseline": {"median_wall_seconds": 80.0, "median_cpu_seconds": 80.0},
        "mltransform": {"median_wall_seconds": 50.0, "median_cpu_seconds": 45.0},
        # A floor from an older run, without CPU: its wall ratio only.
        "floor": {"median_wall_seconds": 16.0, "median_cpu_seconds": None},
    }

    ratios = ours_ratios(size)

    assert ratios == {
        "ours_over_baseline": 0.25,
        "ours_over_baseline_cpu": 0.45,
        "ours_over_mltransform": 0.4,
        "ours_over_mltransform_cpu": 0.8,
        "ours_over_floor": 1.25,
    }
    assert format_ratios(ratios) == (
        "ours/baseline wall 0.25, CPU 0.45; ours/mltransform wall 0.4, CPU 0.8; "
        "ours/floor wall 1.25"
    )
    assert ours_ratios({"mltransform": size["mltransform"]}) == {}
