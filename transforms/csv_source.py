"""Reading CSV files: header discovery at construction time, and line reading.

Lines are read as bytes, not str, so that a line with invalid UTF-8 becomes a
dead letter instead of killing the job inside Beam's text decoder.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Iterable, Sequence

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from schemas.spec import DatasetSpec

UTF8_BOM = "\ufeff"


class InputError(ValueError):
    """An input pattern matches nothing, or a file cannot be used with the spec."""


@dataclasses.dataclass(frozen=True)
class CsvLayout:
    """Where each spec column sits in one file's records."""

    path: str
    size_bytes: int
    # The header line as text (BOM and line ending removed), or None without a header.
    header: str | None
    # Position of each spec column in a record, in spec column order.
    positions: tuple[int, ...]
    field_count: int
    # True when records hold exactly the spec's columns in the spec's order.
    in_spec_order: bool = dataclasses.field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "in_spec_order", self.positions == tuple(range(self.field_count)))


def expand_patterns(patterns: Sequence[str]) -> list[tuple[str, int]]:
    """(path, size) of every file matched by the patterns; raises InputError on no match."""
    files: dict[str, int] = {}
    for pattern in patterns:
        try:
            matches = FileSystems.match([pattern])[0].metadata_list
        except Exception as error:  # noqa: BLE001 - each filesystem raises its own type
            raise InputError(f"--input {pattern!r}: cannot list files: {error}") from None
        if not matches:
            raise InputError(f"--input {pattern!r} matches no file")
        for metadata in matches:
            files[metadata.path] = metadata.size_in_bytes
    return sorted(files.items())


def _first_line(path: str) -> str:
    compression = CompressionTypes.detect_compression_type(path)
    with FileSystems.open(path, compression_type=compression) as handle:
        raw = handle.readline()
    return raw.decode("utf-8", errors="replace").rstrip("\r\n").removeprefix(UTF8_BOM)


def layout_from_first_line(path: str, size: int, first_line: str, spec: DatasetSpec) -> CsvLayout:
    """Decides whether the file has a header and maps spec columns to positions."""
    names = spec.column_names
    fields = [
        field.strip() for field in next(csv.reader([first_line], delimiter=spec.csv.delimiter), [])
    ]
    looks_like_header = set(names) <= set(fields) or (
        len(fields) == len(names) and len(set(fields) & set(names)) >= len(names) / 2
    )
    mode = spec.csv.header
    if mode == "absent" or (mode == "auto" and not looks_like_header):
        return CsvLayout(path, size, None, tuple(range(len(names))), len(names))
    missing = [name for name in names if name not in fields]
    if missing:
        raise InputError(
            f"{path}: header {first_line!r} lacks column(s) {', '.join(missing)} declared "
            f"in spec '{spec.name}'"
        )
    positions = tuple(fields.index(name) for name in names)
    return CsvLayout(path, size, first_line, positions, len(fields))


def discover_layouts(patterns: Sequence[str], spec: DatasetSpec) -> dict[str, CsvLayout]:
    """Reads the first line of every input file; runs once, at pipeline construction."""
    return {
        path: layout_from_first_line(path, size, _first_line(path), spec)
        for path, size in expand_patterns(patterns)
    }


# Uncompressed files are read in byte ranges of this size, so that one large file
# is parsed by several workers at once; compressed files cannot be split.
DEFAULT_RANGE_BYTES = 16 << 20
# Lines handed to the parser at a time: large enough to amortise the per-element
# cost of the runner, small enough to keep a batch near a megabyte.
DEFAULT_BATCH_LINES = 8192
_READ_CHUNK_BYTES = 4 << 20


@dataclasses.dataclass(frozen=True)
class ByteRange:
    """The lines of `path` whose first byte lies in [start, end); end None is EOF."""

    path: str
    start: int
    end: int | None


def plan_ranges(files: Sequence[tuple[str, int]], range_bytes: int) -> list[ByteRange]:
    """Splits each uncompressed file into ranges of about `range_bytes`; a
    compressed file (detected from its extension) is one range."""
    if range_bytes < 1:
        raise ValueError(f"range_bytes must be positive, got {range_bytes}")
    ranges = []
    for path, size in files:
        if CompressionTypes.detect_compression_type(path) != CompressionTypes.UNCOMPRESSED:
            ranges.append(ByteRange(path, 0, None))
            continue
        starts = range(0, max(size, 1), range_bytes)
        ranges.extend(ByteRange(path, s, min(s + range_bytes, size)) for s in starts)
        # Bytes appended after planning are still read by the last range.
        ranges[-1] = ByteRange(path, ranges[-1].start, None)
    return ranges


def read_line_range(
    handle, start: int, end: int | None, batch_lines: int, chunk_bytes: int = _READ_CHUNK_BYTES
) -> Iterable[list[bytes]]:
    """Yields, in lists of up to `batch_lines`, the lines (without their b"\\n")
    whose first byte lies in [start, end) of the seekable binary `handle`.

    Every line of a file belongs to exactly one of a set of adjacent ranges: a
    range after the first skips the line that straddles its start, and the range
    holding a line's first byte reads it to its end, however long.
    """
    position = start
    pending = b""
    if start > 0:
        # The line holding byte start-1 belongs to the previous range, unless that
        # byte is its final newline.
        offset = start - 1
        handle.seek(offset)
        while True:
            chunk = handle.read(chunk_bytes)
            if not chunk:
                return
            newline = chunk.find(b"\n")
            if newline >= 0:
                position = offset + newline + 1
                pending = chunk[newline + 1 :]
                break
            offset += len(chunk)
    batch: list[bytes] = []
    buffered = pending
    while True:
        lines = buffered.split(b"\n")
        pending = lines.pop()
        for line in lines:
            if end is not None and position >= end:
                break
            batch.append(line)
            position += len(line) + 1
            if len(batch) >= batch_lines:
                yield batch
                batch = []
        if end is not None and position >= end:
            break
        chunk = handle.read(chunk_bytes)
        if not chunk:
            if pending:  # a last line without its newline
                batch.append(pending)
            break
        buffered = pending + chunk
    if batch:
        yield batch


class _ReadRangeDoFn(beam.DoFn):
    """ByteRange -> lists of (path, line bytes), headers included."""

    def __init__(self, batch_lines: int):
        self._batch_lines = batch_lines

    def process(self, byte_range: ByteRange) -> Iterable[list[tuple[str, bytes]]]:
        path = byte_range.path
        compression = CompressionTypes.detect_compression_type(path)
        with FileSystems.open(path, compression_type=compression) as handle:
            for lines in read_line_range(
                handle, byte_range.start, byte_range.end, self._batch_lines
            ):
                yield [(path, line) for line in lines]


class ReadCsvLineBatches(beam.PTransform):
    """Reads every line of the given files as lists of `(path, line_bytes)`.

    Output: bounded PCollection[list[tuple[str, bytes]]], global window; each
    list holds up to `batch_lines` lines of one file, headers included (the
    parser recognises them from each file's layout). Files are read in large
    byte ranges rather than line by line, so the runner handles one element per
    batch instead of one per line. Gzip and other compression is detected from
    the file extension; such a file is read by one worker. A trailing b"\\r" is
    left on the line for the parser to strip.
    """

    def __init__(
        self,
        files: Sequence[tuple[str, int]],
        range_bytes: int = DEFAULT_RANGE_BYTES,
        batch_lines: int = DEFAULT_BATCH_LINES,
    ):
        super().__init__()
        if not files:
            raise InputError("no input files")
        if batch_lines < 1:
            raise ValueError(f"batch_lines must be positive, got {batch_lines}")
        self._ranges = plan_ranges(files, range_bytes)
        self._batch_lines = batch_lines

    def expand(self, pbegin):
        return (
            pbegin
            | "PlanRanges" >> beam.Create(self._ranges)
            # Spreads the ranges over workers; Create alone may hand them all to one.
            | "SpreadRanges" >> beam.Reshuffle()
            | "ReadRanges" >> beam.ParDo(_ReadRangeDoFn(self._batch_lines))
        )
