"""A second anchor: Beam's own MLTransform doing the benchmark's work.

    python -m benchmarks.mltransform_baseline --input trips.csv --output_dir OUT

ReadFromText -> one dict per row -> MLTransform (apache_beam.ml.transforms.base)
with its tf.Transform operations (apache_beam.ml.transforms.tft) -> one
tf.train.Example per row -> WriteToTFRecord, on the same local runner as
benchmarks/plain_tft.py (FnApiRunner, one process), written the way Beam's
MLTransform documentation shows. It computes the features of
benchmarks/specs/taxi_benchmark.yaml that tests/test_benchmarks.py compares:

- ScaleTo01 and Bucketize (10 quantiles) of the 4 coordinates, ScaleToZScore of
  passenger_count, ComputeAndApplyVocabulary (one OOV bucket) of pickup_zone and
  payment_type: MLTransform's own operations, analysed over the whole input.
- euclidean_z: ScaleToZScore, an MLTransform operation, of the distance between
  pickup and dropoff. MLTransform has no arithmetic on columns, so the distance
  itself (the spec's derived latdiff, londiff and norm) is computed in the parse
  step, in Python, as its documentation computes any input it lacks.
- hour_of_day: MLTransform has no datetime operation. The parse step takes the
  hour from the timestamp's text, as plain_tft does in its graph, and
  MLTransform carries it through untouched (it pickles columns no operation
  names, next to the tf.Transform batch, and unpickles them after).

So every compared feature is computed here: hour_of_day entirely outside
MLTransform, euclidean_z partly, the others by it. The per-row Python of the
parse step is part of what is timed, as plain_tft's dict building is.

MLTransform writes each operation's result over its input column, and two
operations on one column would chain (the buckets of the scaled value), so the
parse step gives every feature its own copy of its source column, named as the
feature. Like plain_tft it validates nothing: rows
are assumed clean, and a missing passenger_count becomes 1, the spec's default.
MLTransform's artifacts (its raw metadata and tf.Transform's transform_fn) go to
OUT/mltransform_artifacts, which is also its tf.Transform temp dir.
"""

from __future__ import annotations

import math
import os
import sys

from benchmarks.plain_tft import (
    COORDINATES,
    exit_without_teardown,
    parse_arguments,
    parse_line,
)

ARTIFACTS_DIR = "mltransform_artifacts"
VOCABULARY_SOURCES = ("pickup_zone", "payment_type")


def mltransform_input(line: str) -> dict:
    """A CSV line -> one input column per feature, each a copy of its source value."""
    row = parse_line(line)
    inputs = {}
    for name in COORDINATES:
        inputs[f"{name}_scaled"] = row[name]
        inputs[f"{name}_bucket"] = row[name]
    inputs["passenger_count_z"] = row["passenger_count"]
    for name in VOCABULARY_SOURCES:
        inputs[f"{name}_id"] = row[name]
    # 'YYYY-MM-DD HH:MM:SS UTC': the hour is characters 11-12.
    inputs["hour_of_day"] = int(row["pickup_datetime"][11:13])
    inputs["euclidean_z"] = math.hypot(
        row["dropoff_latitude"] - row["pickup_latitude"],
        row["dropoff_longitude"] - row["pickup_longitude"],
    )
    return inputs


def operations() -> list:
    """MLTransform's operations for the columns mltransform_input makes."""
    from apache_beam.ml.transforms.tft import (
        Bucketize,
        ComputeAndApplyVocabulary,
        ScaleTo01,
        ScaleToZScore,
    )

    return [
        ScaleTo01(columns=[f"{name}_scaled" for name in COORDINATES]),
        Bucketize(columns=[f"{name}_bucket" for name in COORDINATES], num_buckets=10),
        ScaleToZScore(columns=["passenger_count_z", "euclidean_z"]),
        ComputeAndApplyVocabulary(
            columns=[f"{name}_id" for name in VOCABULARY_SOURCES], num_oov_buckets=1
        ),
    ]


def to_example(row) -> bytes:
    """A transformed beam.Row (NumPy arrays, and the untouched hour as an int) ->
    a serialized tf.train.Example with one feature per column."""
    import numpy as np
    import tensorflow as tf

    features = {}
    for name, value in row._asdict().items():
        values = np.atleast_1d(value)
        if values.dtype.kind == "f":
            features[name] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
        elif values.dtype.kind in "iub":
            features[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=values))
        else:
            raise TypeError(f"column {name} holds {values.dtype}, not a number")
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def run(input_path: str, output_dir: str) -> None:
    import apache_beam as beam
    from apache_beam.ml.transforms.base import MLTransform

    artifacts = os.path.join(output_dir, ARTIFACTS_DIR)
    with beam.Pipeline(runner="FnApiRunner") as p:
        _ = (
            p
            | "ReadCsv" >> beam.io.ReadFromText(input_path, skip_header_lines=1)
            | "ToDicts" >> beam.Map(mltransform_input)
            | "MLTransform"
            >> MLTransform(write_artifact_location=artifacts, transforms=operations())
            | "ToExamples" >> beam.Map(to_example)
            | "Write"
            >> beam.io.WriteToTFRecord(
                os.path.join(output_dir, "part"), file_name_suffix=".tfrecord.gz"
            )
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(__doc__, argv)
    run(args.input, args.output_dir)
    exit_without_teardown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
