"""pipeline.stream as a process, on the real Pub/Sub emulator and the wall clock:
late, too-late and malformed events, and parity with batch (tests/stream_scenario.py)."""

from __future__ import annotations

import time

import pytest
import yaml

from tests.stream_scenario import run_scenario, sample_rows
from tests.support import ZONES_SPEC_DOCUMENT

pytest_plugins = ["tests.bigtable_emulator"]
pytestmark = [pytest.mark.emulator, pytest.mark.slow]


@pytest.fixture(scope="module")
def zones_batch_run(tmp_path_factory):
    """A batch run over an hour of past events: the transform_dir to stream with."""
    from pipeline import preprocess
    from schemas.spec import load_spec

    root = tmp_path_factory.mktemp("zones")
    spec_path = root / "zones.yaml"
    spec_path.write_text(yaml.safe_dump(ZONES_SPEC_DOCUMENT))
    spec = load_spec(str(spec_path))
    rows = sample_rows(spec, 800, seed=3)
    hour_ago = int(time.time()) - 3600
    lines = [",".join(spec.column_names)]
    for index, row in enumerate(rows):
        row[spec.timestamp_column] = str(hour_ago + index * 4)
        lines.append(",".join(str(row[name]) for name in spec.column_names))
    csv_path = root / "history.csv"
    csv_path.write_text("\n".join(lines) + "\n")
    out = root / "batch"
    argv = ["--spec", str(spec_path), "--input", str(csv_path), "--output_dir", str(out)]
    assert preprocess.run(argv) == 0
    return spec_path, out


def test_live_events_through_the_emulator_match_batch(pubsub_emulator, zones_batch_run, tmp_path):
    spec_path, transform_dir = zones_batch_run
    report = run_scenario(
        pubsub_emulator,
        str(spec_path),
        str(transform_dir),
        str(tmp_path),
        events=1000,
        lateness=30,
        read_margin=12,
        file_window=10,
    )
    assert not report["problems"], "\n".join(report["problems"])
    assert report["late_within_lateness"] > 0 and report["beyond_lateness"] > 0
    assert report["examples"] == report["admitted"] == report["published_examples"]
    assert report["features"]["rows"] == report["admitted"]


def test_the_live_store_holds_what_materialize_writes(
    pubsub_emulator, bigtable_emulator, zones_batch_run, tmp_path
):
    spec_path, transform_dir = zones_batch_run
    report = run_scenario(
        pubsub_emulator,
        str(spec_path),
        str(transform_dir),
        str(tmp_path),
        events=300,
        lateness=30,
        read_margin=12,
        file_window=10,
        store=bigtable_emulator,
        name_prefix="store-",
    )
    assert not report["problems"], "\n".join(report["problems"])
