"""Parsing and validating CSV lines into typed Arrow batches, with dead letters.

The work is columnar: a batch of lines is split into fields, then each column
is converted and checked with vectorised NumPy/Arrow operations, falling back
to per-value Python only for the values that the fast path rejects (to name
the exact problem). The pure function `parse_lines` holds all the logic and is
tested without a pipeline; `ParseAndValidate` wires it into Beam.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import json
import re
import zoneinfo
from collections.abc import Iterable, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from apache_beam.metrics import Metrics

from schemas.spec import Aggregate, AggregateFunction, Column, ColumnType, DatasetSpec
from transforms.csv_source import UTF8_BOM, CsvLayout, UnreadableTail
from transforms.progress import PhaseProgress

DEAD_LETTER_TAG = "dead_letter"
METRICS_NAMESPACE = "preprocess"

_ARROW_TYPES = {
    ColumnType.FLOAT: pa.float64(),
    ColumnType.INT: pa.int64(),
    ColumnType.STRING: pa.string(),
    ColumnType.TIMESTAMP: pa.int64(),  # seconds since the epoch, UTC
}
_ISO_SECONDS = r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}$"


def arrow_schema(spec: DatasetSpec) -> pa.Schema:
    """Schema of validated rows: one nullable column per spec column, in spec order."""
    return pa.schema([pa.field(c.name, _ARROW_TYPES[c.type]) for c in spec.columns])


def aggregate_arrow_type(aggregate: Aggregate) -> pa.DataType:
    return pa.int64() if aggregate.agg is AggregateFunction.COUNT else pa.float64()


def rows_schema(spec: DatasetSpec) -> pa.Schema:
    """Schema of validated rows with the spec's aggregate columns appended."""
    aggregates = [pa.field(a.name, aggregate_arrow_type(a)) for a in spec.aggregates]
    return pa.schema(list(arrow_schema(spec)) + aggregates)


@dataclasses.dataclass
class ParsedLines:
    """Result of parsing one batch of lines."""

    valid: pa.RecordBatch
    dead_letters: list[dict]
    header_lines: int


# A dead letter keeps at most this much of its input line, so that one huge
# malformed line cannot make a huge dead-letter file; the reason gives the length.
MAX_DEAD_LETTER_LINE_CHARS = 10_000


def dead_letter(source: str, line: str, reason: str, column: str | None = None) -> dict:
    """The one shape of a dead-letter record, shared by every stage that rejects rows."""
    if len(line) > MAX_DEAD_LETTER_LINE_CHARS:
        reason = f"{reason} (line of {len(line):,} characters, cut to the first 10,000 here)"
        line = line[:MAX_DEAD_LETTER_LINE_CHARS]
    return {"source": source, "line": line, "reason": reason, "column": column}


def _parse_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _parse_int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        pass
    number = _parse_float(text)
    # Exports written through floating point often print integers as '2.0'.
    if number is not None and np.isfinite(number) and number.is_integer():
        return int(number)
    return None


def parse_timestamp_text(text: str, timezone: dt.tzinfo) -> int | None:
    """Seconds since the epoch, or None. Accepts ISO 8601 (with or without offset,
    'Z' or a trailing ' UTC') and integer epoch seconds. A value without an offset
    is read in the column's timezone."""
    if re.fullmatch(r"-?\d{1,12}", text):
        return int(text)
    if text.endswith(" UTC"):
        text = text[:-4] + "+00:00"
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone)
    return int(moment.timestamp())


class _ColumnParser:
    """Converts one column's field strings to typed values and names bad values."""

    def __init__(self, column: Column):
        self.column = column
        self.timezone = zoneinfo.ZoneInfo(column.timezone) if column.timezone != "UTC" else dt.UTC
        self.allowed = None if column.allowed is None else set(column.allowed)
        self.allowed_strings = (
            None
            if column.allowed is None
            else pa.array([str(v) for v in column.allowed], type=pa.string())
        )

    def parse(self, strings: pa.Array) -> tuple[pa.Array, list[str | None]]:
        """Typed column (null where missing or bad) and a per-row problem, from
        whitespace-trimmed field strings."""
        column = self.column
        problems: list[str | None] = [None] * len(strings)
        missing = pc.equal(strings, "").to_numpy(zero_copy_only=False)
        if column.type is ColumnType.STRING:
            values = pc.if_else(missing, pa.scalar(None, pa.string()), strings)
            if self.allowed_strings is not None:
                allowed = pc.is_in(strings, value_set=self.allowed_strings)
                for i in np.flatnonzero(~allowed.to_numpy(zero_copy_only=False) & ~missing):
                    problems[i] = (
                        f"{strings[i].as_py()!r} is not an allowed value "
                        f"({', '.join(map(str, column.allowed))})"
                    )
        elif column.type is ColumnType.TIMESTAMP:
            values = self._parse_timestamps(strings, missing, problems)
        else:
            values = self._parse_numbers(strings, missing, problems)
        values, problems = self._apply_missing(values, missing, problems)
        return values, problems

    def _parse_numbers(self, strings, missing, problems) -> pa.Array:
        column = self.column
        is_float = column.type is ColumnType.FLOAT
        dtype = np.float64 if is_float else np.int64
        present = ~missing
        numbers = np.zeros(len(strings), dtype=dtype)
        bad = np.zeros(len(strings), dtype=bool)
        try:
            cast = pc.cast(strings.filter(present), pa.float64() if is_float else pa.int64())
            numbers[present] = cast.to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            # Slow path, only for batches with at least one unusual value.
            parse = _parse_float if is_float else _parse_int
            for i in np.flatnonzero(present):
                text = strings[i].as_py()
                number = parse(text)
                if number is None or (not is_float and not -(2**63) <= number < 2**63):
                    bad[i] = True
                    kind = "a number" if is_float else "an integer"
                    problems[i] = f"{text!r} is not {kind}"
                else:
                    numbers[i] = number
        if is_float:
            not_finite = present & ~bad & ~np.isfinite(numbers)
            for i in np.flatnonzero(not_finite):
                problems[i] = f"{strings[i].as_py()!r} is not a finite number"
            bad |= not_finite
        checks = present & ~bad
        if column.min is not None:
            for i in np.flatnonzero(checks & (numbers < column.min)):
                problems[i] = f"{strings[i].as_py()} is below min {column.min:g}"
        if column.max is not None:
            for i in np.flatnonzero(checks & (numbers > column.max)):
                problems[i] = f"{strings[i].as_py()} is above max {column.max:g}"
        if self.allowed is not None:
            allowed = np.array([v for v in self.allowed if isinstance(v, int)], dtype=np.int64)
            for i in np.flatnonzero(checks & ~np.isin(numbers, allowed)):
                problems[i] = f"{strings[i].as_py()} is not an allowed value"
        return pa.array(numbers, mask=missing | bad)

    def _parse_timestamps(self, strings, missing, problems) -> pa.Array:
        seconds = np.zeros(len(strings), dtype=np.int64)
        bad = np.zeros(len(strings), dtype=bool)
        fast = np.zeros(len(strings), dtype=bool)
        if self.timezone is dt.UTC:
            # Fast path for the common 'YYYY-MM-DD HH:MM:SS[ UTC|Z]' form.
            stripped = pc.replace_substring_regex(strings, r"( UTC|Z)$", "")
            fast = pc.match_substring_regex(stripped, _ISO_SECONDS).to_numpy(zero_copy_only=False)
            if fast.any():
                normalised = pc.if_else(
                    fast, pc.replace_substring(stripped, "T", " "), "1970-01-01 00:00:00"
                )
                parsed = pc.strptime(
                    normalised, format="%Y-%m-%d %H:%M:%S", unit="s", error_is_null=True
                )
                # strptime rolls impossible dates over (Feb 31 -> Mar 3): the parsed
                # time must show the very fields that were written. (Comparing the
                # fields costs a quarter of printing the time back with strftime.)
                invalid = ~_fields_match(parsed, normalised)
                values = parsed.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
                seconds[fast] = values[fast]
                for i in np.flatnonzero(fast & invalid):
                    bad[i] = True
                    problems[i] = f"{strings[i].as_py()!r} is not a valid timestamp"
        for i in np.flatnonzero(~fast & ~missing):
            text = strings[i].as_py()
            parsed_value = parse_timestamp_text(text, self.timezone)
            if parsed_value is None:
                bad[i] = True
                problems[i] = f"{text!r} is not a timestamp"
            else:
                seconds[i] = parsed_value
        return pa.array(seconds, mask=missing | bad)

    def _apply_missing(self, values, missing, problems):
        column = self.column
        if column.required:
            for i in np.flatnonzero(missing):
                problems[i] = "required value is missing"
        elif column.default is not None and missing.any():
            values = values.fill_null(pa.scalar(column.default, values.type))
        return values, problems


# Where each field of "YYYY-MM-DD HH:MM:SS" sits, and how to read it back from a
# parsed timestamp.
_TIMESTAMP_FIELDS = (
    (0, 4, pc.year),
    (5, 7, pc.month),
    (8, 10, pc.day),
    (11, 13, pc.hour),
    (14, 16, pc.minute),
    (17, 19, pc.second),
)


def _fields_match(parsed: pa.Array, texts: pa.Array) -> np.ndarray:
    """Per value: whether the timestamp parsed from a "YYYY-MM-DD HH:MM:SS" text
    has exactly the text's year, month, day, hour, minute and second (False
    where parsing failed)."""
    matches = None
    for start, end, field in _TIMESTAMP_FIELDS:
        written = pc.cast(pc.utf8_slice_codeunits(texts, start, end), pa.int64())
        same = pc.equal(field(parsed), written)
        matches = same if matches is None else pc.and_(matches, same)
    return matches.fill_null(False).to_numpy(zero_copy_only=False)


class RowValidator:
    """Rows of field strings in spec order -> typed Arrow batch plus dead letters.

    Shared by every input format (CSV lines, JSON messages), so that one spec
    means one set of rules: types, ranges, allowed values, required columns and
    defaults.
    """

    def __init__(self, spec: DatasetSpec):
        self.schema = arrow_schema(spec)
        self.column_parsers = [_ColumnParser(column) for column in spec.columns]

    def validate(
        self, sources: Sequence[str], texts: Sequence[str], rows: Sequence[Sequence[str]]
    ) -> tuple[pa.RecordBatch, list[dict]]:
        """`rows[i]` holds the fields of input record `texts[i]` from `sources[i]`."""
        fields_by_column = list(zip(*rows, strict=True)) if rows else [()] * len(self.schema)
        columns = [pa.array(texts_, type=pa.string()) for texts_ in fields_by_column]
        return self.validate_columns(sources, texts, columns, len(rows))

    def validate_columns(
        self, sources: Sequence[str], texts: Sequence[str], columns: Sequence[pa.Array], count: int
    ) -> tuple[pa.RecordBatch, list[dict]]:
        """`columns[c][i]` holds the field of spec column c of input record
        `texts[i]` from `sources[i]`, as a string array per column."""
        first_problem: list[tuple[str, str] | None] = [None] * count
        arrays = []
        for parser, column_texts in zip(self.column_parsers, columns, strict=True):
            strings = pc.utf8_trim_whitespace(column_texts)
            values, problems = parser.parse(strings)
            arrays.append(values)
            for i, problem in enumerate(problems):
                if problem is not None and first_problem[i] is None:
                    first_problem[i] = (parser.column.name, problem)
        keep = np.fromiter((p is None for p in first_problem), dtype=bool, count=count)
        dead_letters = []
        for i in np.flatnonzero(~keep):
            column_name, problem = first_problem[i]
            dead_letters.append(
                dead_letter(sources[i], texts[i], f"{column_name}: {problem}", column_name)
            )
        if not count:
            return pa.RecordBatch.from_pylist([], schema=self.schema), dead_letters
        valid = pa.RecordBatch.from_arrays(arrays, schema=self.schema)
        if not keep.all():
            valid = valid.filter(pa.array(keep))
        return valid, dead_letters


class LineParser:
    """Parses batches of `(source, line_bytes)` for one spec and set of file layouts."""

    def __init__(self, spec: DatasetSpec, layouts: dict[str, CsvLayout]):
        self.spec = spec
        self.layouts = layouts
        self.validator = RowValidator(spec)
        self.delimiter = spec.csv.delimiter

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

    def parse(self, records: Sequence[tuple[str, bytes]]) -> ParsedLines:
        return self._parse_clean_block(records) or self._parse_each_line(records)

    def _parse_clean_block(self, records: Sequence[tuple[str, bytes]]) -> ParsedLines | None:
        """The batch's plain lines split into columns by Arrow's CSV reader in one
        call, the others line by line; None when the reader cannot take the batch.

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
        bom = UTF8_BOM.encode("utf-8")
        plain: list[bytes] = []
        others: list[tuple[str, bytes]] = []
        header_lines = 0
        for record in records:
            record_source, raw = record
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
            others.extend((source, line) for line, ok in zip(plain, fits, strict=True) if not ok)
            plain = [line for line, ok in zip(plain, fits, strict=True) if ok]
        if table.num_rows != len(plain):
            return None
        columns = [table.column(position).combine_chunks() for position in layout.positions]
        valid, rejected = self.validator.validate_columns(
            _Repeated(source, len(plain)), _DecodedLines(plain), columns, len(plain)
        )
        if others:
            rest = self._parse_each_line(others)
            valid = pa.concat_batches([valid, rest.valid])
            rejected.extend(rest.dead_letters)
            header_lines += rest.header_lines
        return ParsedLines(valid=valid, dead_letters=rejected, header_lines=header_lines)

    def _parse_each_line(self, records: Sequence[tuple[str, bytes]]) -> ParsedLines:
        dead_letters: list[dict] = []
        header_lines = 0
        # Rows that survive the line-level checks: (source, text, fields in spec order).
        sources: list[str] = []
        lines: list[str] = []
        rows: list[list[str]] = []
        for source, raw in records:
            layout = self.layouts.get(source)
            if isinstance(raw, UnreadableTail):
                text = raw.partial_line.decode("utf-8", errors="backslashreplace")
                dead_letters.append(
                    dead_letter(
                        source, text, f"file ends early, rows after this are lost: {raw.reason}"
                    )
                )
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                text = raw.decode("utf-8", errors="backslashreplace")
                dead_letters.append(
                    dead_letter(source, text, f"invalid UTF-8 at byte {error.start}")
                )
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

        valid, rejected = self.validator.validate(sources, lines, rows)
        dead_letters.extend(rejected)
        return ParsedLines(valid=valid, dead_letters=dead_letters, header_lines=header_lines)


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


class _ParseBatchDoFn(beam.DoFn):
    """Batch of (source, line) -> valid RecordBatch (main) and dead letters (tagged).

    Also emits ('lines', n) and ('header_lines', n) count records on the 'counts'
    output, so the manifest can reconcile what was read with where it went, and
    logs progress lines for the phase "read and validate".
    """

    def __init__(self, spec: DatasetSpec, layouts: dict[str, CsvLayout]):
        self._spec = spec
        self._layouts = layouts
        self._lines = Metrics.counter(METRICS_NAMESPACE, "lines_read")
        self._valid = Metrics.counter(METRICS_NAMESPACE, "rows_valid")
        self._dead = Metrics.counter(METRICS_NAMESPACE, "rows_dead_letter")

    def setup(self):
        self._parser = LineParser(self._spec, self._layouts)
        self._progress = PhaseProgress.shared("read and validate")

    def process(self, batch: list[tuple[str, bytes]]) -> Iterable:
        parsed = self._parser.parse(batch)
        self._progress.add(len(batch))
        self._lines.inc(len(batch))
        self._valid.inc(parsed.valid.num_rows)
        self._dead.inc(len(parsed.dead_letters))
        yield beam.pvalue.TaggedOutput("counts", ("lines", len(batch)))
        yield beam.pvalue.TaggedOutput("counts", ("header_lines", parsed.header_lines))
        if parsed.valid.num_rows:
            yield parsed.valid
        for record in parsed.dead_letters:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, record)


class ParseLineBatches(beam.PTransform):
    """PCollection[list[(source, line_bytes)]] -> valid rows, dead letters and counts.

    Returns a DoOutputsTuple with:
      - main: pa.RecordBatch of validated rows (schema `arrow_schema(spec)`);
      - 'dead_letter': dicts {source, line, reason, column};
      - 'counts': (name, n) records for 'lines' and 'header_lines'.
    Counters: lines_read, rows_valid, rows_dead_letter. Works in any windowing.
    """

    def __init__(self, spec: DatasetSpec, layouts: dict[str, CsvLayout]):
        super().__init__()
        self._spec = spec
        self._layouts = layouts

    def expand(self, line_batches):
        return line_batches | "ParseBatch" >> beam.ParDo(
            _ParseBatchDoFn(self._spec, self._layouts)
        ).with_outputs(DEAD_LETTER_TAG, "counts", main="valid")


class ParseAndValidate(beam.PTransform):
    """PCollection[(source, line_bytes)], one line per element -> the outputs of
    ParseLineBatches, after batching up to `batch_size` lines."""

    def __init__(self, spec: DatasetSpec, layouts: dict[str, CsvLayout], batch_size: int = 4096):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self._spec = spec
        self._layouts = layouts
        self._batch_size = batch_size

    def expand(self, lines):
        return (
            lines
            | "BatchLines"
            # A fixed size, so that a rerun cuts the same batches (see
            # transforms.bigquery_source).
            >> beam.BatchElements(min_batch_size=self._batch_size, max_batch_size=self._batch_size)
            | "ParseLines" >> ParseLineBatches(self._spec, self._layouts)
        )


def dead_letter_to_json(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False, sort_keys=True)
