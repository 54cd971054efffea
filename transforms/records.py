"""The input contract: what every source hands the validator, and what a
rejected record looks like.

Each source (CSV lines, BigQuery rows, Pub/Sub messages) has an `InputAdapter`
that turns one batch of its raw records into `Fields`: the text of every spec
column of the records that passed the source's own checks (field counts, JSON
syntax, ...), plus the records those checks rejected, as dead letters.
`transforms.validation.ValidateInput` then applies the spec's rules, the same
for every source, so that one spec means one set of types, ranges, allowed
values, required columns and defaults.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import json
from collections.abc import Sequence
from typing import Protocol

import pyarrow as pa

DEAD_LETTER_TAG = "dead_letter"

# A dead letter keeps at most this much of its input line, so that one huge
# malformed line cannot make a huge dead-letter file; the reason gives the length.
MAX_DEAD_LETTER_LINE_CHARS = 10_000


def dead_letter(source: str, line: str, reason: str, column: str | None = None) -> dict:
    """The one shape of a dead-letter record, shared by every stage that rejects rows."""
    if len(line) > MAX_DEAD_LETTER_LINE_CHARS:
        reason = f"{reason} (line of {len(line):,} characters, cut to the first 10,000 here)"
        line = line[:MAX_DEAD_LETTER_LINE_CHARS]
    return {"source": source, "line": line, "reason": reason, "column": column}


def decode_utf8(source: str, raw: bytes) -> tuple[str, dict | None]:
    """(text, None) of UTF-8 bytes; else (the bytes shown with escapes, their
    dead letter), so that one bad byte names its position instead of failing."""
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as error:
        shown = raw.decode("utf-8", errors="backslashreplace")
        return shown, dead_letter(source, shown, f"invalid UTF-8 at byte {error.start}")


def field_text(value) -> str:
    """A typed value (a BigQuery cell, a JSON value) as the text of a CSV field
    ('' for NULL), which the validator then types like any CSV field."""
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:  # BigQuery TIMESTAMPs are UTC
            value = value.replace(tzinfo=dt.UTC)
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float):
        # repr round-trips every float exactly; nan and inf stay readable, and
        # the validator rejects them as not finite.
        return repr(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    if isinstance(value, bool | int | decimal.Decimal | str):
        return str(value)
    return json.dumps(value, default=str)


@dataclasses.dataclass
class Fields:
    """One batch of records in the form the validator takes.

    `columns[c][i]` is the field text of spec column c in record i, one Arrow
    string array per spec column; `sources[i]` and `texts[i]` name and show
    record i in a dead letter. `rejected` holds the dead letters of the
    records the source's own checks refused; `header_lines` counts CSV header
    lines, which are neither rows nor dead letters.

    `extra` holds typed columns that the source itself knows, by name, one
    value per record: the derived record key (schemas.spec.RECORD_KEY, a
    string) when the spec declares no key column, and in a stream without a
    timestamp column the publish time (transforms.messages.EVENT_TIME). The
    validator appends them to the valid rows as they are.
    """

    sources: Sequence[str]
    texts: Sequence[str]
    columns: Sequence[pa.Array]
    rejected: list[dict] = dataclasses.field(default_factory=list)
    header_lines: int = 0
    extra: dict[str, pa.Array] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_rows(
        cls,
        sources: Sequence[str],
        texts: Sequence[str],
        rows: Sequence[Sequence[str]],
        width: int,
        rejected: list[dict] | None = None,
        header_lines: int = 0,
        extra: dict[str, pa.Array] | None = None,
    ) -> Fields:
        """From `rows[i]`, the `width` field texts of record i in spec order."""
        by_column = list(zip(*rows, strict=True)) if rows else [()] * width
        columns = [pa.array(texts_, type=pa.string()) for texts_ in by_column]
        return cls(sources, texts, columns, rejected or [], header_lines, extra or {})


class InputAdapter(Protocol):
    """Turns batches of one source's raw records into `Fields`.

    `kind` names what a raw record is ('csv_lines', 'bigquery_rows',
    'pubsub_messages'): the count key and counter of records read.
    """

    kind: str

    def fields(self, batch: Sequence) -> list[Fields]:
        """The batch as Fields, in one or more parts validated in order."""
        ...
