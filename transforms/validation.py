"""Validating every source's records into typed Arrow batches, with dead letters.

`ValidateInput` is the one validating step of both jobs: given an input
adapter (transforms.records: CSV lines, BigQuery rows or Pub/Sub messages), it
turns batches of raw records into valid rows, dead letters and counts, with
the same outputs, counters and dead-letter record for every source.

The work is columnar: each spec column's field texts are converted and checked
with vectorised NumPy/Arrow operations, falling back to per-value Python only
for the values that the fast path rejects (to name the exact problem).
`InputValidator` holds the logic for one batch and is tested without a
pipeline; `ValidateInput` wires it into Beam.
"""

from __future__ import annotations

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
from apache_beam.metrics import Metrics

from schemas.spec import RECORD_KEY, Aggregate, AggregateFunction, Column, ColumnType, DatasetSpec
from transforms.csv_source import CsvLayout, CsvLines
from transforms.progress import PhaseProgress
from transforms.records import DEAD_LETTER_TAG, Fields, InputAdapter, dead_letter

# One namespace for the counters of every source, batch or streaming.
METRICS_NAMESPACE = "input"
COUNTS_TAG = "counts"

_ARROW_TYPES = {
    ColumnType.FLOAT: pa.float64(),
    ColumnType.INT: pa.int64(),
    ColumnType.STRING: pa.string(),
    ColumnType.TIMESTAMP: pa.int64(),  # seconds since the epoch, UTC
}
_ISO_SECONDS = r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}$"


def arrow_schema(spec: DatasetSpec) -> pa.Schema:
    """Schema of validated rows: one nullable column per spec column, in spec
    order, then the derived record key (a string) when the spec declares no key."""
    fields = [pa.field(c.name, _ARROW_TYPES[c.type]) for c in spec.columns]
    if spec.derives_record_key:
        fields.append(pa.field(RECORD_KEY, pa.string()))
    return pa.schema(fields)


def aggregate_arrow_type(aggregate: Aggregate) -> pa.DataType:
    return pa.int64() if aggregate.agg is AggregateFunction.COUNT else pa.float64()


def rows_schema(spec: DatasetSpec) -> pa.Schema:
    """Schema of validated rows with the spec's aggregate columns appended."""
    aggregates = [pa.field(a.name, aggregate_arrow_type(a)) for a in spec.aggregates]
    return pa.schema(list(arrow_schema(spec)) + aggregates)


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

    def __init__(self, column: Column, missing_tokens: frozenset[str] = frozenset({""})):
        self.column = column
        # Only the empty field by default: one comparison; declared tokens: one
        # is_in over the column's strings, both vectorised.
        self.missing_tokens = (
            None if missing_tokens == {""} else pa.array(sorted(missing_tokens), pa.string())
        )
        self.timezone = zoneinfo.ZoneInfo(column.timezone) if column.timezone != "UTC" else dt.UTC
        self.allowed = None if column.allowed is None else set(column.allowed)
        self.allowed_strings = (
            None
            if column.allowed is None
            else pa.array([str(v) for v in column.allowed], type=pa.string())
        )

    def parse(self, strings: pa.Array) -> tuple[pa.Array, dict[int, str]]:
        """Typed column (null where missing or bad) and the problem of each bad
        row, by row index, from whitespace-trimmed field strings. (A dict, not a
        list per row: most batches have no problem at all.)"""
        column = self.column
        problems: dict[int, str] = {}
        if self.missing_tokens is None:
            missing = pc.equal(strings, "").to_numpy(zero_copy_only=False)
        else:
            missing = pc.is_in(strings, value_set=self.missing_tokens)
            missing = missing.to_numpy(zero_copy_only=False)
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
    """`Fields` -> typed Arrow batch plus dead letters: the spec's rules (types,
    ranges, allowed values, required columns and defaults), the same for every
    source."""

    def __init__(self, spec: DatasetSpec):
        self.schema = arrow_schema(spec)
        self.column_parsers = [
            _ColumnParser(column, spec.missing_tokens(column)) for column in spec.columns
        ]
        self.record_key = RECORD_KEY if spec.derives_record_key else None

    def validate(self, fields: Fields) -> tuple[pa.RecordBatch, list[dict]]:
        """The valid rows, and the dead letters: first those the source's own
        checks rejected, then the rows that break a rule, in record order."""
        count = len(fields.sources)
        first_problem: dict[int, tuple[str, str]] = {}
        arrays = []
        for parser, column_texts in zip(self.column_parsers, fields.columns, strict=True):
            strings = pc.utf8_trim_whitespace(column_texts)
            values, problems = parser.parse(strings)
            arrays.append(values)
            for i, problem in problems.items():
                first_problem.setdefault(i, (parser.column.name, problem))
        keep = np.ones(count, dtype=bool)
        keep[list(first_problem)] = False
        dead_letters = list(fields.rejected)
        for i in sorted(first_problem):
            column_name, problem = first_problem[i]
            dead_letters.append(
                dead_letter(
                    fields.sources[i], fields.texts[i], f"{column_name}: {problem}", column_name
                )
            )
        if self.record_key is not None and self.record_key not in fields.extra:
            raise ValueError(
                f"the input adapter gave no {self.record_key}, which a spec without a "
                f"key_column needs"
            )
        if not count:
            return pa.RecordBatch.from_pylist([], schema=self.schema), dead_letters
        schema = self.schema
        for name, values in fields.extra.items():
            if name != self.record_key:
                schema = schema.append(pa.field(name, values.type))
        arrays += [fields.extra[name] for name in schema.names[len(arrays) :]]
        valid = pa.RecordBatch.from_arrays(arrays, schema=schema)
        if not keep.all():
            valid = valid.filter(pa.array(keep))
        return valid, dead_letters


@dataclasses.dataclass
class ValidatedBatch:
    """What one batch of raw records became: every record is exactly one of a
    valid row, a dead letter or (CSV) a header line."""

    valid: pa.RecordBatch
    dead_letters: list[dict]
    header_lines: int


class InputValidator:
    """Validates batches of one source's raw records for one spec: the adapter
    makes them `Fields`, the RowValidator applies the rules."""

    def __init__(self, spec: DatasetSpec, adapter: InputAdapter):
        self.adapter = adapter
        self.validator = RowValidator(spec)

    def parse(self, batch: Sequence) -> ValidatedBatch:
        return self.validate_parts(self.adapter.fields(batch))

    def validate_parts(self, parts: Sequence[Fields]) -> ValidatedBatch:
        """The parts validated in order and joined: their valid rows, dead
        letters and header lines one after the other."""
        batches: list[pa.RecordBatch] = []
        dead_letters: list[dict] = []
        header_lines = 0
        for part in parts:
            valid, rejected = self.validator.validate(part)
            batches.append(valid)
            dead_letters.extend(rejected)
            header_lines += part.header_lines
        valid = batches[0] if len(batches) == 1 else pa.concat_batches(batches)
        return ValidatedBatch(valid, dead_letters, header_lines)


class LineParser(InputValidator):
    """The InputValidator of CSV lines: batches of `(path, line_bytes)` from the
    files in `layouts` (see transforms.csv_source.CsvLines)."""

    def __init__(self, spec: DatasetSpec, layouts: dict[str, CsvLayout]):
        super().__init__(spec, CsvLines(spec, layouts))


class _ValidateBatchDoFn(beam.DoFn):
    """Batch of raw records -> valid RecordBatch (main), dead letters and counts
    (tagged); logs progress lines for the phase "read and validate"."""

    def __init__(self, spec: DatasetSpec, adapter: InputAdapter):
        self._spec = spec
        self._adapter = adapter
        self._read = Metrics.counter(METRICS_NAMESPACE, f"{adapter.kind}_read")
        self._header_lines = Metrics.counter(METRICS_NAMESPACE, "header_lines")
        self._valid = Metrics.counter(METRICS_NAMESPACE, "rows_valid")
        self._dead = Metrics.counter(METRICS_NAMESPACE, "dead_letters")

    def setup(self):
        self._validator = InputValidator(self._spec, self._adapter)
        self._progress = PhaseProgress.shared("read and validate")

    def process(self, batch: list) -> Iterable:
        validated = self._validator.parse(batch)
        self._progress.add(len(batch))
        self._read.inc(len(batch))
        self._header_lines.inc(validated.header_lines)
        self._valid.inc(validated.valid.num_rows)
        self._dead.inc(len(validated.dead_letters))
        yield beam.pvalue.TaggedOutput(COUNTS_TAG, (self._adapter.kind, len(batch)))
        yield beam.pvalue.TaggedOutput(COUNTS_TAG, ("header_lines", validated.header_lines))
        if validated.valid.num_rows:
            yield validated.valid
        for record in validated.dead_letters:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, record)


class ValidateInput(beam.PTransform):
    """PCollection[list[raw record]] -> valid rows, dead letters and counts, for
    any source through its adapter (transforms.records.InputAdapter).

    Returns a DoOutputsTuple with:
      - 'valid' (main): pa.RecordBatch of validated rows (schema `arrow_schema(spec)`);
      - 'dead_letter': dicts {source, line, reason, column};
      - 'counts': (name, n) records: (adapter.kind, records read) and
        ('header_lines', n), so that a run can reconcile what it read with
        where it went.
    Bounded or unbounded, any windowing; outputs keep their input's windows.
    Counters (namespace 'input'): <adapter.kind>_read (csv_lines_read,
    bigquery_rows_read, pubsub_messages_read), header_lines, rows_valid,
    dead_letters.
    """

    def __init__(self, spec: DatasetSpec, adapter: InputAdapter):
        super().__init__()
        self._spec = spec
        self._adapter = adapter

    def expand(self, batches):
        return batches | "Validate" >> beam.ParDo(
            _ValidateBatchDoFn(self._spec, self._adapter)
        ).with_outputs(DEAD_LETTER_TAG, COUNTS_TAG, main="valid")


class FixedSizeBatches(beam.PTransform):
    """PCollection[record] -> PCollection[list[record]] of `batch_size` records
    (fewer at a bundle's end).

    A fixed size, not BatchElements' timing-based one: batches are the
    analyzers' units of partial results, so a rerun that cuts the same batches
    merges the same partial results. (For BigQuery that is not enough to
    reproduce a run exactly: it may return the rows in another order.)
    """

    def __init__(self, batch_size: int):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self._batch_size = batch_size

    def expand(self, records):
        return records | "Batch" >> beam.BatchElements(
            min_batch_size=self._batch_size, max_batch_size=self._batch_size
        )


def dead_letter_to_json(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False, sort_keys=True)
