"""Checks that two pipeline.preprocess outputs are equivalent, e.g. the same input
run on two runners.

    python -m pipeline.compare_runs OUT_A OUT_B [--atol 1e-5]

Equivalent means: the same splits, each holding the same record keys exactly
once; byte-identical vocabulary files (transform_fn/assets/) and transformed
schemas; and, key by key, every transformed feature equal, integers exactly and
floats within --atol (float32 graph arithmetic may differ in the last bits
between batchings). Exits 1 on any difference, 2 when an output is unusable.
"""

from __future__ import annotations

import argparse
import filecmp
import glob
import json
import os
import sys

import numpy as np

from pipeline.layout import RunLayout


def split_names(output_dir: str) -> list[str]:
    return sorted(
        name
        for name in os.listdir(output_dir)
        if glob.glob(os.path.join(output_dir, name, "*.tfrecord.gz"))
    )


def read_split(output_dir: str, split: str, feature_spec: dict, key_column: str) -> dict:
    """Every example of a split as column arrays, sorted by record key."""
    import tensorflow as tf

    spec = dict(feature_spec, **{key_column: tf.io.FixedLenFeature([], tf.string)})
    paths = sorted(glob.glob(os.path.join(output_dir, split, "*.tfrecord.gz")))
    columns: dict[str, list[np.ndarray]] = {name: [] for name in spec}
    dataset = tf.data.TFRecordDataset(paths, compression_type="GZIP").batch(4096)
    for records in dataset:
        for name, values in tf.io.parse_example(records, spec).items():
            columns[name].append(values.numpy())
    arrays = {name: np.concatenate(parts) for name, parts in columns.items()}
    order = np.argsort(arrays[key_column], kind="stable")
    return {name: values[order] for name, values in arrays.items()}


def compare_assets(dir_a: str, dir_b: str) -> list[str]:
    assets_a = RunLayout(dir_a).vocabulary_dir
    assets_b = RunLayout(dir_b).vocabulary_dir
    names_a = sorted(os.listdir(assets_a)) if os.path.isdir(assets_a) else []
    names_b = sorted(os.listdir(assets_b)) if os.path.isdir(assets_b) else []
    problems = [] if names_a == names_b else [f"vocabulary files differ: {names_a} vs {names_b}"]
    for name in sorted(set(names_a) & set(names_b)):
        if not filecmp.cmp(os.path.join(assets_a, name), os.path.join(assets_b, name), False):
            problems.append(f"vocabulary {name} differs")
    return problems


def compare_split(split: str, a: dict, b: dict, key_column: str, atol: float) -> dict:
    """{'keys', 'max_float_difference', 'problems'} for one split."""
    problems = []
    for label, keys in (("A", a[key_column]), ("B", b[key_column])):
        if len(np.unique(keys)) != len(keys):
            problems.append(f"{split}: duplicate keys in {label}")
    if not np.array_equal(a[key_column], b[key_column]):
        only_a = len(set(a[key_column].tolist()) - set(b[key_column].tolist()))
        only_b = len(set(b[key_column].tolist()) - set(a[key_column].tolist()))
        problems.append(f"{split}: key sets differ ({only_a} only in A, {only_b} only in B)")
        return {"keys": len(a[key_column]), "max_float_difference": None, "problems": problems}
    largest = 0.0
    for name in sorted(a):
        if name == key_column:
            continue
        values_a, values_b = a[name], b[name]
        if values_a.dtype.kind == "f":
            difference = float(np.max(np.abs(values_a - values_b))) if len(values_a) else 0.0
            largest = max(largest, difference)
            if not np.allclose(values_a, values_b, rtol=0.0, atol=atol, equal_nan=True):
                problems.append(f"{split}/{name}: max |difference| {difference:.3g} > {atol}")
        elif (mismatches := int(np.sum(values_a != values_b))) > 0:
            problems.append(f"{split}/{name}: {mismatches} values differ")
    return {"keys": len(a[key_column]), "max_float_difference": largest, "problems": problems}


def compare(dir_a: str, dir_b: str, atol: float = 1e-5) -> dict:
    """A report whose 'problems' list is empty when the outputs are equivalent."""
    import tensorflow_transform as tft

    with open(RunLayout(dir_a).manifest_path) as handle:
        key_column = json.load(handle)["key_column"]
    problems = compare_assets(dir_a, dir_b)
    schema_a, schema_b = (RunLayout(d).transformed_schema_path for d in (dir_a, dir_b))
    if not filecmp.cmp(schema_a, schema_b, False):
        problems.append("transformed schemas differ")
    splits_a, splits_b = split_names(dir_a), split_names(dir_b)
    if splits_a != splits_b:
        problems.append(f"splits differ: {splits_a} vs {splits_b}")
    feature_spec = tft.TFTransformOutput(dir_a).transformed_feature_spec()
    splits = {}
    for split in sorted(set(splits_a) & set(splits_b)):
        splits[split] = compare_split(
            split,
            read_split(dir_a, split, feature_spec, key_column),
            read_split(dir_b, split, feature_spec, key_column),
            key_column,
            atol,
        )
        problems += splits[split]["problems"]
    return {"splits": splits, "problems": problems}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output_a", help="A pipeline.preprocess output directory.")
    parser.add_argument("output_b", help="Another one, of the same input and spec.")
    parser.add_argument("--atol", type=float, default=1e-5, help="Float tolerance.")
    args = parser.parse_args(argv)
    try:
        report = compare(args.output_a, args.output_b, args.atol)
    except (FileNotFoundError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for split, result in report["splits"].items():
        print(
            f"{split}: {result['keys']} keys, largest float difference "
            f"{result['max_float_difference']}"
        )
    print("\n".join(report["problems"]) or "equivalent")
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
