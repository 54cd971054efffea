"""Transformed Arrow batches -> serialized tf.train.Examples, column at a time.

tfx-bsl's RecordBatchToExamplesEncoder builds every example feature by feature
in C++; on the full taxi spec's 25 features it spent about 4.7 µs per row, the
largest single item of a batch run's CPU profile. But a transformed batch is
almost always a set of scalar features: every row holds exactly one value in
every column. Then each feature's bytes in an example are a constant part
(the map entry's tags and the feature name) and the row's value, and a batch
of examples can be built with a handful of Arrow and NumPy operations per
column, without a step per row: about 0.7 µs per row on the same batches
(`python -m benchmarks.step_costs`).
Most features have entries of one length in every row of a batch (a float, a
small int, keys of one width): consecutive ones are laid out in one byte
matrix, the constant bytes broadcast and the values copied in column by
column; the others become Arrow pieces, and one element-wise join makes the
examples.

`encode_examples` does that for batches of scalar int64, float32 and binary
features, and hands every other batch (a multi-valued or empty feature, a
null, another type) to tfx-bsl's encoder, so it takes whatever that takes.
Both produce the same examples: parsed back, every feature has the same kind
and values (tests/test_example_encoder.py checks it against tfx-bsl). Only the
order in which the features are written differs: here it is the batch's
column order, in tfx-bsl that of its hash map. A proto parser takes the
fields of a message in any order.

The wire format is protobuf's (example.proto, feature.proto):
  Example  := 0x0A len Features
  Features := per feature: 0x0A len (0x0A len name  0x12 len Feature)
  Feature  := 0x0A len BytesList | 0x12 len FloatList | 0x1A len Int64List
  BytesList := per value 0x0A len bytes;  FloatList := 0x0A len packed float32;
  Int64List := 0x0A len packed varints (a negative int64 takes ten bytes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_EMPTY = pa.scalar(b"", pa.binary())
# The largest varint of an int64 (negative values are their two's complement).
_MAX_VARINT_BYTES = 10


def varint(value: int) -> bytes:
    """Protobuf's base-128 varint of a non-negative integer."""
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if not value:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def _varint_array(values: np.ndarray) -> pa.Array:
    """Binary array: the varint of each int64 value (two's complement as uint64)."""
    rest = values.astype(np.uint64, copy=True)
    digits = np.zeros((len(rest), _MAX_VARINT_BYTES), np.uint8)
    lengths = np.ones(len(rest), np.int32)
    for position in range(_MAX_VARINT_BYTES):
        low = (rest & np.uint64(0x7F)).astype(np.uint8)
        rest >>= np.uint64(7)
        more = rest != 0
        digits[:, position] = low | (more.astype(np.uint8) << 7)
        if not more.any():
            break
        lengths += more
    # Row-major boolean selection keeps each row's digits in order, rows one after another.
    data = digits[np.arange(_MAX_VARINT_BYTES) < lengths[:, None]]
    offsets = np.zeros(len(rest) + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.Array.from_buffers(
        pa.binary(), len(rest), [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )


def _bytes_by_value(values: np.ndarray, make: Callable[[int], bytes]) -> pa.Array:
    """Binary array: make(v) for each int value v, calling make once per distinct
    value (a varint width, a string length or an example length takes few
    values in a batch, within a narrow range)."""
    low = int(values.min())
    span = int(values.max()) - low + 1
    if span > 4 * len(values):
        distinct, index = np.unique(values, return_inverse=True)
        return pa.array([make(int(v)) for v in distinct], pa.binary()).take(pa.array(index))
    # A table over the range costs a count instead of np.unique's sort.
    present = np.bincount(values - low, minlength=span) > 0
    table = [make(low + i) if present[i] else b"" for i in range(span)]
    return pa.array(table, pa.binary()).take(pa.array(values - low))


def fixed_width_binary(rows: np.ndarray) -> pa.Array:
    """Binary array from an (n, width) uint8 matrix: row i's bytes."""
    n, width = rows.shape
    fixed = pa.Array.from_buffers(
        pa.binary(width), n, [None, pa.py_buffer(np.ascontiguousarray(rows))]
    )
    return fixed.cast(pa.binary())


def binary_offsets(array: pa.Array) -> np.ndarray:
    """The value offsets of a binary array (a slice's, into its data buffer)."""
    offsets = np.frombuffer(array.buffers()[1], np.int32)
    return offsets[array.offset : array.offset + len(array) + 1]


def binary_data(array: pa.Array) -> np.ndarray:
    """The data buffer of a binary array, as bytes (empty when it has none)."""
    buffer = array.buffers()[2]
    return np.frombuffer(buffer, np.uint8) if buffer is not None else np.empty(0, np.uint8)


def _entry(name_field: bytes, kind_tag: int, payload_length: int) -> bytes:
    """A map entry's bytes up to the list payload: its tag and length, the name
    field, the Feature's tag and length, the list's tag and length and the
    packed field's tag and length."""
    list_length = 1 + len(varint(payload_length)) + payload_length
    feature = bytes([kind_tag]) + varint(list_length) + b"\x0a" + varint(payload_length)
    value_field = b"\x12" + varint(len(feature) + payload_length)
    entry = name_field + value_field + feature
    return b"\x0a" + varint(len(entry) + payload_length) + entry


@dataclasses.dataclass
class _FixedEntry:
    """A feature whose map entry has the same length in every row of the batch:
    constant bytes, then the row's value bytes (one row of `values` each)."""

    prefix: bytes
    values: np.ndarray  # (rows, width) uint8


@dataclasses.dataclass
class _VariableEntry:
    """A feature whose entry length differs between rows: Arrow pieces (scalars
    for constant bytes, arrays for per-row bytes) and each row's entry length."""

    pieces: list
    lengths: np.ndarray


def _scalar_entry(name: str, values: pa.Array) -> _FixedEntry | _VariableEntry | None:
    """One scalar feature's map entry in every row; None for a value type the
    fast path does not write."""
    key = name.encode()
    name_field = b"\x0a" + varint(len(key)) + key
    kind = values.type
    if pa.types.is_float32(kind):
        raw = values.to_numpy(zero_copy_only=False).astype("<f4", copy=False)
        return _FixedEntry(_entry(name_field, 0x12, 4), raw.view(np.uint8).reshape(-1, 4))
    if pa.types.is_int64(kind):
        numbers = values.to_numpy(zero_copy_only=False)
        if numbers.min() >= 0 and numbers.max() < 0x80:
            # One varint byte each, the value itself: ids, buckets and hours mostly are.
            return _FixedEntry(_entry(name_field, 0x1A, 1), numbers.astype(np.uint8)[:, None])
        varints = _varint_array(numbers)
        widths = pc.binary_length(varints).to_numpy().astype(np.int64)
        prefixes = _bytes_by_value(widths, lambda width: _entry(name_field, 0x1A, width))
        lengths = pc.binary_length(prefixes).to_numpy().astype(np.int64) + widths
        return _VariableEntry([prefixes, varints], lengths)
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        data = values.cast(pa.binary())
        widths = pc.binary_length(data).to_numpy().astype(np.int64)
        # A BytesList of one value is laid out as a packed list: 0x0A len bytes.
        if widths.min() == widths.max() > 0:
            width = int(widths[0])
            first = binary_offsets(data)[0]
            raw = binary_data(data)[first : first + width * len(data)].reshape(len(data), width)
            return _FixedEntry(_entry(name_field, 0x0A, width), raw)
        prefixes = _bytes_by_value(widths, lambda width: _entry(name_field, 0x0A, width))
        lengths = pc.binary_length(prefixes).to_numpy().astype(np.int64) + widths
        return _VariableEntry([prefixes, data], lengths)
    return None


def _fixed_run(entries: list[_FixedEntry], rows: int) -> np.ndarray:
    """The bytes of consecutive fixed-length entries, one row per example: the
    constant bytes filled in one broadcast, then each value column copied into
    its place through a structured view (one strided copy per column; a 2-D
    slice assignment per column cost twice as much)."""
    template = bytearray()
    names, formats, offsets = [], [], []
    for index, entry in enumerate(entries):
        template += entry.prefix
        names.append(f"v{index}")
        formats.append(f"V{entry.values.shape[1]}")
        offsets.append(len(template))
        template += bytes(entry.values.shape[1])
    matrix = np.empty((rows, len(template)), np.uint8)
    matrix[:] = np.frombuffer(bytes(template), np.uint8)
    layout = np.dtype(
        {"names": names, "formats": formats, "offsets": offsets, "itemsize": len(template)}
    )
    fields = matrix.view(layout).reshape(rows)
    for name, entry in zip(names, entries, strict=True):
        values = np.ascontiguousarray(entry.values)
        fields[name] = values.view(f"V{values.shape[1]}").reshape(rows)
    return matrix


def _scalar_values(column: pa.Array) -> pa.Array | None:
    """The values of a list column holding exactly one non-null value per row
    (None for any other column)."""
    if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)):
        return None
    if column.null_count:
        return None
    offsets = column.offsets.to_numpy()
    if not np.array_equal(np.diff(offsets), np.ones(len(column), offsets.dtype)):
        return None
    values = column.values.slice(offsets[0], len(column))
    return None if values.null_count else values


def encode_scalar_examples(batch: pa.RecordBatch) -> pa.Array | None:
    """The serialized examples of a batch of scalar features (see the module
    docstring), or None when a column is not one."""
    pieces: list = []
    lengths = np.zeros(batch.num_rows, np.int64)
    run: list[_FixedEntry] = []  # fixed-length entries not yet in `pieces`

    def end_run() -> None:
        if run:
            matrix = _fixed_run(run, batch.num_rows)
            pieces.append(fixed_width_binary(matrix))
            lengths[:] += matrix.shape[1]
            run.clear()

    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        values = _scalar_values(column)
        entry = None if values is None else _scalar_entry(name, values)
        if entry is None:
            return None
        if isinstance(entry, _FixedEntry):
            run.append(entry)
        else:
            end_run()
            pieces += entry.pieces
            lengths += entry.lengths
    end_run()
    header = _bytes_by_value(lengths, lambda length: b"\x0a" + varint(length))
    return pc.binary_join_element_wise(header, *pieces, _EMPTY)


class ExampleEncoder:
    """RecordBatch of list columns -> binary array of serialized tf.train.Examples,
    one per row: the column-at-a-time path for scalar features, else tfx-bsl's
    encoder. Create one per worker (in DoFn.setup)."""

    def __init__(self):
        from tfx_bsl.coders.example_coder import RecordBatchToExamplesEncoder

        self._general = RecordBatchToExamplesEncoder()

    def encode(self, batch: pa.RecordBatch) -> pa.Array:
        if not batch.num_rows:
            return pa.array([], pa.binary())
        encoded = encode_scalar_examples(batch)
        if encoded is None:
            encoded = pa.array(self._general.encode(batch), pa.binary())
        return encoded
