"""Writing TFRecord files: the one framing of the format, used by the batch
writer of serialized-record batches and by the streaming job's per-window sink.

Beam's WriteToTFRecord takes one element per record, and its file handle
compresses each record with a call of its own. Our examples come out of
tf.Transform and the encoder in batches, so they are framed here a batch at a
time and each batch reaches the file, and gzip, in one write: the runner then
handles one element per batch instead of one per example. The files are the
standard TFRecord format that tf.data and WriteToTFRecord read and write.

The streaming job writes through fileio.WriteToFiles instead, whose sink takes
one record at a time (`TFRecordGzipSink`); it frames them with the same
`frame_records`.

Both compress with Intel ISA-L's deflate (the `isal` package) at its level 2,
not Beam's zlib at level 6 (or GzipFile's 9). Serialized tf.Examples repeat
every feature name in every record, so even the fastest levels shrink them
5 to 6 times. On the full taxi spec's examples (719 bytes each), zlib spent
5.5 µs per record at level 6 and 2.5 µs at level 1, ISA-L 0.53 µs at level 2
(`python -m benchmarks.step_costs`).
The files came out smaller, too: a 1M-row run's train split took 86.5 MB
against 104.4 MB with zlib level 1 and tfx-bsl's encoder (whose feature order
varies from record to record; transforms.example_encoder writes one order).
The stream is standard gzip: whoever reads the files (tf.data,
WriteToTFRecord's reader) sees the same bytes. Where `isal` cannot be
imported, zlib at level 1 writes the same format.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.coders import coders
from apache_beam.io import filebasedsink, fileio
from apache_beam.io.filesystem import CompressionTypes

from transforms.example_encoder import binary_data, binary_offsets, fixed_width_binary

_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")
_CRC_MASK_DELTA = 0xA282EAD8
# ISA-L's default level; zlib's fastest as the fallback. See the module docstring.
ISAL_LEVEL = 2
ZLIB_LEVEL = 1
# The window bits for a gzip stream (header and trailer included).
_GZIP_WBITS = 16 + zlib.MAX_WBITS


def _gzip_compressor(level: int | None):
    """A gzip compressobj: ISA-L's when installed, else zlib's."""
    try:
        from isal import isal_zlib
    except ImportError:
        return zlib.compressobj(ZLIB_LEVEL if level is None else level, zlib.DEFLATED, _GZIP_WBITS)
    return isal_zlib.compressobj(ISAL_LEVEL if level is None else level, zlib.DEFLATED, _GZIP_WBITS)


class GzipWriter:
    """A gzip stream onto an open binary file handle, which it does not close.
    The header has no name and a zero mtime, so equal input gives equal files.
    `level` is the compressor's own (ISA-L's 0-3, or zlib's 0-9 without it)."""

    def __init__(self, handle, level: int | None = None):
        self.handle = handle
        self._compressor = _gzip_compressor(level)

    def write(self, data: bytes) -> None:
        self.handle.write(self._compressor.compress(data))

    def finish(self) -> None:
        """Ends the stream (writes the trailer); the handle stays open."""
        if self._compressor is not None:
            self.handle.write(self._compressor.flush())
            self._compressor = None


def _crc32c_function():
    # google-crc32c comes with apache-beam[gcp] and is what Beam's own TFRecord
    # writer picks first when python-snappy is absent.
    import google_crc32c

    return google_crc32c.value


def masked_crc32c(data: bytes, crc32c=None) -> int:
    """The masked CRC-32C of the TFRecord format."""
    crc = (crc32c or _crc32c_function())(data)
    return (((crc >> 15) | (crc << 17)) + _CRC_MASK_DELTA) & 0xFFFFFFFF


def _masked(crcs: np.ndarray) -> np.ndarray:
    """masked_crc32c's mask, over an array of CRCs."""
    crcs = crcs.astype(np.uint64)
    return ((((crcs >> 15) | (crcs << 17)) + _CRC_MASK_DELTA) & 0xFFFFFFFF).astype("<u4")


# Below this many records, framing each costs less than framing a column.
_COLUMNWISE_FROM = 64


def _frame_record(record: bytes) -> bytes:
    crc32c = _crc32c_function()
    length = _LENGTH.pack(len(record))
    return b"".join(
        (
            length,
            _CRC.pack(masked_crc32c(length, crc32c)),
            record,
            _CRC.pack(masked_crc32c(record, crc32c)),
        )
    )


def frame_records(records: Iterable[bytes] | pa.Array) -> bytes:
    """The TFRecord encoding of `records` (bytes, or an Arrow binary array),
    concatenated: per record its length, the masked CRC of the length, the data
    and the masked CRC of the data.

    An Arrow array is framed column-wise: only the data CRCs take a call per
    record (a CRC per distinct length covers the length fields). A few records
    in a list (the streaming sink's one) are framed one by one, which costs
    less than setting up the arrays."""
    if not isinstance(records, pa.Array):
        records = list(records)
        if len(records) < _COLUMNWISE_FROM:
            return b"".join(map(_frame_record, records))
        records = pa.array(records, pa.binary())
    if not len(records):
        return b""
    records = records.cast(pa.binary())
    crc32c = _crc32c_function()
    lengths = pc.binary_length(records).to_numpy().astype("<u8")
    distinct, index = np.unique(lengths, return_inverse=True)
    length_crcs = np.array([masked_crc32c(_LENGTH.pack(int(n)), crc32c) for n in distinct])
    header = np.empty((len(records), 12), np.uint8)
    header[:, :8] = lengths.view(np.uint8).reshape(-1, 8)
    header[:, 8:] = length_crcs.astype("<u4")[index].view(np.uint8).reshape(-1, 4)
    offsets = binary_offsets(records)
    data = binary_data(records).tobytes()
    # google-crc32c takes bytes, not memoryviews: a slice copies the record.
    starts, ends = offsets[:-1].tolist(), offsets[1:].tolist()
    # map() over slices keeps the loop in C: no Python frame per record.
    data_crcs = np.fromiter(
        map(crc32c, map(data.__getitem__, map(slice, starts, ends))), np.uint32, len(records)
    )
    trailer = _masked(data_crcs).view(np.uint8).reshape(-1, 4)
    framed = pc.binary_join_element_wise(
        fixed_width_binary(header), records, fixed_width_binary(trailer), b""
    )
    framed_offsets = binary_offsets(framed)
    return binary_data(framed)[framed_offsets[0] : framed_offsets[-1]].tobytes()


class _FramedRecordsSink(filebasedsink.FileBasedSink):
    """A FileBasedSink whose elements are already-framed TFRecord bytes,
    gzip-compressed by GzipWriter when the suffix ends in .gz (the sink's own
    compression would use Beam's fixed level)."""

    def __init__(self, file_path_prefix: str, file_name_suffix: str, num_shards: int):
        super().__init__(
            file_path_prefix,
            coder=coders.BytesCoder(),
            file_name_suffix=file_name_suffix,
            num_shards=num_shards,
            mime_type="application/octet-stream",
            compression_type=CompressionTypes.UNCOMPRESSED,
        )
        self._gzip = file_name_suffix.endswith(".gz")

    def open(self, temp_path):
        handle = super().open(temp_path)
        return GzipWriter(handle) if self._gzip else handle

    def write_encoded_record(self, file_handle, encoded_value: bytes) -> None:
        file_handle.write(encoded_value)

    def close(self, file_handle):
        if isinstance(file_handle, GzipWriter):
            file_handle.finish()
            file_handle = file_handle.handle
        return super().close(file_handle)


class WriteTFRecordBatches(beam.PTransform):
    """PCollection of serialized-record batches (each a list of bytes or an Arrow
    binary array) -> TFRecord files `<prefix>-SSSSS-of-NNNNN<suffix>`,
    gzip-compressed when the suffix ends in .gz. Returns the PCollection of
    written file names, like WriteToTFRecord.

    With num_shards 0 the runner decides and each bundle writes its own file, so
    nothing is shuffled; a fixed shard count makes the runner group all batches
    by shard first, which a local runner holds in memory.
    """

    def __init__(self, file_path_prefix: str, file_name_suffix: str = "", num_shards: int = 0):
        super().__init__()
        if num_shards < 0:
            raise ValueError(f"num_shards must be >= 0, got {num_shards}")
        self._sink = _FramedRecordsSink(file_path_prefix, file_name_suffix, num_shards)

    def expand(self, record_batches):
        return (
            record_batches
            | "FrameRecords" >> beam.Map(frame_records)
            | "WriteFiles" >> beam.io.Write(self._sink)
        )


class TFRecordGzipSink(fileio.FileSink):
    """A fileio sink: serialized records -> one gzip-compressed TFRecord file."""

    def __init__(self):
        self._file = None

    def open(self, fh):
        self._file = GzipWriter(fh)

    def write(self, record: bytes):
        self._file.write(frame_records((record,)))

    def flush(self):
        # Ends the gzip stream; the handle itself is closed by WriteToFiles.
        if self._file is not None:
            self._file.finish()
            self._file = None
