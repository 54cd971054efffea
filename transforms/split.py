"""Deterministic train/eval/test split by a stable fingerprint of the split key.

A key's bucket is `int.from_bytes(sha256(utf8(str(key)))[:8], 'big') % 100`;
split names own consecutive bucket ranges in the spec's order and with its
percentages. SHA-256 is the same in every language, process and runner, so a key
lands in the same split on every run, which Python's salted `hash()` would not do.

A spec without a split key (no split.key, no key_column) splits by the whole
record instead, as TFX ExampleGen does: the key is the row's canonical text
(`record_texts`), so identical rows land in the same split and a duplicate
cannot leak from train into eval.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
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


def key_fingerprints(keys: pa.Array) -> np.ndarray:
    """The first 8 bytes of sha256(utf8(str(key))) of every key, as unsigned
    integers; string keys are hashed as their UTF-8 bytes, with no round trip
    through Python str."""
    sha256 = hashlib.sha256
    if not (pa.types.is_string(keys.type) or pa.types.is_large_string(keys.type)):
        texts = [str(key).encode("utf-8") for key in keys.to_pylist()]
    else:
        if keys.null_count:
            keys = keys.fill_null("None")  # str(None), as key_bucket hashes it
        texts = keys.cast(pa.binary()).to_pylist()
    prefixes = b"".join([sha256(text).digest()[:8] for text in texts])
    return np.frombuffer(prefixes, dtype=">u8").astype(np.uint64)


def key_buckets(keys: pa.Array) -> np.ndarray:
    """key_bucket of every key of an Arrow array."""
    return (key_fingerprints(keys) % BUCKETS).astype(np.int64)


def record_texts(batch: pa.RecordBatch, columns: Sequence[str]) -> pa.Array:
    """One canonical text per row of the validated values of `columns`: each
    value as Arrow prints it (shortest round-trip text for floats, epoch
    seconds for timestamps), prefixed with its length, a missing value as '-',
    joined by '|'. The length prefix keeps it unambiguous whatever a string
    holds; typed values, not raw texts, make '2' and '2.0' in a float column
    the same record."""
    parts = []
    for name in columns:
        text = pc.cast(batch.column(name), pa.string())
        length = pc.cast(pc.binary_length(text), pa.string())
        parts.append(pc.fill_null(pc.binary_join_element_wise(length, text, ":"), "-"))
    return pc.binary_join_element_wise(*parts, "|")


def assign_splits(keys: Sequence[object] | pa.Array, percentages: dict[str, int]) -> np.ndarray:
    """Index into `list(percentages)` of each key's split."""
    if isinstance(keys, pa.Array | pa.ChunkedArray):
        buckets = key_buckets(keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys)
    else:
        buckets = np.fromiter((key_bucket(key) for key in keys), np.int64, len(keys))
    ends = np.array([end for _, _, end in split_boundaries(percentages)])
    return np.searchsorted(ends, buckets, side="right")


class _SplitBatchDoFn(beam.DoFn):
    """RecordBatch -> its rows of each split, tagged with the split's name: by
    the split key's column, or with `split_key` None by the record's columns."""

    def __init__(
        self, split_key: str | None, percentages: dict[str, int], record_columns: Sequence[str]
    ):
        self._split_key = split_key
        self._record_columns = list(record_columns)
        self._percentages = dict(percentages)
        self._names = list(percentages)
        self._counters = {
            name: Metrics.counter("preprocess", f"rows_{name}") for name in self._names
        }

    def process(self, batch: pa.RecordBatch) -> Iterable:
        if self._split_key is None:
            keys = record_texts(batch, self._record_columns)
        else:
            keys = batch.column(self._split_key)
        split_index = assign_splits(keys, self._percentages)
        for index, name in enumerate(self._names):
            mask = split_index == index
            if mask.any():
                part = batch.filter(pa.array(mask))
                self._counters[name].inc(part.num_rows)
                yield beam.pvalue.TaggedOutput(name, part)


class SplitByKey(beam.PTransform):
    """PCollection[pa.RecordBatch] -> one PCollection[pa.RecordBatch] per split name.

    Rows go by their split key's fingerprint or, without one, by their spec
    columns' (`record_texts`; the derived record key and aggregates are left
    out, so identical input rows split alike). Returns a dict {split name:
    PCollection}. Keeps the input's windowing. Counters: rows_<split>.
    """

    def __init__(self, spec: DatasetSpec):
        super().__init__()
        split_boundaries(spec.split.percentages)  # fail at construction on a bad rule
        self._split_key = spec.split_key
        self._record_columns = spec.column_names
        self._percentages = spec.split.percentages

    def expand(self, batches):
        names = list(self._percentages)
        outputs = batches | "AssignSplit" >> beam.ParDo(
            _SplitBatchDoFn(self._split_key, self._percentages, self._record_columns)
        ).with_outputs(*names)
        return {name: outputs[name] for name in names}
