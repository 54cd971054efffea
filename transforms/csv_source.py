"""Reading CSV files: header discovery at construction time, line reading, and
the CSV input adapter that splits lines into the validator's `Fields`.

Lines are read as bytes, not str, so that a line with invalid UTF-8 becomes a
dead letter instead of killing the job inside Beam's text decoder.
"""

from __future__ import annotations

import bz2
import contextlib
import csv
import dataclasses
import itertools
import operator
import zlib
from collections.abc import Iterable, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from schemas.spec import RECORD_KEY, DatasetSpec
from transforms.records import Fields, dead_letter, decode_utf8

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
    """The file's first line; empty when even that cannot be read (the reader then
    reports the file's unreadable bytes as a dead letter)."""
    try:
        with contextlib.ExitStack() as stack:
            raw = open_for_lines(path, stack).readline()
    except _READ_ERRORS:
        return ""
    return raw.decode("utf-8", errors="replace").rstrip("\r\n").removeprefix(UTF8_BOM)


def layout_from_first_line(path: str, size: int, first_line: str, spec: DatasetSpec) -> CsvLayout:
    """Decides whether the file has a header and maps spec columns to positions
    (a column is found by its `source_name`: its header text)."""
    names = [column.source_name for column in spec.columns]
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


def plan_ranges(
    files: Sequence[tuple[str, int]], range_bytes: int, whole_files: bool = False
) -> list[ByteRange]:
    """Splits each uncompressed file into ranges of about `range_bytes`; a
    compressed file (detected from its extension) is one range, and so is every
    file with `whole_files` (records that may span lines cannot be cut blindly)."""
    if range_bytes < 1:
        raise ValueError(f"range_bytes must be positive, got {range_bytes}")
    ranges = []
    for path, size in files:
        compressed = CompressionTypes.detect_compression_type(path) != CompressionTypes.UNCOMPRESSED
        if compressed or whole_files:
            ranges.append(ByteRange(path, 0, None))
            continue
        starts = range(0, max(size, 1), range_bytes)
        ranges.extend(ByteRange(path, s, min(s + range_bytes, size)) for s in starts)
        # Bytes appended after planning are still read by the last range.
        ranges[-1] = ByteRange(path, ranges[-1].start, None)
    return ranges


def read_line_range(
    handle, start: int, end: int | None, batch_lines: int, chunk_bytes: int = _READ_CHUNK_BYTES
) -> Iterable[tuple[list[bytes], list[int]]]:
    """Yields, in batches of up to `batch_lines`, the lines (without their b"\n")
    whose first byte lies in [start, end) of the seekable binary `handle`, with
    the byte offset in the (decompressed) file of each line's first byte: what a
    derived record key is made of, since it names the line whichever range,
    worker or runner reads it.

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
    offsets: list[int] = []
    buffered = pending
    while True:
        lines = buffered.split(b"\n")
        pending = lines.pop()
        for line in lines:
            if end is not None and position >= end:
                break
            batch.append(line)
            offsets.append(position)
            position += len(line) + 1
            if len(batch) >= batch_lines:
                yield batch, offsets
                batch, offsets = [], []
        if end is not None and position >= end:
            break
        try:
            chunk = handle.read(chunk_bytes)
        except _READ_ERRORS as error:
            if batch:
                yield batch, offsets
            raise TruncatedInputError(
                pending, f"{type(error).__name__}: {error}", position
            ) from None
        if not chunk:
            if pending:  # a last line without its newline
                batch.append(pending)
                offsets.append(position)
            break
        buffered = pending + chunk
    if batch:
        yield batch, offsets


@dataclasses.dataclass(frozen=True)
class UnreadableTail:
    """Stands in a line batch for the end of a file that could not be read: a
    gzip stream cut short, say. `partial_line` holds the bytes of the last,
    unfinished line (possibly empty); the parser makes it a dead letter."""

    partial_line: bytes
    reason: str


class TruncatedInputError(Exception):
    """Reading stopped early; carries the unfinished last line."""

    def __init__(self, partial_line: bytes, reason: str, offset: int = 0):
        super().__init__(reason)
        self.partial_line = partial_line
        self.reason = reason
        self.offset = offset


# What Python's decompressors raise on a cut or corrupt stream.
_READ_ERRORS = (EOFError, OSError, zlib.error)


def open_for_lines(path: str, stack: contextlib.ExitStack):
    """A binary handle on the decompressed bytes of `path`.

    Beam's own decompressing reader returns a gzip or bzip2 stream that is cut
    short as if it had ended normally, which would drop rows silently, so those
    two go through StrictDecompressedStream. Other compressions use Beam's reader.
    """
    compression = CompressionTypes.detect_compression_type(path)
    if compression not in _STRICT_DECOMPRESSORS and compression != CompressionTypes.UNCOMPRESSED:
        return stack.enter_context(FileSystems.open(path, compression_type=compression))
    raw = stack.enter_context(
        FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    )
    if compression == CompressionTypes.UNCOMPRESSED:
        return raw
    return stack.enter_context(_STRICT_DECOMPRESSORS[compression](raw))


class StrictDecompressedStream:
    """The decompressed bytes of a gzip or bzip2 file, members concatenated.

    Unlike Beam's reader it raises EOFError when the input ends inside a
    member, and, unlike Python's gzip and bz2 files, only after handing out
    every byte that could be recovered before the cut, so that each row before
    it is counted and parsed rather than lost with the failing read.
    """

    _COMPRESSED_CHUNK = 1 << 20

    def __init__(self, raw, make_decompressor):
        self._raw = raw
        self._make_decompressor = make_decompressor
        self._decompressor = make_decompressor()
        self._buffer = bytearray()
        self._in_member = False
        self._input_done = False

    def _fill(self, size: int) -> None:
        while len(self._buffer) < size and not self._input_done:
            compressed = self._raw.read(self._COMPRESSED_CHUNK)
            if not compressed:
                self._input_done = True
                return
            while compressed:
                self._in_member = True
                self._buffer += self._decompressor.decompress(compressed)
                if not self._decompressor.eof:
                    break
                compressed = self._decompressor.unused_data
                self._decompressor = self._make_decompressor()
                self._in_member = False

    def read(self, size: int = -1) -> bytes:
        self._fill(size if size >= 0 else float("inf"))
        if not self._buffer and self._input_done and self._in_member:
            raise EOFError("compressed file ended before the end-of-stream marker was reached")
        size = len(self._buffer) if size < 0 else size
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def readline(self) -> bytes:
        while b"\n" not in self._buffer and not self._input_done:
            self._fill(len(self._buffer) + (64 << 10))
        end = self._buffer.find(b"\n")
        return self.read(end + 1 if end >= 0 else len(self._buffer))

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False


_STRICT_DECOMPRESSORS = {
    # wbits 31: a gzip header and trailer around the deflate stream.
    CompressionTypes.GZIP: lambda raw: StrictDecompressedStream(
        raw, lambda: zlib.decompressobj(wbits=31)
    ),
    CompressionTypes.BZIP2: lambda raw: StrictDecompressedStream(raw, bz2.BZ2Decompressor),
}


def join_quoted_newlines(
    batches: Iterable[tuple[list[bytes], list[int]]],
) -> Iterable[tuple[list[bytes], list[int]]]:
    """Joins physical lines into records while a double quote is open (RFC 4180:
    a quoted field may hold newlines; an escaped quote is two quotes, which keeps
    the count's parity). A quote still open at the end leaves one last record
    that the parser rejects as unbalanced. Batches are (lines, offsets); a
    record's offset is its first line's."""
    parts: list[bytes] = []
    start = 0
    quote_open = False
    for batch, offsets in batches:
        records, starts = [], []
        for line, offset in zip(batch, offsets, strict=True):
            if not parts:
                start = offset
            parts.append(line)
            quote_open ^= line.count(b'"') % 2 == 1
            if not quote_open:
                records.append(b"\n".join(parts))
                starts.append(start)
                parts = []
        if records:
            yield records, starts
    if parts:
        yield [b"\n".join(parts)], [start]


class _ReadRangeDoFn(beam.DoFn):
    """ByteRange -> lists of (path, line bytes, byte offset), headers included;
    a file that ends early adds an UnreadableTail in place of a line."""

    def __init__(self, batch_lines: int, quoted_newlines: bool):
        self._batch_lines = batch_lines
        self._quoted_newlines = quoted_newlines

    def process(self, byte_range: ByteRange) -> Iterable[list]:
        path = byte_range.path
        with contextlib.ExitStack() as stack:
            handle = open_for_lines(path, stack)
            batches = read_line_range(handle, byte_range.start, byte_range.end, self._batch_lines)
            if self._quoted_newlines:
                batches = join_quoted_newlines(batches)
            try:
                for lines, offsets in batches:
                    yield [
                        (path, line, offset) for line, offset in zip(lines, offsets, strict=True)
                    ]
            except TruncatedInputError as error:
                tail = UnreadableTail(error.partial_line, error.reason)
                yield [(path, tail, error.offset)]


class ReadCsvLineBatches(beam.PTransform):
    """Reads every line of the given files as lists of `(path, line_bytes, offset)`,
    `offset` the byte offset of the line's first byte in the decompressed file.

    Output: bounded PCollection[list[tuple[str, bytes, int]]], global window; each
    list holds up to `batch_lines` lines of one file, headers included (the
    parser recognises them from each file's layout). Files are read in large
    byte ranges rather than line by line, so the runner handles one element per
    batch instead of one per line. Gzip and other compression is detected from
    the file extension; such a file is read by one worker, and one that ends
    early (a cut gzip stream) yields an UnreadableTail for the parser to turn into
    a dead letter. With `quoted_newlines`, a record runs on while a double quote
    is open, and each file is read whole by one worker. A trailing b"\\r" is
    left on the line for the parser to strip.
    """

    def __init__(
        self,
        files: Sequence[tuple[str, int]],
        range_bytes: int = DEFAULT_RANGE_BYTES,
        batch_lines: int = DEFAULT_BATCH_LINES,
        quoted_newlines: bool = False,
    ):
        super().__init__()
        if not files:
            raise InputError("no input files")
        if batch_lines < 1:
            raise ValueError(f"batch_lines must be positive, got {batch_lines}")
        self._ranges = plan_ranges(files, range_bytes, whole_files=quoted_newlines)
        self._batch_lines = batch_lines
        self._quoted_newlines = quoted_newlines

    def expand(self, pbegin):
        return (
            pbegin
            | "PlanRanges" >> beam.Create(list(enumerate(self._ranges)))
            # Spreads the ranges over workers (Create alone may hand them all to
            # one) by their position in the plan rather than Reshuffle's random
            # keys, so that a rerun hands each worker the same ranges: the
            # analysis then merges the same partial results, and tf.Transform's
            # approximate quantiles come out identical.
            | "SpreadRanges" >> beam.GroupByKey()
            | "UngroupRanges" >> beam.FlatMap(lambda planned: planned[1])
            | "ReadRanges" >> beam.ParDo(_ReadRangeDoFn(self._batch_lines, self._quoted_newlines))
        )


def record_key(path: str, offset: int) -> str:
    """The derived record key of a file's line: 'path:byte offset'. Unique, as
    no two lines of a file start at one byte, and stable: the same file gives
    the same key whatever range, worker or runner reads the line."""
    return f"{path}:{offset}"


def record_keys(path: str, offsets: Sequence[int]) -> pa.Array:
    """record_key of each of a file's lines, in one Arrow call."""
    offsets = pa.array(offsets, pa.int64())
    prefix = record_key(path, 0).removesuffix("0")
    return pc.binary_join_element_wise(pa.scalar(prefix), pc.cast(offsets, pa.string()), "")


class CsvLines:
    """Input adapter (transforms.records) for batches of `(path, line_bytes,
    offset)` (or `(path, line_bytes)` when the spec declares a key column),
    headers and UnreadableTail stand-ins included, from the files in `layouts`.

    A line becomes the fields of the spec's columns, mapped by the file's
    header; lines that cannot (invalid UTF-8, a file not listed at start, a
    blank line, another field count, unbalanced quotes) become dead letters,
    and header lines are counted. Without a key column, each row's derived
    record key is its file and byte offset (`record_keys`).
    """

    kind = "csv_lines"

    def __init__(self, spec: DatasetSpec, layouts: dict[str, CsvLayout]):
        self.layouts = layouts
        self.delimiter = spec.csv.delimiter
        self.width = len(spec.columns)
        self.derive_keys = spec.derives_record_key

    def fields(self, records: Sequence[tuple[str, bytes]]) -> list[Fields]:
        return self.clean_block_fields(records) or [self.line_fields(records)]

    def _split(self, line: str) -> list[str]:
        """The line's fields; [] when its quotes do not balance (an odd count:
        often one half of a quoted field that holds a line break)."""
        if '"' not in line:
            return line.split(self.delimiter)
        if line.count('"') % 2:
            return []
        try:
            return next(csv.reader([line], delimiter=self.delimiter, strict=True))
        except (csv.Error, StopIteration):
            return []

    def clean_block_fields(self, records: Sequence[tuple[str, bytes]]) -> list[Fields] | None:
        """The batch's plain lines split into columns by Arrow's CSV reader in one
        call, then the others line by line; None when the reader cannot take the
        batch.

        Plain lines skip the Python work per line, which dominated parsing. A line
        is plain when it comes from the batch's file, is not blank and holds no
        quote, no carriage return inside and no byte order mark: splitting it at
        the delimiter is then all either path does. Lines with another field
        count are handed back by the reader and go line by line too, so every
        problem is named the same way. Invalid UTF-8 anywhere makes
        the reader fail, and the whole batch goes line by line (None).
        Rows come out plain lines first: row order within a batch is not kept.
        """
        if not records:
            return None
        source = records[0][0]
        layout = self.layouts.get(source)
        # With one field per line, an empty line would read as one empty field.
        if layout is None or layout.field_count < 2:
            return None
        header = layout.header.encode("utf-8") if layout.header is not None else None
        if self.derive_keys:
            _check_offsets(records)
        sorted_lines = self._sort_lines_columnwise(records, source, header)
        if sorted_lines is None:
            sorted_lines = self._sort_lines(records, source, header)
        plain, plain_offsets, others, header_lines = sorted_lines
        if not plain:
            return None
        misfits = 0

        def set_aside(row) -> str:
            nonlocal misfits
            misfits += 1
            return "skip"

        block = b"\n".join(plain)
        names = [str(i) for i in range(layout.field_count)]
        try:
            table = pa_csv.read_csv(
                pa.py_buffer(block),
                read_options=pa_csv.ReadOptions(
                    column_names=names,
                    block_size=max(len(block) + 1, 1 << 20),
                    use_threads=False,
                ),
                parse_options=pa_csv.ParseOptions(
                    delimiter=self.delimiter,
                    quote_char=False,
                    ignore_empty_lines=False,
                    invalid_row_handler=set_aside,
                ),
                convert_options=pa_csv.ConvertOptions(
                    column_types=dict.fromkeys(names, pa.string()), strings_can_be_null=False
                ),
            )
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return None
        if misfits:
            # Without quotes a line's field count is its delimiter count plus one.
            delimiter = self.delimiter.encode("utf-8")
            fits = [line.count(delimiter) + 1 == layout.field_count for line in plain]
            if self.derive_keys:
                others.extend(
                    (source, line, offset)
                    for line, offset, ok in zip(plain, plain_offsets, fits, strict=True)
                    if not ok
                )
                plain_offsets = [o for o, ok in zip(plain_offsets, fits, strict=True) if ok]
            else:
                others.extend(
                    (source, line) for line, ok in zip(plain, fits, strict=True) if not ok
                )
            plain = [line for line, ok in zip(plain, fits, strict=True) if ok]
        if table.num_rows != len(plain):
            return None
        columns = [table.column(position).combine_chunks() for position in layout.positions]
        extra = {RECORD_KEY: record_keys(source, plain_offsets)} if self.derive_keys else {}
        parts = [
            Fields(
                _Repeated(source, len(plain)),
                _DecodedLines(plain),
                columns,
                header_lines=header_lines,
                extra=extra,
            )
        ]
        if others:
            parts.append(self.line_fields(others))
        return parts

    def _sort_lines(self, records: Sequence[tuple], source: str, header: bytes | None):
        """(plain lines, their offsets, the other records, header lines), line by line."""
        bom = UTF8_BOM.encode("utf-8")
        plain: list[bytes] = []
        plain_offsets: list[int] = []
        others: list[tuple] = []
        header_lines = 0
        for record in records:
            record_source, raw = record[0], record[1]
            if record_source != source or not isinstance(raw, bytes):
                others.append(record)
                continue
            if raw.endswith(b"\r"):
                raw = raw.rstrip(b"\r")
            if raw == header:
                header_lines += 1
            elif b'"' in raw or b"\r" in raw or bom in raw or not raw or raw.isspace():
                others.append(record)
            else:
                plain.append(raw)
                if self.derive_keys:
                    plain_offsets.append(record[2])
        return plain, plain_offsets, others, header_lines

    def _sort_lines_columnwise(self, records: Sequence[tuple], source: str, header: bytes | None):
        """What _sort_lines returns, from NumPy passes over the batch's bytes instead
        of a Python step per line (0.19 µs a line against 0.67, by
        benchmarks.step_costs); None when a record is not a line of `source`
        (another file, an UnreadableTail)."""
        if set(map(operator.itemgetter(0), records)) != {source}:
            return None
        raws = [record[1] for record in records]
        try:
            lines = pa.array(raws, pa.binary())
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return None
        starts, ends, data = _line_bytes(lines)
        trailing_cr = (ends > starts) & (data[np.maximum(ends - 1, 0)] == _CR)
        if trailing_cr.any():
            # Windows line ends: strip them as the line-by-line path does.
            for i in np.flatnonzero(trailing_cr):
                raws[i] = raws[i].rstrip(b"\r")
            lines = pa.array(raws, pa.binary())
            starts, ends, data = _line_bytes(lines)
        # The line-by-line path's tests: a quote, a carriage return inside, a byte
        # order mark, an empty or all-whitespace (bytes.isspace) line. Most batches
        # hold no quote, CR or BOM at all, which one memchr over the bytes tells.
        special = np.zeros(len(raws), dtype=bool)
        text = data.tobytes()
        for byte in (_QUOTE, _CR):
            if bytes([byte]) in text:
                special |= _lines_holding(starts, np.flatnonzero(data == byte))
        if _BOM.tobytes() in text:
            first = np.flatnonzero(data[:-2] == _BOM[0])
            bom = first[(data[first + 1] == _BOM[1]) & (data[first + 2] == _BOM[2])]
            # Only where all three bytes lie in one line: lines are not separated here.
            line_of = np.searchsorted(starts, bom, side="right") - 1
            special |= _lines_holding(starts, bom[bom + 3 <= ends[line_of]])
        # A blank line is empty or starts with whitespace: only those get a closer look.
        maybe_blank = (ends == starts) | np.isin(data[starts], _SPACES)
        for i in np.flatnonzero(maybe_blank):
            special[i] = special[i] or not raws[i] or raws[i].isspace()
        is_header = np.zeros(len(raws), dtype=bool)
        if header is not None:
            is_header = pc.equal(lines, pa.scalar(header, pa.binary())).to_numpy(
                zero_copy_only=False
            )
        is_plain = ~special & ~is_header
        plain = list(itertools.compress(raws, is_plain))
        plain_offsets = []
        if self.derive_keys:
            offsets = np.fromiter(map(operator.itemgetter(2), records), np.int64, len(records))
            plain_offsets = offsets[is_plain].tolist()
        others = [records[i] for i in np.flatnonzero(special & ~is_header)]
        return plain, plain_offsets, others, int(np.count_nonzero(is_header))

    def line_fields(self, records: Sequence[tuple]) -> Fields:
        """The batch line by line in Python: the path for every line, plain or not."""
        if self.derive_keys:
            _check_offsets(records)
        dead_letters: list[dict] = []
        header_lines = 0
        # Lines that survive the line-level checks: (source, text, fields in spec order).
        sources: list[str] = []
        lines: list[str] = []
        rows: list[list[str]] = []
        keys: list[str] = []
        for record in records:
            source, raw = record[0], record[1]
            layout = self.layouts.get(source)
            if isinstance(raw, UnreadableTail):
                text = raw.partial_line.decode("utf-8", errors="backslashreplace")
                dead_letters.append(
                    dead_letter(
                        source, text, f"file ends early, rows after this are lost: {raw.reason}"
                    )
                )
                continue
            line, rejected = decode_utf8(source, raw)
            if rejected is not None:
                dead_letters.append(rejected)
                continue
            line = line.rstrip("\r").removeprefix(UTF8_BOM)
            if layout is None:
                dead_letters.append(dead_letter(source, line, "file was not listed at start"))
                continue
            if layout.header is not None and line == layout.header:
                header_lines += 1
                continue
            if not line or line.isspace():
                dead_letters.append(dead_letter(source, line, "empty line"))
                continue
            fields = self._split(line)
            if len(fields) != layout.field_count:
                reason = (
                    "unbalanced quotes (if quoted fields hold line breaks, set "
                    "csv.allow_quoted_newlines in the spec)"
                    if not fields
                    else f"expected {layout.field_count} fields, got {len(fields)}"
                )
                dead_letters.append(dead_letter(source, line, reason))
                continue
            sources.append(source)
            lines.append(line)
            rows.append(fields if layout.in_spec_order else [fields[p] for p in layout.positions])
            if self.derive_keys:
                keys.append(record_key(source, record[2]))
        extra = {RECORD_KEY: pa.array(keys, pa.string())} if self.derive_keys else {}
        return Fields.from_rows(sources, lines, rows, self.width, dead_letters, header_lines, extra)


_QUOTE, _CR = ord('"'), ord("\r")
_BOM = np.frombuffer(UTF8_BOM.encode("utf-8"), np.uint8)
# What bytes.isspace() counts as whitespace.
_SPACES = np.frombuffer(b" \t\n\r\x0b\x0c", np.uint8)


def _line_bytes(lines: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start, end) of each line in `data`: the binary array's bytes and, so that
    every start indexes a byte even when lines are empty, one newline after them."""
    offsets = np.frombuffer(lines.buffers()[1], np.int32)[
        lines.offset : lines.offset + len(lines) + 1
    ].astype(np.int64)
    data = np.full(int(offsets[-1] - offsets[0]) + 1, ord("\n"), np.uint8)
    if len(data) > 1:
        data[:-1] = np.frombuffer(lines.buffers()[2], np.uint8)[offsets[0] : offsets[-1]]
    offsets -= offsets[0]
    return offsets[:-1], offsets[1:], data


def _lines_holding(starts: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Per line: whether one of the byte positions lies in it. `starts` are the
    lines' first byte positions, in order."""
    holding = np.zeros(len(starts), dtype=bool)
    if len(positions):
        holding[np.searchsorted(starts, positions, side="right") - 1] = True
    return holding


def _check_offsets(records: Sequence[tuple]) -> None:
    if any(len(record) < 3 for record in records):
        raise ValueError(
            "CSV lines need their byte offsets (path, line, offset) to derive record keys "
            "for a spec without key_column"
        )


class _Repeated(Sequence):
    """One value `count` times, as a sequence."""

    def __init__(self, value, count: int):
        self._value, self._count = value, count

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: int):
        if not -self._count <= index < self._count:
            raise IndexError(index)
        return self._value


class _DecodedLines(Sequence):
    """Lines as text, decoded only when asked for (dead letters need a few)."""

    def __init__(self, lines: Sequence[bytes]):
        self._lines = lines

    def __len__(self) -> int:
        return len(self._lines)

    def __getitem__(self, index: int) -> str:
        return self._lines[index].decode("utf-8")
