"""ReadCsvLineBatches: every line of plain and gzip files, as bytes, with its
source, exactly once however the files are cut into byte ranges."""

from __future__ import annotations

import gzip
import io
import random

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from tests.support import test_pipeline
from transforms.csv_source import (
    ByteRange,
    ReadCsvLineBatches,
    join_quoted_newlines,
    plan_ranges,
    read_line_range,
)


def test_reads_plain_and_gzip_lines_as_bytes_with_their_file(tmp_path):
    (tmp_path / "a.csv").write_bytes(b"h1,h2\r\n1,caf\xe9\r\n2,b\r\n")
    (tmp_path / "b.csv.gz").write_bytes(gzip.compress(b"h1,h2\n3,c\n4,d"))
    files = [
        (str(tmp_path / name), (tmp_path / name).stat().st_size) for name in ("a.csv", "b.csv.gz")
    ]
    # With each line's byte offset in the decompressed file: a derived record key.
    expected = [
        ("a.csv", b"h1,h2\r", 0),
        ("a.csv", b"1,caf\xe9\r", 7),
        ("a.csv", b"2,b\r", 15),
        ("b.csv.gz", b"h1,h2", 0),
        ("b.csv.gz", b"3,c", 6),
        ("b.csv.gz", b"4,d", 10),
    ]
    with test_pipeline() as p:
        lines = (
            p
            | ReadCsvLineBatches(files, range_bytes=4, batch_lines=2)
            | beam.FlatMap(lambda batch: batch)
            | beam.MapTuple(lambda path, line, offset: (path.rsplit("/", 1)[1], line, offset))
        )
        assert_that(lines, equal_to(expected))


def test_compressed_files_are_one_range_and_plain_files_are_cut():
    ranges = plan_ranges([("a.csv", 10), ("b.csv.gz", 100), ("empty.csv", 0)], range_bytes=4)
    assert ranges == [
        ByteRange("a.csv", 0, 4),
        ByteRange("a.csv", 4, 8),
        ByteRange("a.csv", 8, None),
        ByteRange("b.csv.gz", 0, None),
        ByteRange("empty.csv", 0, None),
    ]


def _lines_of(data: bytes) -> list[bytes]:
    """The reference: what splitting the whole file at b"\\n" gives."""
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return lines


@pytest.mark.parametrize("seed", range(4))
def test_any_cut_into_ranges_reads_every_line_exactly_once(seed):
    rng = random.Random(seed)
    for _ in range(500):
        lines = [
            bytes(rng.choice(b'ab\r,"') for _ in range(rng.randint(0, 12)))
            for _ in range(rng.randint(0, 30))
        ]
        data = b"\n".join(lines) + (b"\n" if rng.random() < 0.5 else b"")
        range_bytes, chunk_bytes = rng.randint(1, 20), rng.randint(1, 7)
        read = []
        for byte_range in plan_ranges([("x.csv", len(data))], range_bytes):
            for batch, _ in read_line_range(
                io.BytesIO(data), byte_range.start, byte_range.end, rng.randint(1, 5), chunk_bytes
            ):
                read.extend(batch)
        assert read == _lines_of(data), (data, range_bytes, chunk_bytes)


def test_a_line_longer_than_range_and_chunk_is_read_whole_by_its_range():
    long_line = b"x" * 10_000
    data = b"a\n" + long_line + b"\nb\n"
    batches = [
        [lines for lines, _ in read_line_range(io.BytesIO(data), r.start, r.end, 100, 64)]
        for r in plan_ranges([("x.csv", len(data))], range_bytes=1000)
    ]
    assert [line for ranges in batches for batch in ranges for line in batch] == [
        b"a",
        long_line,
        b"b",
    ]
    assert batches[0] == [[b"a", long_line]]


def test_batches_hold_at_most_batch_lines():
    data = b"".join(b"%d\n" % i for i in range(10))
    sizes = [len(batch) for batch, _ in read_line_range(io.BytesIO(data), 0, None, 4)]
    assert sizes == [4, 4, 2]


def _offsets_of(data: bytes) -> list[int]:
    """The reference: where each line of _lines_of(data) starts."""
    offsets, position = [], 0
    for line in _lines_of(data):
        offsets.append(position)
        position += len(line) + 1
    return offsets


@pytest.mark.parametrize("seed", range(2))
def test_any_cut_into_ranges_gives_every_line_its_offset_in_the_file(seed):
    rng = random.Random(seed)
    for _ in range(300):
        lines = [
            bytes(rng.choice(b"ab\r,") for _ in range(rng.randint(0, 12)))
            for _ in range(rng.randint(0, 30))
        ]
        data = b"\n".join(lines) + (b"\n" if rng.random() < 0.5 else b"")
        range_bytes, chunk_bytes = rng.randint(1, 20), rng.randint(1, 7)
        read = []
        for byte_range in plan_ranges([("x.csv", len(data))], range_bytes):
            for batch, offsets in read_line_range(
                io.BytesIO(data), byte_range.start, byte_range.end, rng.randint(1, 5), chunk_bytes
            ):
                read.extend(zip(batch, offsets, strict=True))
        assert read == list(zip(_lines_of(data), _offsets_of(data), strict=True)), (
            data,
            range_bytes,
        )


def test_a_record_with_quoted_newlines_takes_its_first_lines_offset():
    data = b'a,1\n"x\ny",2\nb,3\n'
    batches = read_line_range(io.BytesIO(data), 0, None, 2)
    joined = [
        pair
        for records, offsets in join_quoted_newlines(batches)
        for pair in zip(records, offsets, strict=True)
    ]
    assert joined == [(b"a,1", 0), (b'"x\ny",2', 4), (b"b,3", 12)]
