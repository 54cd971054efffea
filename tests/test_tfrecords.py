"""WriteTFRecordBatches and TFRecordGzipSink write files that tf.data reads back
record for record, framed byte for byte as Beam's own TFRecord writer frames them."""

from __future__ import annotations

import glob
import gzip
import io
import sys
import zlib

import apache_beam as beam
import pyarrow as pa
import pytest

from tests.support import test_pipeline
from transforms.tfrecords import (
    ISAL_LEVEL,
    TFRecordGzipSink,
    WriteTFRecordBatches,
    frame_records,
    masked_crc32c,
)


def test_masked_crc_matches_beams_own_tfrecord_writer():
    from apache_beam.io.tfrecordio import _TFRecordUtil

    for data in (b"", b"a", b"tf.Example bytes" * 37):
        assert masked_crc32c(data) == _TFRecordUtil._masked_crc32c(data)


def test_framing_matches_beams_writer_byte_for_byte():
    from apache_beam.io.tfrecordio import _TFRecordUtil

    # A short list is framed record by record, a long one column-wise.
    for records in ([b"", b"one", b"\x00\xff" * 300], [b"r%d" % i * i for i in range(200)]):
        expected = io.BytesIO()
        for record in records:
            _TFRecordUtil.write_record(expected, record)
        assert frame_records(records) == expected.getvalue()


def test_framing_of_arrow_arrays_and_slices():
    from apache_beam.io.tfrecordio import _TFRecordUtil

    records = [b"r%d" % i * (i % 7) for i in range(50)]
    array = pa.array(records, pa.binary())
    for part in (array, array.slice(13, 20), pa.array(records, pa.large_binary())):
        expected = io.BytesIO()
        for record in part.to_pylist():
            _TFRecordUtil.write_record(expected, record)
        assert frame_records(part) == expected.getvalue()
    assert frame_records(array.slice(0, 0)) == frame_records([]) == b""


@pytest.mark.parametrize("num_shards", [0, 2])
def test_written_files_read_back_with_tf_data(tmp_path, num_shards):
    import tensorflow as tf

    batches = [[b"r%d-%d" % (b, i) for i in range(b + 1)] for b in range(20)]
    prefix = str(tmp_path / "out" / "part")
    with test_pipeline() as p:
        _ = (
            p
            | beam.Create(batches)
            | WriteTFRecordBatches(prefix, file_name_suffix=".tfrecord.gz", num_shards=num_shards)
        )
    files = sorted(glob.glob(prefix + "*.tfrecord.gz"))
    if num_shards:
        assert len(files) == num_shards
    for path in files:
        with open(path, "rb") as handle:
            gzip.decompress(handle.read())  # each file is one valid gzip stream
    read = [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]
    assert sorted(read) == sorted(record for batch in batches for record in batch)


def test_gzip_sink_writes_one_gzip_stream_framed_as_beams_writer():
    import io

    from apache_beam.io.tfrecordio import _TFRecordUtil

    records = [b"", b"one", b"\x00\xff" * 300]
    expected = io.BytesIO()
    for record in records:
        _TFRecordUtil.write_record(expected, record)
    handle = io.BytesIO()
    sink = TFRecordGzipSink()
    sink.open(handle)
    for record in records:
        sink.write(record)
    sink.flush()
    assert gzip.decompress(handle.getvalue()) == expected.getvalue()


def test_gzip_sink_files_read_back_with_tf_data(tmp_path):
    import tensorflow as tf

    path = tmp_path / "part.tfrecord.gz"
    records = [b"r%d" % i for i in range(50)]
    with open(path, "wb") as handle:
        sink = TFRecordGzipSink()
        sink.open(handle)
        for record in records:
            sink.write(record)
        sink.flush()
    read = [r.numpy() for r in tf.data.TFRecordDataset([str(path)], compression_type="GZIP")]
    assert read == records


def _gzip_files(data: bytes, writes: int = 2) -> list[bytes]:
    import io

    from transforms.tfrecords import GzipWriter

    files = []
    for _ in range(writes):
        handle = io.BytesIO()
        writer = GzipWriter(handle)
        writer.write(data[:1000])
        writer.write(data[1000:])
        writer.finish()
        writer.finish()  # a second finish adds nothing
        files.append(handle.getvalue())
    return files


@pytest.mark.parametrize("isal_installed", [True, False], ids=["isal", "zlib-fallback"])
def test_gzip_writer_is_standard_gzip_and_deterministic(monkeypatch, isal_installed):
    if not isal_installed:
        # A None entry makes `from isal import isal_zlib` raise ImportError.
        monkeypatch.setitem(sys.modules, "isal", None)
    data = frame_records([b"feature_name" * 50 + bytes([i]) for i in range(200)])
    files = _gzip_files(data)
    assert files[0] == files[1]
    assert gzip.decompress(files[0]) == data
    # RFC 1952 header: gzip magic, deflate, no FNAME flag (byte 3), mtime 0 (bytes 4-7).
    assert files[0][:3] == b"\x1f\x8b\x08" and files[0][3] == 0 and files[0][4:8] == b"\0\0\0\0"
    # The repeated names compress: a writer that stored the data would not shrink it.
    assert len(files[0]) < len(data) / 5


def test_gzip_writer_uses_isal_when_installed():
    from isal import isal_zlib

    data = frame_records([b"feature_name" * 50 + bytes([i]) for i in range(200)])
    compressor = isal_zlib.compressobj(ISAL_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    expected = compressor.compress(data[:1000]) + compressor.compress(data[1000:])
    assert _gzip_files(data, writes=1)[0] == expected + compressor.flush()
