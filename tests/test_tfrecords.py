"""WriteTFRecordBatches and TFRecordGzipSink write files that tf.data reads back
record for record, framed byte for byte as Beam's own TFRecord writer frames them."""

from __future__ import annotations

import glob
import gzip

import apache_beam as beam
import pytest

from tests.support import test_pipeline
from transforms.tfrecords import (
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
    import io

    from apache_beam.io.tfrecordio import _TFRecordUtil

    records = [b"", b"one", b"\x00\xff" * 300]
    expected = io.BytesIO()
    for record in records:
        _TFRecordUtil.write_record(expected, record)
    assert frame_records(records) == expected.getvalue()


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


def test_gzip_writer_is_the_fastest_level_and_deterministic():
    import io

    from transforms.tfrecords import GzipWriter

    data = frame_records([b"feature_name" * 50 + bytes([i]) for i in range(200)])
    files = []
    for _ in range(2):
        handle = io.BytesIO()
        writer = GzipWriter(handle)
        writer.write(data[:1000])
        writer.write(data[1000:])
        writer.finish()
        writer.finish()  # a second finish adds nothing
        files.append(handle.getvalue())
    assert files[0] == files[1]
    assert gzip.decompress(files[0]) == data
    # RFC 1952 header: no FNAME flag (byte 3), mtime 0 (bytes 4-7), XFL 4 = fastest.
    assert files[0][3] == 0 and files[0][4:8] == b"\0\0\0\0" and files[0][8] == 4
