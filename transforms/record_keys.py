"""Checking that a declared record key is unique, and numbering identical
records where a derived key must tell them apart.

`FindDuplicateKeys` counts, over all valid rows, the key values that more than
one row holds, with a few examples, so that a run reports a key it cannot
trust (the manifest's and the report's `duplicate_keys`) instead of writing
examples that a join on the key would mix up.

Why not `CombinePerKey(sum)` on (key, 1): with a unique key every row would be
its own element through the shuffle, the per-element cost of the runner paid
10 million times on a 10-million-row run. Here each batch is cut by a stable
fingerprint of the key into `KEY_SHARDS` Arrow arrays, and each shard's keys
are counted at once with Arrow's `value_counts`: a few hundred elements per
batch, and the shuffle moves only the key column.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystems import FileSystems

from transforms.split import key_fingerprints

KEY_SHARDS = 256
MAX_DUPLICATE_EXAMPLES = 5
# Where the batch job leaves the result for pipeline.finalize (in the run's
# scratch counts directory, next to counts.json).
DUPLICATE_KEYS_FILE = "duplicate_keys.json"


def duplicate_keys_path(out) -> str:
    """Where a batch run (a pipeline.layout.RunLayout) stages FindDuplicateKeys' result."""
    return FileSystems.join(out.counts_dir, DUPLICATE_KEYS_FILE)


def keys_by_shard(keys: pa.Array, shards: int = KEY_SHARDS) -> Iterable[tuple[int, pa.Array]]:
    """(shard, the keys in it) for every shard that the keys touch; equal keys
    always share a shard."""
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks()
    shard_of = (key_fingerprints(keys) % np.uint64(shards)).astype(np.int64)
    order = np.argsort(shard_of, kind="stable")
    sorted_shards = shard_of[order]
    starts = np.flatnonzero(np.r_[True, sorted_shards[1:] != sorted_shards[:-1]])
    ends = np.r_[starts[1:], len(order)]
    for start, end in zip(starts, ends, strict=True):
        yield int(sorted_shards[start]), keys.take(pa.array(order[start:end]))


def repeated_keys(key_arrays: Iterable[pa.Array]) -> list[tuple[object, int]]:
    """(key, rows) of every key that occurs more than once among the arrays."""
    arrays = [array for array in key_arrays if len(array)]
    if not arrays:
        return []
    counts = pc.value_counts(pa.concat_arrays(arrays))
    values, numbers = counts.field("values"), counts.field("counts")
    repeated = pc.greater(numbers, 1)
    return list(
        zip(values.filter(repeated).to_pylist(), numbers.filter(repeated).to_pylist(), strict=True)
    )


class DuplicateKeysFn(beam.CombineFn):
    """(key, rows) of repeated keys -> {"count": keys held by more than one row,
    "rows": the rows that hold them, "examples": [{"key", "rows"}] of the
    smallest few keys (as text), so that reruns show the same examples}."""

    def __init__(self, max_examples: int = MAX_DUPLICATE_EXAMPLES):
        self._max_examples = max_examples

    def create_accumulator(self):
        return 0, 0, []

    def add_input(self, accumulator, element):
        count, rows, examples = accumulator
        key, key_rows = element
        examples = heapq.nsmallest(self._max_examples, [*examples, (str(key), key_rows)])
        return count + 1, rows + key_rows, examples

    def merge_accumulators(self, accumulators):
        count, rows, examples = 0, 0, []
        for other_count, other_rows, other_examples in accumulators:
            count, rows = count + other_count, rows + other_rows
            examples = heapq.nsmallest(self._max_examples, [*examples, *other_examples])
        return count, rows, examples

    def extract_output(self, accumulator) -> dict:
        count, rows, examples = accumulator
        return {
            "count": count,
            "rows": rows,
            "examples": [{"key": key, "rows": key_rows} for key, key_rows in examples],
        }


class _KeysByShardDoFn(beam.DoFn):
    def __init__(self, key_column: str):
        self._key_column = key_column

    def process(self, batch: pa.RecordBatch) -> Iterable[tuple[int, pa.Array]]:
        if batch.num_rows:
            yield from keys_by_shard(batch.column(self._key_column))


class FindDuplicateKeys(beam.PTransform):
    """PCollection[pa.RecordBatch] of valid rows -> a PCollection of exactly one
    dict (DuplicateKeysFn's): the values of `key_column` that more than one row
    holds. Bounded input, global window. Costs one shuffle of the key column,
    in KEY_SHARDS Arrow arrays per batch (see the module docstring).
    """

    def __init__(self, key_column: str, max_examples: int = MAX_DUPLICATE_EXAMPLES):
        super().__init__()
        self._key_column = key_column
        self._max_examples = max_examples

    def expand(self, batches):
        return (
            batches
            | "ShardKeys" >> beam.ParDo(_KeysByShardDoFn(self._key_column))
            | "GroupKeyShards" >> beam.GroupByKey()
            | "CountRepeatedKeys" >> beam.FlatMap(lambda shard: repeated_keys(shard[1]))
            | "SummariseDuplicates" >> beam.CombineGlobally(DuplicateKeysFn(self._max_examples))
        )
