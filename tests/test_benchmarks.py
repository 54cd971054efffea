"""The benchmark's three implementations do the same work: the plain tf.Transform
baseline and the NumPy floor give the same multiset of values per feature."""

from __future__ import annotations

import glob
import subprocess
import sys

import numpy as np
import pytest

from tests.support import ROOT

pytest_plugins = ["tests.bigtable_emulator"]
pytestmark = pytest.mark.slow
FEATURES = {
    **{f"{c}_scaled": "float" for c in ("pickup_longitude", "pickup_latitude")},
    **{f"{c}_scaled": "float" for c in ("dropoff_longitude", "dropoff_latitude")},
    **{f"{c}_bucket": "int" for c in ("pickup_longitude", "pickup_latitude")},
    **{f"{c}_bucket": "int" for c in ("dropoff_longitude", "dropoff_latitude")},
    "passenger_count_z": "float",
    "pickup_zone_id": "int",
    "payment_type_id": "int",
    "hour_of_day": "int",
    "euclidean_z": "float",
}


def read_features(output_dir) -> dict[str, np.ndarray]:
    import tensorflow as tf

    spec = {
        name: tf.io.FixedLenFeature([], tf.float32 if kind == "float" else tf.int64)
        for name, kind in FEATURES.items()
    }
    paths = glob.glob(str(output_dir / "*.tfrecord.gz"))
    columns: dict[str, list] = {name: [] for name in spec}
    for records in tf.data.TFRecordDataset(paths, compression_type="GZIP").batch(4096):
        for name, values in tf.io.parse_example(records, spec).items():
            columns[name].append(values.numpy())
    return {name: np.sort(np.concatenate(parts)) for name, parts in columns.items()}


def test_baseline_and_floor_compute_the_same_features(tmp_path):
    from pipeline.sample_data import generate_rows, write_csv

    csv_path = tmp_path / "trips.csv"
    write_csv(generate_rows(3000, seed=9, messy_fraction=0.0), str(csv_path))
    outputs = {}
    for module in ("benchmarks.plain_tft", "benchmarks.numpy_floor"):
        outputs[module] = tmp_path / module
        subprocess.run(
            [sys.executable, "-m", module, "--input", str(csv_path), "--output_dir",
             str(outputs[module])],
            cwd=ROOT, check=True, capture_output=True,
        )  # fmt: skip
    baseline = read_features(outputs["benchmarks.plain_tft"])
    floor = read_features(outputs["benchmarks.numpy_floor"])
    for name, kind in FEATURES.items():
        assert len(baseline[name]) == len(floor[name]) == 3000, name
        if name.endswith("_bucket"):
            # tf.Transform's quantiles are approximate: bucket sizes agree closely.
            sizes = [np.bincount(values, minlength=10) for values in (baseline[name], floor[name])]
            assert np.abs(sizes[0] - sizes[1]).max() <= 30, name
        elif kind == "float":
            # The baseline parses coordinates as float32, so a difference of two
            # coordinates near -74 keeps only about 5 digits; the floor uses float64.
            tolerance = 1e-3 if name == "euclidean_z" else 1e-4
            np.testing.assert_allclose(baseline[name], floor[name], atol=tolerance, err_msg=name)
        else:
            np.testing.assert_array_equal(baseline[name], floor[name], err_msg=name)


@pytest.mark.emulator
def test_store_writes_reports_the_cells_the_emulator_holds(bigtable_emulator, tmp_path):
    from benchmarks import store_writes
    from schemas.spec import parse_spec
    from tests.aggregate_reference import stream_values_reference
    from tests.support import ZONES_SPEC_DOCUMENT
    from transforms.aggregates import group_aggregates

    result = store_writes.measure(80, 6, 60, str(tmp_path), bigtable_emulator)
    held = bigtable_emulator.read_all(result["table"])
    cells = sum(len(row) for row in held.values())
    # What the stream must write for these events, from the definition.
    spec = parse_spec(ZONES_SPEC_DOCUMENT)
    events = store_writes.synthetic_events(80, 6, 60)
    expected = sum(
        len(stream_values_reference(events, spec.timestamp_column, group)) * len(group.aggregates)
        for group in group_aggregates(spec)
    )
    assert result["cells_written"] == cells == expected
    assert result["write_step_cells"] == cells
    written_again = bigtable_emulator.read_all(store_writes.WRITE_TABLE)
    assert sum(len(row) for row in written_again.values()) == cells
