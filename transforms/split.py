"""Deterministic train/eval/test split by a stable fingerprint of the split key.

A key's bucket is `int.from_bytes(sha256(utf8(str(key)))[:8], 'big') % 100`;
split names own consecutive bucket ranges in the spec's order and with its
percentages. SHA-256 is the same in every language, process and runner, so a key
lands in the same split on every run, which Python's salted `hash()` would not do.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.metrics import Metrics

from schemas.spec import DatasetSpec

BUCKETS = 100


def key_bucket(key: object) -> int:
    """Bucket in [0, 100) of one key."""
    digest = hashlib.sha256(str(key).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def split_boundaries(percentages: dict[str, int]) -> list[tuple[str, int, int]]:
    """[(split, first_bucket, end_bucket)] covering [0, 100) in declaration order."""
    boundaries, start = [], 0
    for name, percentage in percentages.items():
        boundaries.append((name, start, start + percentage))
        start += percentage
    if start != BUCKETS:
        raise ValueError(f"split percentages add up to {start}, not {BUCKETS}")
    return boundaries


def key_buckets(keys: pa.Array) -> np.ndarray:
    """key_bucket of every key of an Arrow array, faster for string keys: their
    UTF-8 bytes are hashed as they are, with no round trip through Python str."""
    if not (pa.types.is_string(keys.type) or pa.types.is_large_string(keys.type)):
        return np.fromiter((key_bucket(key) for key in keys.to_pylist()), np.int64, len(keys))
    if keys.null_count:
        keys = keys.fill_null("None")  # str(None), as key_bucket hashes it
    sha256 = hashlib.sha256
    prefixes = b"".join([sha256(key).digest()[:8] for key in keys.cast(pa.binary()).to_pylist()])
    return (np.frombuffer(prefixes, dtype=">u8") % BUCKETS).astype(np.int64)


def assign_splits(keys: Sequence[object] | pa.Array, percentages: dict[str, int]) -> np.ndarray:
    """Index into `list(percentages)` of each key's split."""
    if isinstance(keys, pa.Array | pa.ChunkedArray):
        buckets = key_buckets(keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys)
    else:
        buckets = np.fromiter((key_bucket(key) for key in keys), np.int64, len(keys))
    ends = np.array([end for _, _, end in split_boundaries(percentages)])
    return np.searchsorted(ends, buckets, side="right")


class _SplitBatchDoFn(beam.DoFn):
    def __init__(self, split_key: str, percentages: dict[str, int]):
        self._split_key = split_key
        self._percentages = dict(percentages)
        self._names = list(percentages)
        self._counters = {
            name: Metrics.counter("preprocess", f"rows_{name}") for name in self._names
        }

    def process(self, batch: pa.RecordBatch) -> Iterable:
        split_index = assign_splits(batch.column(self._split_key), self._percentages)
        for index, name in enumerate(self._names):
            mask = split_index == index
            if mask.any():
                part = batch.filter(pa.array(mask))
                self._counters[name].inc(part.num_rows)
                yield beam.pvalue.TaggedOutput(name, part)


class SplitByKey(beam.PTransform):
    """PCollection[pa.RecordBatch] -> one PCollection[pa.RecordBatch] per split name.

    Returns a dict {split name: PCollection}. Keeps the input's windowing.
    Counters: rows_<split>.
    """

    def __init__(self, spec: DatasetSpec):
        super().__init__()
        split_boundaries(spec.split.percentages)  # fail at construction on a bad rule
        self._split_key = spec.split_key
        self._percentages = spec.split.percentages

    def expand(self, batches):
        names = list(self._percentages)
        outputs = batches | "AssignSplit" >> beam.ParDo(
            _SplitBatchDoFn(self._split_key, self._percentages)
        ).with_outputs(*names)
        return {name: outputs[name] for name in names}
