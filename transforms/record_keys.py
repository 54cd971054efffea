"""Checking that a declared record key is unique, and numbering identical
records where a derived key must tell them apart.

`FindDuplicateKeys` counts, over all valid rows, the key values that more than
one row holds, with a few examples, so that a run reports a key it cannot
trust (the manifest's and the report's `duplicate_keys`) instead of writing
examples that a join on the key would mix up.

Why not `CombinePerKey(sum)` on (key, 1): with a unique key every row would be
its own element through the shuffle, the per-element cost of the runner paid
10 million times on a 10-million-row run. Here the keys are cut by a stable
fingerprint into `KEY_SHARDS` Arrow arrays, and each shard's keys are counted
at once with Arrow's `value_counts`.

The keys themselves do not go through the shuffle either: each bundle writes
its keys, cut into shards once per file of KEY_FILE_ROWS rows, to Arrow IPC
files holding one record batch per shard, and
only (shard, path) pairs are grouped. Shuffled, the key column made the local
runner hold every key of the run in its grouping buffer and hand each worker
its shards in one piece: at 10M rows the full taxi spec's peak PSS sum was
3.88 GiB with the keys shuffled and 2.25 GiB without this step at all. A shard
is then read back from every file by the worker that counts it, N / KEY_SHARDS
keys at a time.

`NumberIdenticalRecords` makes the content-hash keys of BigQuery rows (see
transforms.bigquery_source) unique: it finds the repeated hashes the same
way, and only the rows that share one go through a second shuffle to be
numbered.
"""

from __future__ import annotations

import heapq
import uuid
from collections.abc import Iterable

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindows

KEY_SHARDS = 256
# Keys per key file: a few megabytes of keys, and few enough files that reading
# one shard back from all of them stays cheap (40 files at 10M rows).
KEY_FILE_ROWS = 262_144
MAX_DUPLICATE_EXAMPLES = 5
# Where the batch job leaves the result for pipeline.finalize (in the run's
# scratch counts directory, next to counts.json).
DUPLICATE_KEYS_FILE = "duplicate_keys.json"


def duplicate_keys_path(out) -> str:
    """Where a batch run (a pipeline.layout.RunLayout) stages FindDuplicateKeys' result."""
    return FileSystems.join(out.counts_dir, DUPLICATE_KEYS_FILE)


_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


def cheap_fingerprints(keys: pa.Array) -> np.ndarray:
    """A 64-bit FNV-1a hash of every key's bytes (strings) or of its value
    (integers), in NumPy over the Arrow buffers: one pass per byte position,
    not a Python call per key, since every row of a run pays it. Not for
    anything that must resist collisions: it only spreads keys over shards."""
    if pa.types.is_integer(keys.type):
        values = pc.fill_null(keys, 0).cast(pa.int64()).to_numpy(zero_copy_only=False)
        return values.astype(np.uint64) * _FNV_PRIME
    binary = pc.fill_null(keys.cast(pa.large_binary()), b"")
    offsets = np.frombuffer(binary.buffers()[1], dtype=np.int64)
    offsets = offsets[binary.offset : binary.offset + len(binary) + 1]
    data = np.frombuffer(binary.buffers()[2] or b"\0", dtype=np.uint8)
    starts, lengths = offsets[:-1], np.diff(offsets)
    hashes = np.full(len(binary), _FNV_OFFSET, dtype=np.uint64)
    last = len(data) - 1
    with np.errstate(over="ignore"):  # the multiplication wraps around, as FNV's does
        for position in range(int(lengths.max()) if len(lengths) else 0):
            inside = position < lengths
            byte = data[np.minimum(starts + position, last)].astype(np.uint64)
            hashes = np.where(inside, (hashes ^ byte) * _FNV_PRIME, hashes)
    return hashes


def keys_by_shard(keys: pa.Array, shards: int = KEY_SHARDS) -> Iterable[tuple[int, pa.Array]]:
    """(shard, the keys in it) for every shard that the keys touch; equal keys
    always share a shard."""
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks()
    shard_of = (cheap_fingerprints(keys) % np.uint64(shards)).astype(np.int64)
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


class _SpillKeysByShardDoFn(beam.DoFn):
    """RecordBatches -> (shard, path) for every shard with keys in a file: the
    keys in Arrow IPC files of `directory`, a new file every `file_rows` rows
    or so and at the end of each bundle, record batch i holding shard i's keys
    (see the module docstring). A local runner's bundle can be a worker's whole
    share of the input, so the file size, not the bundle, bounds what a worker
    holds. A retried bundle writes files of its own; the failed attempt's
    outputs are discarded with it."""

    def __init__(
        self,
        key_column: str,
        directory: str,
        shards: int = KEY_SHARDS,
        file_rows: int = KEY_FILE_ROWS,
    ):
        self._key_column = key_column
        self._directory = directory
        self._shards = shards
        self._file_rows = file_rows

    def start_bundle(self):
        # The keys of the file being gathered; cut into shards once per file, as
        # cutting each batch took a slice per shard for a few rows each.
        self._keys: list[pa.Array] = []
        self._type = None
        self._rows = 0

    def process(self, batch: pa.RecordBatch) -> Iterable:
        if not batch.num_rows:
            return
        keys = batch.column(self._key_column)
        self._type = keys.type
        self._keys.append(keys)
        self._rows += batch.num_rows
        if self._rows >= self._file_rows:
            yield from self._write()

    def finish_bundle(self):
        if self._rows:
            for pair in self._write():
                yield GlobalWindows.windowed_value(pair)

    def _write(self) -> list[tuple[int, str]]:
        schema = pa.schema([("key", self._type)])
        path = FileSystems.join(self._directory, f"keys-{uuid.uuid4().hex}.arrow")
        by_shard = dict(keys_by_shard(pa.concat_arrays(self._keys), self._shards))
        empty = pa.array([], self._type)
        with FileSystems.create(path) as handle, pa.ipc.new_file(handle, schema) as writer:
            for shard in range(self._shards):
                keys = by_shard.get(shard, empty)
                writer.write_batch(pa.record_batch([keys], schema=schema))
        written = [(shard, path) for shard in sorted(by_shard)]
        self._keys = []
        self._rows = 0
        return written


def shard_keys(shard: int, paths: Iterable[str]) -> list[pa.Array]:
    """Shard `shard`'s keys from every file _SpillKeysByShardDoFn wrote."""
    keys = []
    for path in paths:
        with FileSystems.open(path) as handle:
            keys.append(pa.ipc.open_file(handle).get_batch(shard).column(0))
    return keys


class RepeatedKeys(beam.PTransform):
    """PCollection[pa.RecordBatch] -> (key, rows) of every value of `key_column`
    that more than one row holds. The keys wait in files under `spill_dir`;
    only (shard, file path) pairs are shuffled (see the module docstring)."""

    def __init__(self, key_column: str, spill_dir: str):
        super().__init__()
        self._key_column = key_column
        self._spill_dir = spill_dir

    def expand(self, batches):
        return (
            batches
            | "SpillKeyShards"
            >> beam.ParDo(_SpillKeysByShardDoFn(self._key_column, self._spill_dir))
            | "GroupKeyShards" >> beam.GroupByKey()
            | "CountRepeatedKeys"
            >> beam.FlatMap(lambda shard: repeated_keys(shard_keys(shard[0], shard[1])))
        )


class FindDuplicateKeys(beam.PTransform):
    """PCollection[pa.RecordBatch] of valid rows -> a PCollection of exactly one
    dict (DuplicateKeysFn's): the values of `key_column` that more than one row
    holds. Bounded input, global window.
    """

    def __init__(self, key_column: str, spill_dir: str, max_examples: int = MAX_DUPLICATE_EXAMPLES):
        super().__init__()
        self._key_column = key_column
        self._spill_dir = spill_dir
        self._max_examples = max_examples

    def expand(self, batches):
        return (
            batches
            | "RepeatedKeys" >> RepeatedKeys(self._key_column, self._spill_dir)
            | "SummariseDuplicates" >> beam.CombineGlobally(DuplicateKeysFn(self._max_examples))
        )


# --- numbering identical records (BigQuery without a key column) ----------------

_REPEATED_TAG = "repeated"


class _NumberUniqueDoFn(beam.DoFn):
    """RecordBatch -> the batch's rows whose content key no other row has, keyed
    '<hash>#1' (main); the others as (hash, one-row batch), tagged 'repeated'."""

    def __init__(self, key_column: str):
        self._key_column = key_column
        self._repeated = self._value_set = None

    def process(self, batch: pa.RecordBatch, repeated: dict) -> Iterable:
        keys = batch.column(self._key_column)
        if self._repeated is not repeated:  # once per side input, not per batch
            self._repeated = repeated
            self._value_set = pa.array(sorted(repeated), keys.type)
        if repeated:
            shared = pc.is_in(keys, value_set=self._value_set).to_numpy(zero_copy_only=False)
        else:
            shared = np.zeros(batch.num_rows, dtype=bool)
        for index in np.flatnonzero(shared):
            yield beam.pvalue.TaggedOutput(
                _REPEATED_TAG, (keys[index].as_py(), batch.slice(index, 1))
            )
        if not shared.all():
            unique = batch.filter(pa.array(~shared)) if shared.any() else batch
            yield _with_ordinals(unique, self._key_column, np.ones(unique.num_rows, np.int64))


def _with_ordinals(batch: pa.RecordBatch, key_column: str, ordinals: np.ndarray):
    index = batch.schema.get_field_index(key_column)
    numbered = pc.binary_join_element_wise(
        batch.column(index), pc.cast(pa.array(ordinals), pa.string()), "#"
    )
    return batch.set_column(index, batch.schema.field(index), numbered)


def _number_identical(element, key_column: str) -> pa.RecordBatch:
    """(hash, one-row batches of identical rows) -> one batch keyed '<hash>#1..n'.
    The rows are equal in every spec column, so which gets which number changes
    no output."""
    _, rows = element
    batch = pa.concat_batches(list(rows))
    return _with_ordinals(batch, key_column, np.arange(1, batch.num_rows + 1))


class NumberIdenticalRecords(beam.PTransform):
    """PCollection[pa.RecordBatch] whose `key_column` holds a content hash ->
    the same rows with unique keys '<hash>#<n>': n is 1 for a row no other row
    equals, and 1..k over k identical rows. Bounded input, global window.

    Finds the repeated hashes as FindDuplicateKeys finds repeated keys (the
    hashes wait in files under `spill_dir`), then costs a side input of the
    repeated hashes and a shuffle of the repeated rows alone: nothing more for
    a table without duplicates.
    """

    def __init__(self, key_column: str, spill_dir: str):
        super().__init__()
        self._key_column = key_column
        self._spill_dir = spill_dir

    def expand(self, batches):
        repeated = batches | "RepeatedContentKeys" >> RepeatedKeys(
            self._key_column, self._spill_dir
        )
        split = batches | "NumberUnique" >> beam.ParDo(
            _NumberUniqueDoFn(self._key_column), beam.pvalue.AsDict(repeated)
        ).with_outputs(_REPEATED_TAG, main="unique")
        numbered = (
            split[_REPEATED_TAG]
            | "GroupIdenticalRecords" >> beam.GroupByKey()
            | "NumberIdentical" >> beam.Map(_number_identical, self._key_column)
        )
        return (split.unique, numbered) | "JoinNumbered" >> beam.Flatten()
