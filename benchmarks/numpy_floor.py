"""The floor: the benchmark's work as one pyarrow + NumPy program, no Beam.

    python -m benchmarks.numpy_floor --input trips.csv --output_dir OUT

Reads the whole CSV into memory with pyarrow, computes the features of
benchmarks/specs/taxi_benchmark.yaml with NumPy (the same statistics tf.Transform
computes: min/max, quantile boundaries, mean/std, frequency-ordered
vocabularies), encodes them with the pipeline's own example encoder and writes
gzip TFRecords with its writer. It holds everything in memory, so it does not scale; it marks how
fast the work can be done on one core.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

COORDINATES = ("pickup_longitude", "pickup_latitude", "dropoff_longitude", "dropoff_latitude")


def _lists(values: np.ndarray, value_type: pa.DataType) -> pa.Array:
    offsets = pa.array(np.arange(len(values) + 1, dtype=np.int64))
    return pa.LargeListArray.from_arrays(offsets, pa.array(values, type=value_type))


def _z_score(values: np.ndarray) -> np.ndarray:
    std = values.std()
    return (values - values.mean()) / (std if std > 0 else 1.0)


def _vocabulary_ids(strings: pa.Array) -> np.ndarray:
    """Ids by descending frequency, ties by descending value, as tf.Transform orders."""
    counts = pc.value_counts(strings)
    values = counts.field("values").to_pylist()
    order = sorted(zip(counts.field("counts").to_pylist(), values, strict=True), reverse=True)
    vocabulary = pa.array([value for _, value in order])
    return pc.index_in(strings, value_set=vocabulary).to_numpy(zero_copy_only=False)


def features(table: pa.Table) -> pa.RecordBatch:
    columns = {}
    for name in COORDINATES:
        values = table.column(name).to_numpy().astype(np.float64)
        low, high = values.min(), values.max()
        columns[f"{name}_scaled"] = _lists(
            ((values - low) / (high - low)).astype(np.float32), pa.float32()
        )
        boundaries = np.quantile(values, np.linspace(0.1, 0.9, 9))
        columns[f"{name}_bucket"] = _lists(
            np.searchsorted(boundaries, values, side="right"), pa.int64()
        )
    passengers = table.column("passenger_count").fill_null(1).to_numpy().astype(np.float64)
    columns["passenger_count_z"] = _lists(_z_score(passengers).astype(np.float32), pa.float32())
    for name in ("pickup_zone", "payment_type"):
        columns[f"{name}_id"] = _lists(_vocabulary_ids(table.column(name)), pa.int64())
    hours = pc.utf8_slice_codeunits(table.column("pickup_datetime"), 11, 13)
    columns["hour_of_day"] = _lists(pc.cast(hours, pa.int64()).to_numpy(), pa.int64())
    latdiff = (
        table.column("dropoff_latitude").to_numpy() - table.column("pickup_latitude").to_numpy()
    )
    londiff = (
        table.column("dropoff_longitude").to_numpy() - table.column("pickup_longitude").to_numpy()
    )
    distance = np.sqrt(latdiff * latdiff + londiff * londiff)
    columns["euclidean_z"] = _lists(_z_score(distance).astype(np.float32), pa.float32())
    keys = table.column("trip_id").combine_chunks().cast(pa.large_binary())
    columns["trip_id"] = pa.LargeListArray.from_arrays(
        pa.array(np.arange(len(keys) + 1, dtype=np.int64)), keys
    )
    return pa.RecordBatch.from_pydict(columns)


def run(input_path: str, output_dir: str, chunk_rows: int = 65536) -> None:
    # The same example encoder and TFRecord writer as the pipeline's, so that the
    # floor is never slower at this part than what it is a floor for.
    from transforms.example_encoder import ExampleEncoder
    from transforms.tfrecords import GzipWriter, frame_records

    options = pa_csv.ConvertOptions(
        column_types={
            "pickup_datetime": pa.string(),
            "trip_id": pa.string(),
            "vendor_id": pa.string(),
        }
    )
    table = pa_csv.read_csv(input_path, convert_options=options)
    batch = features(table)
    encoder = ExampleEncoder()
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, "part-00000-of-00001.tfrecord.gz")
    with open(path, "wb") as handle:
        writer = GzipWriter(handle)
        for start in range(0, batch.num_rows, chunk_rows):
            writer.write(frame_records(encoder.encode(batch.slice(start, chunk_rows))))
        writer.finish()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, help="CSV of generated taxi trips.")
    parser.add_argument("--output_dir", required=True, help="Where examples go.")
    args = parser.parse_args(argv)
    run(args.input, args.output_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
