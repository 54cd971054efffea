"""Training/serving skew check of a preprocessing run.

    python -m pipeline.verify_skew --output_dir OUT [--limit 10000]

OUT must come from `pipeline.preprocess --write_raw_features`. The raw rows are
transformed again through the serving-time path,
`TFTransformOutput(OUT).transform_raw_features`, and compared feature by feature
with the examples that the batch pipeline wrote for the same keys. Prints the
maximum absolute difference per feature; exits 1 on any difference beyond float
tolerance or any key missing from the examples, 2 when OUT is not usable.

Rows with missing optional values are checked like any other: the serving
path gets them as the batch job's graph did (a missing value of a column
without a default as an absent entry of a SparseTensor). Raw rows whose label
class train never saw have no example (the batch job made them dead letters),
so they are counted apart, not as missing keys.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.layout import RunLayout

# float32 graph arithmetic may differ in the last bits between batch sizes.
FLOAT_TOLERANCE = 1e-5


def read_raw_rows(output_dir: str, limit: int | None) -> pa.Table:
    paths = sorted(glob.glob(RunLayout(output_dir).raw_features_pattern()))
    if not paths:
        raise FileNotFoundError(
            f"{output_dir} has no raw_features/; run pipeline.preprocess with --write_raw_features"
        )
    table = pa.concat_tables([pq.read_table(path) for path in paths])
    return table.slice(0, limit) if limit else table


def serving_transform(tft_output, table: pa.Table, chunk_rows: int = 2048) -> dict[str, np.ndarray]:
    """Transforms raw rows with the serving-time path; one array per output feature."""
    import tensorflow as tf

    raw_spec = tft_output.raw_feature_spec()
    outputs: dict[str, list[np.ndarray]] = {}
    for start in range(0, table.num_rows, chunk_rows):
        chunk = table.slice(start, chunk_rows)
        features = {}
        for name, spec in raw_spec.items():
            column = chunk.column(name).to_pylist()
            if isinstance(spec, tf.io.VarLenFeature):
                present = [i for i, value in enumerate(column) if value is not None]
                features[name] = tf.sparse.SparseTensor(
                    indices=[[i, 0] for i in present] or np.zeros((0, 2), np.int64),
                    values=tf.constant([column[i] for i in present], dtype=spec.dtype),
                    dense_shape=[len(column), 1],
                )
            else:
                features[name] = tf.constant(column, dtype=spec.dtype)
        transformed = tft_output.transform_raw_features(features, drop_unused_features=True)
        for name, tensor in transformed.items():
            outputs.setdefault(name, []).append(np.asarray(tensor).reshape(len(chunk), -1))
    return {name: np.concatenate(parts) for name, parts in outputs.items()}


def batch_examples(output_dir: str, key_column: str, feature_spec: dict, keys: set) -> dict:
    """{key: {feature: value array}} of the batch pipeline's examples for `keys`."""
    import tensorflow as tf

    spec = dict(feature_spec)
    spec[key_column] = tf.io.FixedLenFeature([], tf.string)
    found = {}
    for path in sorted(glob.glob(os.path.join(output_dir, "*", "*.tfrecord.gz"))):
        for record in tf.data.TFRecordDataset(path, compression_type="GZIP").batch(1024):
            parsed = tf.io.parse_example(record, spec)
            batch_keys = [k.decode() for k in parsed.pop(key_column).numpy()]
            arrays = {name: np.asarray(value) for name, value in parsed.items()}
            for index, key in enumerate(batch_keys):
                if key in keys:
                    found[key] = {name: arrays[name][index] for name in arrays}
    return found


def unseen_label_rows(output_dir: str, label: str, served: dict, rows: int) -> np.ndarray:
    """Per raw row: whether its label class is one train never saw (the serving
    transform gives UNSEEN_LABEL), which only a label with classes can have."""
    from schemas.spec import parse_spec
    from transforms.preprocessing import UNSEEN_LABEL

    path = RunLayout(output_dir).spec_path
    if not os.path.isfile(path):  # a run from before spec.json: regression or 0/1 labels
        return np.zeros(rows, dtype=bool)
    with open(path) as handle:
        spec = parse_spec(json.load(handle), source=path)
    if not spec.label_has_classes:
        return np.zeros(rows, dtype=bool)
    return served[label].reshape(rows) == UNSEEN_LABEL


def compare(output_dir: str, limit: int | None) -> dict:
    import tensorflow_transform as tft

    with open(RunLayout(output_dir).manifest_path) as handle:
        manifest = json.load(handle)
    key_column = manifest["key_column"]
    table = read_raw_rows(output_dir, limit)
    tft_output = tft.TFTransformOutput(output_dir)
    served = serving_transform(tft_output, table)
    unseen = unseen_label_rows(output_dir, manifest["label"], served, table.num_rows)
    keys = [str(key) for key in table.column(key_column).to_pylist()]
    expected_keys = {key for key, dead in zip(keys, unseen, strict=True) if not dead}
    written = batch_examples(
        output_dir, key_column, tft_output.transformed_feature_spec(), expected_keys
    )
    report = {
        "rows": len(keys),
        "unseen_label_rows": int(unseen.sum()),
        "missing_keys": len(expected_keys - set(written)),
        "features": {},
    }
    for name, values in served.items():
        max_difference, mismatches = 0.0, 0
        for index, key in enumerate(keys):
            if key not in written or unseen[index]:
                continue
            expected = np.asarray(written[key][name], dtype=np.float64).reshape(-1)
            got = values[index].astype(np.float64).reshape(-1)
            difference = float(np.max(np.abs(expected - got))) if got.size else 0.0
            max_difference = max(max_difference, difference)
            tolerance = FLOAT_TOLERANCE * max(1.0, float(np.max(np.abs(expected), initial=0)))
            if expected.shape != got.shape or difference > tolerance:
                mismatches += 1
        report["features"][name] = {"max_abs_difference": max_difference, "mismatches": mismatches}
    report["mismatches"] = sum(f["mismatches"] for f in report["features"].values())
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", required=True, help="A pipeline.preprocess output.")
    parser.add_argument("--limit", type=int, default=None, help="Check at most this many rows.")
    args = parser.parse_args(argv)
    try:
        report = compare(args.output_dir, args.limit)
    except (FileNotFoundError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for name, result in sorted(report["features"].items()):
        print(f"{name}: max |difference| {result['max_abs_difference']:.3g}, "
              f"{result['mismatches']} mismatches")  # fmt: skip
    unseen = report["unseen_label_rows"]
    print(
        f"{report['rows']} rows checked, {report['missing_keys']} keys missing from the "
        f"examples, {report['mismatches']} mismatches"
        + (f" ({unseen} rows of label classes train never saw: dead letters)" if unseen else "")
    )
    return 1 if report["mismatches"] or report["missing_keys"] else 0


if __name__ == "__main__":
    sys.exit(main())
