"""ReadCsvLines: every line of plain and gzip files, as bytes, with its source."""

from __future__ import annotations

import gzip

import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to

from tests.conftest import test_pipeline
from transforms.csv_source import ReadCsvLines


def test_reads_plain_and_gzip_lines_as_bytes_with_their_file(tmp_path):
    (tmp_path / "a.csv").write_bytes(b"h1,h2\r\n1,caf\xe9\r\n2,b\r\n")
    (tmp_path / "b.csv.gz").write_bytes(gzip.compress(b"h1,h2\n3,c\n"))
    expected = [
        ("a.csv", b"h1,h2"),
        ("a.csv", b"1,caf\xe9"),
        ("a.csv", b"2,b"),
        ("b.csv.gz", b"h1,h2"),
        ("b.csv.gz", b"3,c"),
    ]
    with test_pipeline() as p:
        lines = (
            p
            | ReadCsvLines([str(tmp_path / "a.csv"), str(tmp_path / "*.gz")])
            | beam.MapTuple(lambda path, line: (path.rsplit("/", 1)[1], line))
        )
        assert_that(lines, equal_to(expected))
