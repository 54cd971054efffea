"""Reading the raw rows from BigQuery into the CSV path's validation.

`--input bq://project.dataset.table` or `--query 'SELECT ...'` reads through
Beam's ReadFromBigQuery with the Storage Read API (DIRECT_READ: no export to
GCS). Each row's values are mapped to the spec's columns by name and turned
into field text, then checked by the same `RowValidator` as CSV lines, so a bad
BigQuery row becomes a dead letter with the same reasons.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import json
from collections.abc import Iterable, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics

from schemas.spec import DatasetSpec
from transforms.validation import (
    DEAD_LETTER_TAG,
    METRICS_NAMESPACE,
    RowValidator,
    dead_letter,
)

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


def field_text(value) -> str:
    """A BigQuery value as the text of a CSV field ('' for NULL)."""
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:  # BigQuery TIMESTAMPs are UTC
            value = value.replace(tzinfo=dt.UTC)
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    if isinstance(value, bool | int | decimal.Decimal | str):
        return str(value)
    return json.dumps(value, default=str)


def _row_json(row: dict) -> str:
    return json.dumps(row, default=str, sort_keys=True)


class RecordParser:
    """Validates BigQuery rows (dicts) for one spec."""

    def __init__(self, spec: DatasetSpec, source: str):
        self.spec = spec
        self.source = source
        self.validator = RowValidator(spec)

    def parse(self, rows: Sequence[dict]):
        """(valid RecordBatch, dead letters) of a batch of rows."""
        dead_letters, texts, fields = [], [], []
        for row in rows:
            missing = [name for name in self.spec.column_names if name not in row]
            if missing:
                reason = f"column(s) {', '.join(missing)} not in the BigQuery row"
                dead_letters.append(dead_letter(self.source, _row_json(row), reason))
                continue
            texts.append(_row_json(row))
            fields.append([field_text(row[name]) for name in self.spec.column_names])
        valid, rejected = self.validator.validate([self.source] * len(fields), texts, fields)
        return valid, dead_letters + rejected


class _ParseRecordsDoFn(beam.DoFn):
    """Batch of BigQuery row dicts -> valid RecordBatch (main), dead letters and
    ('lines', n) count records, like the CSV parser's outputs."""

    def __init__(self, spec: DatasetSpec, source: str):
        self._spec = spec
        self._source = source
        self._read = Metrics.counter(METRICS_NAMESPACE, "lines_read")
        self._valid = Metrics.counter(METRICS_NAMESPACE, "rows_valid")
        self._dead = Metrics.counter(METRICS_NAMESPACE, "rows_dead_letter")

    def setup(self):
        self._parser = RecordParser(self._spec, self._source)

    def process(self, rows: list[dict]) -> Iterable:
        valid, dead_letters = self._parser.parse(rows)
        self._read.inc(len(rows))
        self._valid.inc(valid.num_rows)
        self._dead.inc(len(dead_letters))
        yield beam.pvalue.TaggedOutput("counts", ("lines", len(rows)))
        if valid.num_rows:
            yield valid
        for record in dead_letters:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, record)


class ValidateRecords(beam.PTransform):
    """PCollection[dict] of BigQuery rows -> the outputs of ParseAndValidate:
    main 'valid' RecordBatches, 'dead_letter' dicts and 'counts' records."""

    def __init__(self, spec: DatasetSpec, source: str, batch_size: int = 4096):
        super().__init__()
        self._spec = spec
        self._source = source
        self._batch_size = batch_size

    def expand(self, rows):
        return (
            rows
            | "BatchRecords"
            # A fixed size, not BatchElements' timing-based one: batches are
            # the analyzers' units of partial results. (Fixed batches are not
            # enough to reproduce a run exactly here: BigQuery may return the
            # rows in another order.)
            >> beam.BatchElements(min_batch_size=self._batch_size, max_batch_size=self._batch_size)
            | "ParseBatch"
            >> beam.ParDo(_ParseRecordsDoFn(self._spec, self._source)).with_outputs(
                DEAD_LETTER_TAG, "counts", main="valid"
            )
        )
