"""transforms.online_store: the row design, and writing and reading cells on the
real Bigtable emulator through Beam's connector."""

from __future__ import annotations

import apache_beam as beam
import pytest

from schemas.spec import parse_spec
from tests.support import ZONES_SPEC_DOCUMENT, test_pipeline
from transforms import online_store
from transforms.aggregates import group_aggregates

pytest_plugins = ["tests.bigtable_emulator"]

SPEC = parse_spec(ZONES_SPEC_DOCUMENT)
GROUP = group_aggregates(SPEC)[0]


def test_a_row_is_one_aggregate_of_one_entity_and_a_cell_one_period():
    element = (("north",), (7, {"n_60s": 3, "mean_x_30s": 2.5}))
    cells = online_store.group_cells(element, GROUP)
    assert [(c.row_key, c.period_start, c.value) for c in cells] == [
        (b'n_60s#["north"]', 70, b"3"),
        (b'mean_x_30s#["north"]', 70, b"2.5"),
    ]


def test_entity_keys_of_several_columns_and_types_have_one_spelling():
    assert online_store.row_key("a", ("Zürich", 3)) == 'a#["Zürich",3]'.encode()
    assert online_store.row_key("a", ("x#y",)) != online_store.row_key("a#x", ("y",))


def test_values_decode_to_the_aggregates_kind():
    count, mean = GROUP.aggregates
    assert online_store.decode_value(online_store.encode_value(3), count) == 3
    assert isinstance(online_store.decode_value(b"3", count), int)
    assert online_store.decode_value(online_store.encode_value(0.1 + 0.2), mean) == 0.1 + 0.2


def test_gc_rule_keeps_the_retention_in_versions_of_the_shortest_period():
    rule = online_store.gc_rule(SPEC, 3600).to_pb()
    versions = [r.max_num_versions for r in rule.union.rules if r.max_num_versions]
    ages = [r.max_age.seconds for r in rule.union.rules if r.max_age.seconds]
    assert versions == [360] and ages == [3600]


@pytest.mark.emulator
def test_written_cells_read_back_per_period_and_a_retry_overwrites(bigtable_emulator):
    store = online_store.StoreTable(bigtable_emulator.project, bigtable_emulator.instance, "t1")
    online_store.ensure_table(store, SPEC, 86400)
    online_store.ensure_table(store, SPEC, 86400)  # an existing table is kept
    values = [
        (("north",), (7, {"n_60s": 3, "mean_x_30s": 2.5})),
        (("north",), (8, {"n_60s": 4, "mean_x_30s": 3.0})),
        (("south",), (7, {"n_60s": 1, "mean_x_30s": 9.0})),
    ]
    for _ in range(2):  # the second run is a retried bundle: same cells again
        with test_pipeline() as p:
            _ = p | beam.Create(values) | online_store.WriteGroupValues(GROUP, store)

    rows = bigtable_emulator.read_all("t1")
    assert rows[b'n_60s#["north"]'] == [(80_000_000, b"4"), (70_000_000, b"3")]
    assert rows[b'mean_x_30s#["south"]'] == [(70_000_000, b"9.0")]
    assert len(rows) == 4

    table = bigtable_emulator.data_table("t1")
    keys = [b'n_60s#["north"]', b'n_60s#["south"]', b'n_60s#["east"]']
    assert online_store.read_period_cells(table, {70: keys}) == {70: {keys[0]: b"3", keys[1]: b"1"}}
    # Several periods at once (concurrent queries); a key may be in several.
    assert online_store.read_period_cells(table, {80: keys, 70: keys[:1], 90: keys}) == {
        70: {keys[0]: b"3"},
        80: {keys[0]: b"4"},
        90: {},
    }
    assert online_store.read_period_cells(table, {}) == {}
