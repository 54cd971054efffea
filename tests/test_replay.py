"""pipeline.replay: CSV rows become live JSON events that parse back to the same rows."""

from __future__ import annotations

import json

import pytest

from tests.support import TAXI_SPEC


@pytest.fixture
def taxi_csv(tmp_path):
    from pipeline.sample_data import HEADER, generate_rows, write_csv

    path = tmp_path / "taxi.csv"
    records = generate_rows(60, seed=4, messy_fraction=0.0)
    records[5] = records[5][:3]  # too few fields: the spec rejects it
    write_csv(records, str(path))
    assert path.read_text().startswith(",".join(HEADER))
    return path


def test_replayed_events_parse_back_to_the_csv_rows_at_publish_time(taxi_spec, taxi_csv):
    from apache_beam.io.gcp.pubsub import PubsubMessage

    from pipeline.replay import live_message, typed_rows
    from transforms.messages import PubsubMessages
    from transforms.validation import InputValidator

    rows, rejected = typed_rows(taxi_spec, str(taxi_csv), limit=None)
    assert (len(rows), rejected) == (59, 1)
    now = 1_790_000_000.7
    messages = [
        PubsubMessage(live_message(row, taxi_spec.timestamp_column, now), {}) for row in rows
    ]
    validated = InputValidator(taxi_spec, PubsubMessages(taxi_spec)).parse(messages)
    assert validated.dead_letters == []
    expected = [{**row, taxi_spec.timestamp_column: 1_790_000_000} for row in rows]
    assert validated.valid.to_pylist() == expected


def test_limit_stops_early(taxi_spec, taxi_csv):
    from pipeline.replay import typed_rows

    rows, _ = typed_rows(taxi_spec, str(taxi_csv), limit=7)
    assert len(rows) == 7


@pytest.mark.emulator
def test_replay_creates_the_subscription_and_publishes_every_valid_row(pubsub_emulator, taxi_csv):
    from pipeline import replay

    topic = f"projects/{pubsub_emulator.project}/topics/replayed"
    code = replay.main(
        [
            "--spec", str(TAXI_SPEC), "--input", str(taxi_csv), "--topic", topic,
            "--create_subscription", "replayed-sub", "--rate", "1000",
        ]
    )  # fmt: skip
    assert code == 0
    subscription = f"projects/{pubsub_emulator.project}/subscriptions/replayed-sub"
    received = pubsub_emulator.pull_all(subscription, max_wait_seconds=10, expected_count=59)
    assert len(received) == 59
    assert {json.loads(m.data)["trip_id"] for m in received} == {
        f"0004-{i:09d}" for i in range(60) if i != 5
    }
