"""The baseline: a plain tf.Transform pipeline written the way tutorials write it.

    python -m benchmarks.plain_tft --input trips.csv --output_dir OUT

ReadFromText -> one Python dict per row -> AnalyzeAndTransformDataset (instance
dicts) -> ExampleProtoCoder -> WriteToTFRecord, on the local batch runner. It
does the work of benchmarks/specs/taxi_benchmark.yaml: the 4 coordinates scaled
to [0, 1] and bucketized into 10 quantiles, passenger_count z-scored, 2
vocabularies, the pickup hour and the z-scored distance. Like most tutorials it
has no validation: rows are assumed clean (benchmarks generate them so), and a
missing passenger_count becomes 1, the spec's default.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile

from pipeline.sample_data import HEADER

# The generator's column order; the baseline, like tutorials, hard-codes its layout.
COLUMNS = HEADER
COORDINATES = COLUMNS[2:6]


def parse_line(line: str) -> dict:
    fields = next(csv.reader([line]))
    row = dict(zip(COLUMNS, fields, strict=True))
    return {
        "pickup_datetime": row["pickup_datetime"],
        **{name: float(row[name]) for name in COORDINATES},
        "passenger_count": float(row["passenger_count"] or 1),
        "pickup_zone": row["pickup_zone"],
        "payment_type": row["payment_type"],
    }


def raw_metadata():
    import tensorflow as tf
    from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

    spec = {name: tf.io.FixedLenFeature([], tf.float32) for name in COORDINATES}
    spec["passenger_count"] = tf.io.FixedLenFeature([], tf.float32)
    for name in ("pickup_datetime", "pickup_zone", "payment_type"):
        spec[name] = tf.io.FixedLenFeature([], tf.string)
    return dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(spec))


def preprocessing_fn(inputs: dict) -> dict:
    import tensorflow as tf
    import tensorflow_transform as tft

    outputs = {}
    for name in COORDINATES:
        outputs[f"{name}_scaled"] = tft.scale_to_0_1(inputs[name])
        outputs[f"{name}_bucket"] = tft.bucketize(inputs[name], num_buckets=10)
    outputs["passenger_count_z"] = tft.scale_to_z_score(inputs["passenger_count"])
    for name in ("pickup_zone", "payment_type"):
        outputs[f"{name}_id"] = tft.compute_and_apply_vocabulary(inputs[name], num_oov_buckets=1)
    # 'YYYY-MM-DD HH:MM:SS UTC': the hour is characters 11-12.
    hour = tf.strings.substr(inputs["pickup_datetime"], 11, 2)
    outputs["hour_of_day"] = tf.strings.to_number(hour, out_type=tf.int64)
    latdiff = inputs["dropoff_latitude"] - inputs["pickup_latitude"]
    londiff = inputs["dropoff_longitude"] - inputs["pickup_longitude"]
    outputs["euclidean_z"] = tft.scale_to_z_score(tf.sqrt(latdiff * latdiff + londiff * londiff))
    return outputs


def run(input_path: str, output_dir: str) -> None:
    import apache_beam as beam
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.coders import example_proto_coder

    with (
        tempfile.TemporaryDirectory(prefix="plain_tft_") as temp_dir,
        beam.Pipeline(runner="FnApiRunner") as p,
        tft_beam.Context(temp_dir=temp_dir),
    ):
        rows = (
            p
            | "ReadCsv" >> beam.io.ReadFromText(input_path, skip_header_lines=1)
            | "ToDicts" >> beam.Map(parse_line)
        )
        (transformed, metadata), transform_fn = (
            rows,
            raw_metadata(),
        ) | "AnalyzeAndTransform" >> tft_beam.AnalyzeAndTransformDataset(preprocessing_fn)
        coder = example_proto_coder.ExampleProtoCoder(metadata.schema)
        _ = (
            transformed
            | "Encode" >> beam.Map(coder.encode)
            | "Write"
            >> beam.io.WriteToTFRecord(
                os.path.join(output_dir, "part"), file_name_suffix=".tfrecord.gz"
            )
        )
        _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(output_dir)


def parse_arguments(doc: str, argv: list[str] | None) -> argparse.Namespace:
    """--input and --output_dir, the command line of every benchmark implementation."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--input", required=True, help="CSV of generated taxi trips.")
    parser.add_argument("--output_dir", required=True, help="Where examples go.")
    return parser.parse_args(argv)


def exit_without_teardown() -> None:
    """After a tf.Transform pipeline, on small inputs, the interpreter segfaults
    while garbage-collecting at exit (TensorFlow 2.21 objects); every output is
    written and closed by then, so leave without that teardown."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(__doc__, argv)
    run(args.input, args.output_dir)
    exit_without_teardown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
