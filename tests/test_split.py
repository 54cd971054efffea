"""Deterministic split: stability across processes, proportions, and the PTransform."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.testing.util import assert_that, equal_to

from tests.support import ROOT, minimal_spec, test_pipeline
from transforms.split import SplitByKey, assign_splits, key_bucket, key_buckets, split_boundaries

PERCENTAGES = {"train": 80, "eval": 10, "test": 10}


def test_boundaries_cover_all_buckets_in_declaration_order():
    assert split_boundaries(PERCENTAGES) == [("train", 0, 80), ("eval", 80, 90), ("test", 90, 100)]
    with pytest.raises(ValueError, match="add up to 90"):
        split_boundaries({"train": 80, "eval": 10})


def test_assignment_follows_the_bucket_of_each_key():
    keys = [f"key-{i}" for i in range(2000)]
    names = list(PERCENTAGES)
    for key, index in zip(keys, assign_splits(keys, PERCENTAGES), strict=True):
        bucket = key_bucket(key)
        expected = "train" if bucket < 80 else "eval" if bucket < 90 else "test"
        assert names[index] == expected


def test_proportions_match_the_percentages():
    keys = [f"trip-{i:07d}" for i in range(100_000)]
    counts = np.bincount(assign_splits(keys, PERCENTAGES), minlength=3) / len(keys)
    # Binomial standard deviation at n=100k is below 0.0013; allow four of them.
    np.testing.assert_allclose(counts, [0.8, 0.1, 0.1], atol=0.005)


def test_assignment_is_identical_in_another_process_with_another_hash_seed():
    keys = [f"k{i}" for i in range(300)] + [str(i) for i in range(300)]
    here = assign_splits(keys, PERCENTAGES).tolist()
    code = (
        "import json, sys; from transforms.split import assign_splits; "
        "keys = json.loads(sys.stdin.read()); "
        f"print(json.dumps(assign_splits(keys, {PERCENTAGES!r}).tolist()))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    result = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(keys),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        check=True,
    )
    assert json.loads(result.stdout) == here


def test_int_and_string_keys_with_the_same_text_share_a_split():
    assert key_bucket(12345) == key_bucket("12345")


def test_split_by_key_routes_every_row_to_exactly_one_split():
    spec = minimal_spec(split={"percentages": PERCENTAGES})
    ids = [f"id-{i}" for i in range(500)]
    batches = [
        pa.RecordBatch.from_pydict({"id": ids[i : i + 100], "x": [1.0] * 100})
        for i in range(0, 500, 100)
    ]
    names = list(PERCENTAGES)
    expected = {name: [] for name in names}
    for key, index in zip(ids, assign_splits(ids, PERCENTAGES), strict=True):
        expected[names[index]].append(key)
    assert all(expected.values()), "every split should get some of 500 keys"
    with test_pipeline() as p:
        splits = p | beam.Create(batches) | SplitByKey(spec)
        for name in names:
            keys = splits[name] | f"Keys[{name}]" >> beam.FlatMap(
                lambda batch: batch.column("id").to_pylist()
            )
            assert_that(keys, equal_to(expected[name]), label=f"Check[{name}]")


@pytest.mark.parametrize(
    "keys",
    [
        pa.array(["0007-000000001", "ü-key", "", "None", None, "a" * 300]),
        pa.array(["x", "y", None], type=pa.large_string()),
        pa.array([12345, -1, None]),
        pa.chunked_array([["p", "q"], ["r"]]),
    ],
)
def test_arrow_keys_get_the_buckets_of_their_python_values(keys):
    python_keys = keys.to_pylist()
    if isinstance(keys, pa.Array):
        assert key_buckets(keys).tolist() == [key_bucket(key) for key in python_keys]
    here = assign_splits(keys, PERCENTAGES).tolist()
    assert here == assign_splits(python_keys, PERCENTAGES).tolist()
