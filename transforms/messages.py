"""JSON messages (Pub/Sub) as validator input, and validated rows as stream elements.

A message is one JSON object holding the spec's raw columns. `PubsubMessages`,
the input adapter, checks JSON types first (a string column takes a JSON
string, a number column a JSON number, a timestamp column an ISO 8601 string
or integer epoch seconds); then transforms.validation.ValidateInput checks the
values like CSV fields, so that ranges, allowed values, required columns and
defaults mean the same in batch and in streaming. Fields that the spec does
not name are ignored, as extra CSV columns are. `RowsAtEventTime` turns the
validated batches into the timestamped row dicts the stream job carries.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from zoneinfo import ZoneInfo

import apache_beam as beam
import pyarrow as pa
from apache_beam.transforms.window import TimestampedValue

from schemas.spec import Column, ColumnType, DatasetSpec
from transforms.records import Fields, dead_letter, decode_utf8, field_text
from transforms.validation import parse_timestamp_text


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


def json_type_problem(column: Column, value) -> str | None:
    """What is wrong with the JSON type of a column's value, None when nothing:
    a string column takes a string, a timestamp column an ISO 8601 string or
    integer epoch seconds, a number column a number. Null (or absent) is a
    missing value, as an empty CSV field."""
    if value is None:
        return None
    if column.type is ColumnType.STRING:
        return None if isinstance(value, str) else f"expected a string, got {_json_type(value)}"
    if column.type is ColumnType.TIMESTAMP:
        if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
            return None
        return f"expected an ISO 8601 string or integer epoch seconds, got {_json_type(value)}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"expected a number, got {_json_type(value)}"
    return None


def attribute_event_seconds(text: str) -> int | None:
    """Pub/Sub's timestamp attribute convention: epoch milliseconds or RFC 3339."""
    if text.isdigit():
        return int(text) // 1000
    return parse_timestamp_text(text, dt.UTC)


class PubsubMessages:
    """Input adapter (transforms.records) for batches of PubsubMessages: each
    spec column's value from the JSON body (or the event time from the spec's
    timestamp attribute) as field text. A message that is not UTF-8, not JSON,
    not an object, or holds a value of the wrong JSON type is a dead letter."""

    kind = "pubsub_messages"

    def __init__(self, spec: DatasetSpec):
        self.spec = spec
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

    def fields(self, messages: Sequence) -> list[Fields]:
        return [self.fields_of_parts([message_parts(message) for message in messages])]

    def fields_of_parts(self, messages: Sequence[tuple[str, bytes, dict]]) -> Fields:
        """Fields of `(source, data bytes, attributes)` triples (see message_parts)."""
        dead_letters: list[dict] = []
        sources: list[str] = []
        texts: list[str] = []
        rows: list[list[str]] = []
        for source, data, attributes in messages:
            text, rejected = decode_utf8(source, data)
            if rejected is not None:
                dead_letters.append(rejected)
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
        return Fields.from_rows(sources, texts, rows, len(self.spec.columns), dead_letters)

    def _fields(self, document: dict, attributes: dict):
        fields = []
        for column in self.spec.columns:
            value = document.get(column.name)
            problem = json_type_problem(column, value)
            text = field_text(value) if problem is None else ""
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


class BatchMessages(beam.PTransform):
    """PCollection[PubsubMessage] -> lists of up to `batch_size` messages, as many
    as a bundle holds: a stream does not wait to fill a batch."""

    def __init__(self, batch_size: int = 500):
        super().__init__()
        self._batch_size = batch_size

    def expand(self, messages):
        return messages | "Batch" >> beam.BatchElements(
            min_batch_size=1, max_batch_size=self._batch_size
        )


class _RowsAtEventTimeDoFn(beam.DoFn):
    """RecordBatch -> one TimestampedValue(row dict, event time) per row."""

    def __init__(self, timestamp_column: str):
        self._timestamp_column = timestamp_column

    def process(self, batch: pa.RecordBatch) -> Iterable[TimestampedValue]:
        for row in batch.to_pylist():
            # Event time is the spec's timestamp column, never publish or
            # processing time.
            yield TimestampedValue(row, row[self._timestamp_column])


class RowsAtEventTime(beam.PTransform):
    """PCollection[pa.RecordBatch] of validated rows -> one row dict per row
    (spec columns with typed values, timestamps as epoch seconds), its element
    timestamp the row's event time: what the stream's admission step takes."""

    def __init__(self, timestamp_column: str):
        super().__init__()
        self._timestamp_column = timestamp_column

    def expand(self, batches):
        return batches | "ToRows" >> beam.ParDo(_RowsAtEventTimeDoFn(self._timestamp_column))


def row_to_json(row: dict) -> str:
    """A validated row as a JSON message body (parsing it gives the row back)."""
    return json.dumps(row, sort_keys=True)
