"""JSON messages (Pub/Sub) as validator input, and validated rows as stream elements.

A message is one JSON object holding the spec's raw columns. `PubsubMessages`,
the input adapter, checks JSON types first (a string column takes a JSON
string, a number column a JSON number, a timestamp column an ISO 8601 string
or integer epoch seconds); then transforms.validation.ValidateInput checks the
values like CSV fields, so that ranges, allowed values, required columns and
defaults mean the same in batch and in streaming. Fields that the spec does
not name are ignored, as extra CSV columns are; JSON `null` and an absent field
mean missing, as an empty CSV field does. `RowsAtEventTime` turns the
validated batches into the timestamped row dicts the stream job carries.

Without a key column, a message's record key is its Pub/Sub message_id:
unique within a topic and the same on every redelivery. Without a timestamp
column, a message's event time is its publish time (what Beam's Pub/Sub
source stamps elements with when no timestamp attribute is named), carried in
the rows as EVENT_TIME so that admission and lateness work as with a declared
event time. A message without the id or publish time it needs is a dead
letter: neither is ever made up.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from zoneinfo import ZoneInfo

import apache_beam as beam
import pyarrow as pa
from apache_beam.transforms.window import TimestampedValue

from schemas.spec import RECORD_KEY, Column, ColumnType, DatasetSpec
from transforms.records import Fields, dead_letter, decode_utf8, field_text
from transforms.validation import parse_timestamp_text

# The stream's event time of a spec without timestamp_column: the publish time,
# epoch seconds (see the module docstring).
EVENT_TIME = "__event_time__"


def event_time_column(spec: DatasetSpec) -> str:
    """The row field that holds a streamed row's event time."""
    return spec.timestamp_column or EVENT_TIME


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
        self.timestamp_column = (
            spec.column(spec.timestamp_column) if spec.timestamp_column else None
        )
        self.missing_tokens = [spec.missing_tokens(column) for column in spec.columns]
        self.derive_keys = spec.derives_record_key
        self.publish_time_is_event_time = spec.timestamp_column is None

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
        parts = [message_parts(message) for message in messages]
        origins = [message_origin(message) for message in messages]
        return [self.fields_of_parts(parts, origins)]

    def fields_of_parts(
        self,
        messages: Sequence[tuple[str, bytes, dict]],
        origins: Sequence[tuple[str | None, int | None]] | None = None,
    ) -> Fields:
        """Fields of `(source, data bytes, attributes)` triples (see message_parts),
        with each message's (message_id, publish seconds) (see message_origin)
        where the spec needs them for a derived key or event time."""
        dead_letters: list[dict] = []
        sources: list[str] = []
        texts: list[str] = []
        rows: list[list[str]] = []
        keys: list[str] = []
        event_times: list[int] = []
        origins = origins if origins is not None else [(None, None)] * len(messages)
        for (source, data, attributes), (message_id, published) in zip(
            messages, origins, strict=True
        ):
            text, rejected = decode_utf8(source, data)
            if rejected is not None:
                dead_letters.append(rejected)
                continue
            if self.derive_keys and not message_id:
                reason = "message has no message_id, the record key of a spec without key_column"
                dead_letters.append(dead_letter(source, text, reason))
                continue
            if self.publish_time_is_event_time and published is None:
                reason = "message has no publish time, the event time of a spec without "
                dead_letters.append(dead_letter(source, text, reason + "timestamp_column"))
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
            keys.append(message_id)
            event_times.append(published)
        extra = {}
        if self.derive_keys:
            extra[RECORD_KEY] = pa.array(keys, pa.string())
        if self.publish_time_is_event_time:
            extra[EVENT_TIME] = pa.array(event_times, pa.int64())
        return Fields.from_rows(
            sources, texts, rows, len(self.spec.columns), dead_letters, extra=extra
        )

    def _fields(self, document: dict, attributes: dict):
        def with_attribute(column: Column, text: str) -> tuple[str, str | None]:
            if column is self.timestamp_column and self.spec.timestamp_attribute:
                return self._event_time_field(text, attributes)
            return text, None

        return document_field_texts(
            self.spec.columns, self.missing_tokens, document, by_source_name, with_attribute
        )


def by_source_name(document: dict, column: Column):
    """A column's value in a JSON object: under the input's own name for it."""
    return document.get(column.source_name)


def document_field_texts(columns, missing_tokens, document: dict, lookup, adjust=None):
    """The field text of each column's value in a JSON object (`lookup(document,
    column)`), as the validator takes CSV fields: ([text, ...], None), or
    (None, (column name, problem)) for the first value of the wrong JSON type.
    A string that is one of the column's null tokens means missing. `adjust(column,
    text)` may replace a text, or name a problem with it."""
    fields = []
    for column, tokens in zip(columns, missing_tokens, strict=True):
        value = lookup(document, column)
        if isinstance(value, str) and value.strip() in tokens:
            # A declared null token ("NA") means missing in any column, as in a
            # CSV field, though a number column otherwise takes no JSON string.
            value = None
        problem = json_type_problem(column, value)
        text = field_text(value) if problem is None else ""
        if problem is None and adjust is not None:
            text, problem = adjust(column, text)
        if problem is not None:
            return None, (column.name, problem)
        fields.append(text)
    return fields, None


def message_origin(message) -> tuple[str | None, int | None]:
    """(message_id, publish time in whole epoch seconds) of a PubsubMessage; None
    for what it lacks (a message made in a test, say)."""
    published = getattr(message, "publish_time", None)
    if isinstance(published, dt.datetime):
        if published.tzinfo is None:
            published = published.replace(tzinfo=dt.UTC)
        published = int(published.timestamp())
    elif published is not None:  # a protobuf Timestamp or a Beam Timestamp
        seconds = getattr(published, "seconds", None)
        published = int(seconds if seconds is not None else published.micros // 1_000_000)
    return getattr(message, "message_id", None) or None, published


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
            # Event time is the spec's timestamp column (or, without one, the
            # publish time in EVENT_TIME), never processing time.
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
