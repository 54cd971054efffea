"""The benchmark's three implementations do the same work: the plain tf.Transform
baseline and the NumPy floor give the same multiset of values per feature."""

from __future__ import annotations

import pytest

from tests.benchmark_features import assert_same_features, read_features, run_implementation

pytestmark = pytest.mark.slow


def test_baseline_and_floor_compute_the_same_features(tmp_path):
    from pipeline.sample_data import generate_rows, write_csv

    csv_path = tmp_path / "trips.csv"
    write_csv(generate_rows(3000, seed=9, messy_fraction=0.0), str(csv_path))
    outputs = {}
    for module in ("benchmarks.plain_tft", "benchmarks.numpy_floor"):
        outputs[module] = tmp_path / module
        run_implementation(module, csv_path, outputs[module])
    baseline = read_features(outputs["benchmarks.plain_tft"])
    floor = read_features(outputs["benchmarks.numpy_floor"])
    assert_same_features(baseline, floor, rows=3000)
