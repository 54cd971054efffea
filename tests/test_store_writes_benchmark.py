"""benchmarks/store_writes.py reports the cells the streaming job really wrote:
its count equals what the Bigtable emulator holds and what the definition gives."""

from __future__ import annotations

import pytest

pytest_plugins = ["tests.bigtable_emulator"]
pytestmark = [pytest.mark.slow, pytest.mark.emulator]


def test_store_writes_reports_the_cells_the_emulator_holds(bigtable_emulator, tmp_path):
    from benchmarks import store_writes
    from schemas.spec import parse_spec
    from tests.aggregate_reference import stream_values_reference
    from tests.support import ZONES_SPEC_DOCUMENT
    from transforms.aggregates import group_aggregates

    result = store_writes.measure(80, 6, 60, str(tmp_path), bigtable_emulator)
    held = bigtable_emulator.read_all(result["table"])
    cells = sum(len(row) for row in held.values())
    # What the stream must write for these events, from the definition.
    spec = parse_spec(ZONES_SPEC_DOCUMENT)
    events = store_writes.synthetic_events(80, 6, 60)
    expected = sum(
        len(stream_values_reference(events, spec.timestamp_column, group)) * len(group.aggregates)
        for group in group_aggregates(spec)
    )
    assert result["cells_written"] == cells == expected
    assert result["write_step_cells"] == cells
    written_again = bigtable_emulator.read_all(store_writes.WRITE_TABLE)
    assert sum(len(row) for row in written_again.values()) == cells
