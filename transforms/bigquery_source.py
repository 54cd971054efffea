"""Reading the raw rows from BigQuery, and their input adapter.

`--input bq://project.dataset.table` or `--query 'SELECT ...'` reads through
Beam's ReadFromBigQuery with the Storage Read API (DIRECT_READ: no export to
GCS). `BigQueryRows` maps each row's values to the spec's columns by name and
turns them into field text, which transforms.validation.ValidateInput checks
like CSV fields, so a bad BigQuery row becomes a dead letter with the same
reasons; NULL is a missing value, as an empty CSV field is.

A table has no file or offset to name a row by, and BigQuery returns rows in
no fixed order, so without a key column a row's derived record key is a hash
of its content (`content_key`). Identical rows would share it; the batch job
then numbers them (transforms.record_keys.NumberIdenticalRecords): the key is
'<hash>#<n>', n counting identical rows from 1, so that every key is unique
and the same table gives the same keys on every run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence

import apache_beam as beam
import pyarrow as pa

from schemas.spec import RECORD_KEY, DatasetSpec
from transforms.records import Fields, dead_letter, field_text

BIGQUERY_SCHEME = "bq://"


class BigQuerySourceError(ValueError):
    """An unusable BigQuery input flag (exit code 2)."""


@dataclasses.dataclass(frozen=True)
class BigQuerySource:
    """A table (`project.dataset.table`) or a standard-SQL query."""

    table: str | None = None
    query: str | None = None

    @classmethod
    def from_flags(cls, inputs: Sequence[str] | None, query: str | None) -> BigQuerySource | None:
        """The BigQuery source the flags name, None for CSV input; raises on a bad mix."""
        tables = [i for i in inputs or [] if i.startswith(BIGQUERY_SCHEME)]
        if query:
            if inputs:
                raise BigQuerySourceError("give either --input or --query, not both")
            return cls(query=query)
        if not tables:
            return None
        if len(inputs) != 1:
            raise BigQuerySourceError("a bq:// --input cannot be combined with other inputs")
        table = tables[0][len(BIGQUERY_SCHEME) :]
        if len(table.split(".")) != 3 or not all(table.split(".")):
            raise BigQuerySourceError(
                f"--input {tables[0]} must look like bq://project.dataset.table"
            )
        return cls(table=table)

    @property
    def name(self) -> str:
        """How dead letters and the manifest name this source."""
        return f"{BIGQUERY_SCHEME}{self.table}" if self.table else "bq:query"

    def read_transform(self) -> beam.PTransform:
        method = beam.io.ReadFromBigQuery.Method.DIRECT_READ
        if self.table:
            project, dataset, table = self.table.split(".")
            return beam.io.ReadFromBigQuery(table=f"{project}:{dataset}.{table}", method=method)
        return beam.io.ReadFromBigQuery(query=self.query, use_standard_sql=True, method=method)


def content_key(field_texts: Sequence[str]) -> str:
    """A hash of a row's field texts in spec order (length-prefixed, so that no
    two rows' texts run together alike): 32 hex digits, equal only for rows
    that are equal."""
    digest = hashlib.sha256()
    for text in field_texts:
        encoded = text.encode("utf-8")
        digest.update(b"%d:" % len(encoded))
        digest.update(encoded)
    return digest.hexdigest()[:32]


def _row_json(row: dict) -> str:
    return json.dumps(row, default=str, sort_keys=True)


class BigQueryRows:
    """Input adapter (transforms.records) for batches of BigQuery row dicts from
    `source`: each spec column's value, found by name, as field text; a row
    without some spec column is a dead letter."""

    kind = "bigquery_rows"

    def __init__(self, spec: DatasetSpec, source: str):
        # A row's field names are what the table calls its columns.
        self.column_names = [column.source_name for column in spec.columns]
        self.source = source
        self.derive_keys = spec.derives_record_key

    def fields(self, rows: Sequence[dict]) -> list[Fields]:
        rejected, texts, fields = [], [], []
        for row in rows:
            missing = [name for name in self.column_names if name not in row]
            if missing:
                reason = f"column(s) {', '.join(missing)} not in the BigQuery row"
                rejected.append(dead_letter(self.source, _row_json(row), reason))
                continue
            texts.append(_row_json(row))
            fields.append([field_text(row[name]) for name in self.column_names])
        sources = [self.source] * len(fields)
        extra = {}
        if self.derive_keys:
            # Not yet unique: NumberIdenticalRecords appends '#n'.
            extra[RECORD_KEY] = pa.array([content_key(row) for row in fields], pa.string())
        return [
            Fields.from_rows(sources, texts, fields, len(self.column_names), rejected, extra=extra)
        ]
