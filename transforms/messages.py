"""Parsing and validating JSON messages (Pub/Sub) into typed rows, with dead letters.

A message is one JSON object holding the spec's raw columns. JSON types are
checked first (a string column takes a JSON string, a number column a JSON
number, a timestamp column an ISO 8601 string or integer epoch seconds); then
the values go through the same `RowValidator` as CSV fields, so that ranges,
allowed values, required columns and defaults mean the same in batch and in
streaming. Fields that the spec does not name are ignored, as extra CSV columns
are.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from zoneinfo import ZoneInfo

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import TimestampedValue

from schemas.spec import Column, ColumnType, DatasetSpec
from transforms.validation import (
    DEAD_LETTER_TAG,
    RowValidator,
    dead_letter,
    parse_timestamp_text,
)

METRICS_NAMESPACE = "stream"


def _json_type(value) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def field_text(column: Column, value) -> tuple[str, str | None]:
    """The value as CSV-like field text, or a problem when its JSON type is wrong.

    Missing and null become '' (a missing value, as an empty CSV field).
    """
    if value is None:
        return "", None
    if column.type is ColumnType.STRING:
        if isinstance(value, str):
            return value, None
        return "", f"expected a string, got {_json_type(value)}"
    if column.type is ColumnType.TIMESTAMP:
        if isinstance(value, str):
            return value, None
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value), None
        return "", f"expected an ISO 8601 string or integer epoch seconds, got {_json_type(value)}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "", f"expected a number, got {_json_type(value)}"
    # repr round-trips every float exactly; Python's json also yields nan and
    # inf here, which the validator rejects as not finite.
    return (repr(value) if isinstance(value, float) else str(value)), None


def attribute_event_seconds(text: str) -> int | None:
    """Pub/Sub's timestamp attribute convention: epoch milliseconds or RFC 3339."""
    if text.isdigit():
        return int(text) // 1000
    return parse_timestamp_text(text, dt.UTC)


class MessageParser:
    """Parses batches of `(source, data bytes, attributes)` for one spec."""

    def __init__(self, spec: DatasetSpec):
        self.spec = spec
        self.validator = RowValidator(spec)
        self.timestamp_column = spec.column(spec.timestamp_column)

    def _event_time_field(self, body_text: str, attributes: dict) -> tuple[str, str | None]:
        """The timestamp column's field text when the spec names an attribute."""
        name = self.spec.timestamp_attribute
        raw = attributes.get(name)
        if raw is None:
            return "", f"timestamp attribute {name!r} is missing"
        seconds = attribute_event_seconds(raw)
        if seconds is None:
            return "", f"timestamp attribute {name!r} value {raw!r} is not a timestamp"
        if body_text:
            zone = self.timestamp_column.timezone
            body = parse_timestamp_text(body_text, dt.UTC if zone == "UTC" else ZoneInfo(zone))
            if body != seconds:
                return "", (
                    f"timestamp attribute {name!r} ({raw}) disagrees with the body's "
                    f"{self.timestamp_column.name} ({body_text})"
                )
        return str(seconds), None

    def parse(
        self, messages: Sequence[tuple[str, bytes, dict]]
    ) -> tuple[pa.RecordBatch, list[dict]]:
        dead_letters: list[dict] = []
        sources: list[str] = []
        texts: list[str] = []
        rows: list[list[str]] = []
        for source, data, attributes in messages:
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as error:
                shown = data.decode("utf-8", errors="backslashreplace")
                dead_letters.append(
                    dead_letter(source, shown, f"invalid UTF-8 at byte {error.start}")
                )
                continue
            try:
                document = json.loads(text)
            except (json.JSONDecodeError, RecursionError) as error:
                reason = f"invalid JSON: {getattr(error, 'msg', 'nested too deeply')}"
                dead_letters.append(dead_letter(source, text, reason))
                continue
            if not isinstance(document, dict):
                reason = f"message is {_json_type(document)}, not a JSON object"
                dead_letters.append(dead_letter(source, text, reason))
                continue
            fields, problem = self._fields(document, attributes or {})
            if problem is not None:
                column, reason = problem
                dead_letters.append(dead_letter(source, text, f"{column}: {reason}", column))
                continue
            sources.append(source)
            texts.append(text)
            rows.append(fields)
        valid, rejected = self.validator.validate(sources, texts, rows)
        return valid, dead_letters + rejected

    def _fields(self, document: dict, attributes: dict):
        fields = []
        for column in self.spec.columns:
            text, problem = field_text(column, document.get(column.name))
            if (
                problem is None
                and column is self.timestamp_column
                and self.spec.timestamp_attribute
            ):
                text, problem = self._event_time_field(text, attributes)
            if problem is not None:
                return None, (column.name, problem)
            fields.append(text)
        return fields, None


def message_parts(message) -> tuple[str, bytes, dict]:
    """(source, data, attributes) of a PubsubMessage; the source names the message."""
    message_id = getattr(message, "message_id", None)
    source = f"pubsub:{message_id}" if message_id else "pubsub"
    data = message.data or b""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return source, data, dict(message.attributes or {})


class _ParseMessagesDoFn(beam.DoFn):
    """Batch of PubsubMessages -> one row dict per valid message, timestamped at its
    event time (main), and dead-letter dicts (tagged)."""

    def __init__(self, spec: DatasetSpec):
        self._spec = spec
        self._read = Metrics.counter(METRICS_NAMESPACE, "messages_read")
        self._valid = Metrics.counter(METRICS_NAMESPACE, "rows_valid")
        self._dead = Metrics.counter(METRICS_NAMESPACE, "messages_dead_letter")

    def setup(self):
        self._parser = MessageParser(self._spec)

    def process(self, messages: list) -> Iterable:
        valid, dead_letters = self._parser.parse([message_parts(m) for m in messages])
        self._read.inc(len(messages))
        self._valid.inc(valid.num_rows)
        self._dead.inc(len(dead_letters))
        timestamp_column = self._spec.timestamp_column
        for row in valid.to_pylist():
            # Event time is the spec's timestamp column, never publish or
            # processing time.
            yield TimestampedValue(row, row[timestamp_column])
        for record in dead_letters:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, record)


class ParseMessages(beam.PTransform):
    """PCollection[PubsubMessage] -> valid rows and dead letters.

    Returns a DoOutputsTuple with:
      - 'rows': dict per valid message, spec columns with typed values
        (timestamps as epoch seconds), element timestamp = event time;
      - 'dead_letter': dicts {source, line, reason, column}.
    Unbounded or bounded, any windowing. Counters (namespace 'stream'):
    messages_read, rows_valid, messages_dead_letter.
    """

    def __init__(self, spec: DatasetSpec, batch_size: int = 500):
        super().__init__()
        self._spec = spec
        self._batch_size = batch_size

    def expand(self, messages):
        return (
            messages
            | "BatchMessages"
            >> beam.BatchElements(min_batch_size=1, max_batch_size=self._batch_size)
            | "ParseBatch"
            >> beam.ParDo(_ParseMessagesDoFn(self._spec)).with_outputs(DEAD_LETTER_TAG, main="rows")
        )


def row_to_json(row: dict) -> str:
    """A validated row as a JSON message body (parsing it gives the row back)."""
    return json.dumps(row, sort_keys=True)
