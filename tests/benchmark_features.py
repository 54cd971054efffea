"""What the benchmark's equivalence tests share: the features every
implementation writes, how to read them back, and what "the same features"
means between two implementations (tests/test_benchmarks.py,
tests/test_mltransform_benchmark.py)."""

from __future__ import annotations

import glob
import subprocess
import sys

import numpy as np

from tests.support import ROOT

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


ROWS = 3000


def run_implementations(modules: tuple[str, ...], tmp_path) -> dict:
    """Runs each benchmark implementation (`python -m module`) on the same ROWS
    generated clean trips; returns {module: its output directory}."""
    from pipeline.sample_data import generate_rows, write_csv

    csv_path = tmp_path / "trips.csv"
    write_csv(generate_rows(ROWS, seed=9, messy_fraction=0.0), str(csv_path))
    outputs = {}
    for module in modules:
        outputs[module] = tmp_path / module
        subprocess.run(
            [sys.executable, "-m", module, "--input", str(csv_path), "--output_dir",
             str(outputs[module])],
            cwd=ROOT, check=True, capture_output=True,
        )  # fmt: skip
    return outputs


def read_features(output_dir) -> dict[str, np.ndarray]:
    """Every feature of FEATURES in OUTPUT/*.tfrecord.gz, its values sorted."""
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


def assert_same_features(tft: dict, floor: dict) -> None:
    """A tf.Transform-based implementation's features (`tft`) against the NumPy
    floor's, both of run_implementations' ROWS rows: the same multiset of
    values per feature."""
    for name, kind in FEATURES.items():
        assert len(tft[name]) == len(floor[name]) == ROWS, name
        if name.endswith("_bucket"):
            # tf.Transform's quantiles are approximate: bucket sizes agree closely.
            sizes = [np.bincount(values, minlength=10) for values in (tft[name], floor[name])]
            assert np.abs(sizes[0] - sizes[1]).max() <= 30, name
        elif kind == "float":
            # tf.Transform works in float32, so a difference of two coordinates
            # near -74 keeps only about 5 digits; the floor uses float64.
            tolerance = 1e-3 if name == "euclidean_z" else 1e-4
            np.testing.assert_allclose(tft[name], floor[name], atol=tolerance, err_msg=name)
        else:
            np.testing.assert_array_equal(tft[name], floor[name], err_msg=name)
