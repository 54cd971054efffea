"""The benchmark's implementations do the same work: the plain tf.Transform
baseline and the NumPy floor give the same multiset of values per feature."""

from __future__ import annotations

import pytest

from tests.benchmark_features import assert_same_features, read_features, run_implementations

pytestmark = pytest.mark.slow


def test_baseline_and_floor_compute_the_same_features(tmp_path):
    outputs = run_implementations(("benchmarks.plain_tft", "benchmarks.numpy_floor"), tmp_path)
    baseline = read_features(outputs["benchmarks.plain_tft"])
    floor = read_features(outputs["benchmarks.numpy_floor"])
    assert_same_features(baseline, floor)
