"""The online store of the windowed aggregates: a Bigtable table that the
streaming job and the batch `pipeline.materialize` command fill, and that the
prediction service (serving/) reads point-in-time.

Row design. One row per (aggregate, entity), keyed `row_key(aggregate, entity)`:
the aggregate's name, '#', and the entity's key values as a compact JSON array
(`zone_trips_1h#["Midtown"]`), so that `cbt read` shows what a row is and any
key type the validator produces has one spelling. The row has one column,
FAMILY:QUALIFIER, and one cell per period: the cell's timestamp is the start e
of the period whose rows the value is for (the window [e - W, e) ends there),
its value the JSON text of the number (`cbt read` shows it; JSON keeps a
float's repr exact). A retried bundle writes the same row, column and
timestamp, so it overwrites the cell with the same value instead of adding one.

Old periods leave by the family's garbage-collection rule (`gc_rule`): a cell
whose period is older than the retention, or beyond the newest
retention / period cells of its column, is removed by Bigtable itself. Both
compare event time, not write time: a materialized history older than the
retention is collected as soon as it is written, so choose the retention to
cover what serving must read.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence

import apache_beam as beam

from schemas.spec import Aggregate, DatasetSpec, Kind
from transforms.aggregates import AggregateGroup

# With BIGTABLE_EMULATOR_HOST set, google-cloud-bigtable warns "Connecting to
# Bigtable emulator at ..." for every client, in every worker: expected there,
# and noise on the console of each local run. Only that message is silenced.
warnings.filterwarnings(
    "ignore", message="Connecting to Bigtable emulator", category=RuntimeWarning
)

FAMILY = "aggregates"
QUALIFIER = b"value"
# Bigtable keeps cell timestamps in microseconds, at millisecond granularity.
MICROS = 1_000_000


@dataclasses.dataclass(frozen=True)
class StoreTable:
    """Where the online store lives: a Bigtable project, instance and table."""

    project: str
    instance: str
    table: str

    def __str__(self) -> str:
        return f"projects/{self.project}/instances/{self.instance}/tables/{self.table}"


def entity_text(entity: Sequence) -> str:
    return json.dumps(list(entity), separators=(",", ":"), ensure_ascii=False)


def row_key(aggregate_name: str, entity: Sequence) -> bytes:
    return f"{aggregate_name}#{entity_text(entity)}".encode()


def encode_value(value: float | int) -> bytes:
    return json.dumps(value).encode()


def decode_value(data: bytes, aggregate: Aggregate) -> float | int:
    value = json.loads(data)
    return int(value) if aggregate.kind is Kind.INT else float(value)


def period_timestamp(period_start_seconds: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(period_start_seconds, datetime.UTC)


@dataclasses.dataclass(frozen=True)
class Cell:
    """One period's value of one (aggregate, entity): what a row mutation sets."""

    row_key: bytes
    period_start: int
    value: bytes


def group_cells(element, group: AggregateGroup) -> list[Cell]:
    """(entity, (q, {aggregate: value})), the window values of one group for the
    rows of period q, as the streaming job and materialize compute them -> one
    cell per aggregate, stamped with the period's start q * P."""
    entity, (query, values) = element
    start = query * group.period_seconds
    return [
        Cell(row_key(aggregate.name, entity), start, encode_value(values[aggregate.name]))
        for aggregate in group.aggregates
    ]


def direct_row(cell: Cell):
    """The Bigtable mutation of one cell (for Beam's WriteToBigTable)."""
    from google.cloud.bigtable.row import DirectRow

    row = DirectRow(cell.row_key)
    row.set_cell(FAMILY, QUALIFIER, cell.value, timestamp=period_timestamp(cell.period_start))
    return row


def gc_rule(spec: DatasetSpec, retention_seconds: int):
    """Cells older than the retention, or beyond the newest retention / P of a
    column, are garbage-collected (P: the spec's shortest period)."""
    from google.cloud.bigtable import column_family

    shortest = min(aggregate.period_seconds for aggregate in spec.aggregates)
    return column_family.GCRuleUnion(
        [
            column_family.MaxAgeGCRule(datetime.timedelta(seconds=retention_seconds)),
            column_family.MaxVersionsGCRule(max(1, math.ceil(retention_seconds / shortest))),
        ]
    )


def ensure_table(store: StoreTable, spec: DatasetSpec, retention_seconds: int) -> None:
    """Creates the table with its column family and GC rule when missing; adds
    the family to an existing table that lacks it. Needs Bigtable admin rights."""
    from google.cloud import bigtable

    client = bigtable.Client(project=store.project, admin=True)
    table = client.instance(store.instance).table(store.table)
    rule = gc_rule(spec, retention_seconds)
    if not table.exists():
        table.create(column_families={FAMILY: rule})
    elif FAMILY not in table.list_column_families():
        table.column_family(FAMILY, gc_rule=rule).create()


class _GroupCellsDoFn(beam.DoFn):
    """`group_cells`, counting the cells (counter online_store/cells)."""

    def __init__(self, group: AggregateGroup):
        from apache_beam.metrics import Metrics

        self._group = group
        self._cells = Metrics.counter("online_store", "cells")

    def process(self, element) -> Iterable[Cell]:
        cells = group_cells(element, self._group)
        self._cells.inc(len(cells))
        yield from cells


class WriteGroupValues(beam.PTransform):
    """Window values of one aggregate group, (entity, (q, {aggregate: value})),
    -> their cells in the online store, through Beam's Bigtable connector.
    Counter online_store/cells: the cells handed to the connector."""

    def __init__(self, group: AggregateGroup, store: StoreTable):
        super().__init__()
        self._group = group
        self._store = store

    def expand(self, values):
        from apache_beam.io.gcp.bigtableio import WriteToBigTable

        return (
            values
            | "Cells" >> beam.ParDo(_GroupCellsDoFn(self._group))
            | "Mutations" >> beam.Map(direct_row)
            | "WriteToBigtable"
            >> WriteToBigTable(self._store.project, self._store.instance, self._store.table)
        )


def read_period_cells(
    data_table, reads: Mapping[int, Sequence[bytes]]
) -> dict[int, dict[bytes, bytes]]:
    """The cells of several periods, from a google.cloud.bigtable.data table:
    {period start: {row key: value}} for `reads`, {period start: row keys}; a
    key without a cell of that period is absent.

    One query: every key, and a filter that keeps the cells of any requested
    period (an interleave of one timestamp range per period). A row may so
    bring back cells of periods asked for other keys, at most one per period;
    they are dropped here. One round trip per request, whatever the number of
    periods: a query per period costs the store a request each."""
    from google.cloud.bigtable.data import ReadRowsQuery, row_filters

    found: dict[int, dict[bytes, bytes]] = {start: {} for start in reads}
    wanted = {(key, start) for start, keys in reads.items() for key in keys}
    if not wanted:
        return found
    ranges = []
    for start in sorted(reads):
        moment = period_timestamp(start)
        ranges.append(
            row_filters.TimestampRangeFilter(moment, moment + datetime.timedelta(milliseconds=1))
        )
    periods = ranges[0] if len(ranges) == 1 else row_filters.RowFilterUnion(ranges)
    query = ReadRowsQuery(
        row_keys=sorted({key for key, _ in wanted}),
        row_filter=row_filters.RowFilterChain([row_filters.FamilyNameRegexFilter(FAMILY), periods]),
    )
    for row in data_table.read_rows(query):
        for cell in row.cells:
            start = cell.timestamp_micros // MICROS
            if (row.row_key, start) in wanted:
                found[start][row.row_key] = cell.value
    return found
