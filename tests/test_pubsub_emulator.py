"""Pub/Sub against the real emulator: the fixture's own contract, and Beam's DirectRunner
reading and writing Pub/Sub through it.

    .venv/bin/python -m pytest -q -m emulator tests/test_pubsub_emulator.py
"""

from __future__ import annotations

import os
import threading
import urllib.error
import urllib.request

import apache_beam as beam
import pytest
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from google.api_core import exceptions as api_exceptions

from tests.pubsub_emulator import (
    EMULATOR_HOST_VARIABLE,
    PubSubEmulator,
    PulledMessage,
    missing_prerequisite,
    running_emulator,
)

pytestmark = pytest.mark.emulator

# Distinct data per message, so a sort by data lines received up with expected whatever
# order Pub/Sub delivers in; it promises none.
TRIPS = [
    (b"trip-1", {"zone": "7", "event_time": "2026-01-01T00:00:05Z"}),
    (b"trip-2", {"zone": "12"}),
    (b"trip-3", {}),
    (b"\x00\xfftrip-4", {"zone": "7", "kind": "dropoff"}),
]


def by_data(messages: list[PulledMessage]) -> list[PulledMessage]:
    return sorted(messages, key=lambda message: message.data)


def upper_case_data(message: PubsubMessage) -> PubsubMessage:
    return PubsubMessage(message.data.upper(), message.attributes)


def cancel_pipeline(result, emulator: PubSubEmulator, input_topic: str) -> None:
    """Cancel a DirectRunner streaming pipeline in well under a second, not ~30 s.

    `cancel()` joins the DirectRunner's single worker thread, which is usually inside a
    read bundle's pull (`timeout=30`) that the emulator holds open until a message arrives
    or the deadline is a second away. One message published after shutdown was requested
    ends that pull; the runner then schedules no more work, so the message goes nowhere.
    """
    canceller = threading.Thread(target=result.cancel, name="CancelPipeline")
    canceller.start()
    emulator.publish(input_topic, b"wake-up-for-cancel")
    canceller.join(timeout=60)
    assert not canceller.is_alive(), "the DirectRunner did not stop within a minute"


def test_published_messages_come_back_with_their_attributes(pubsub_emulator):
    topic = pubsub_emulator.create_topic("roundtrip-trips")
    subscription = pubsub_emulator.create_subscription("roundtrip-trips-sub", topic)

    batch_ids = pubsub_emulator.publish_many(topic, TRIPS)
    single_id = pubsub_emulator.publish(topic, b"trip-5", zone="3")
    pulled = pubsub_emulator.pull_all(subscription, max_wait_seconds=10)

    assert len(set(batch_ids) | {single_id}) == len(TRIPS) + 1
    assert by_data(pulled) == by_data(
        [PulledMessage(data, attributes) for data, attributes in TRIPS]
        + [PulledMessage(b"trip-5", {"zone": "3"})]
    )


def test_clients_in_the_block_point_at_the_emulator(pubsub_emulator):
    assert os.environ[EMULATOR_HOST_VARIABLE] == pubsub_emulator.host
    with pytest.raises(api_exceptions.NotFound, match="out of valid projects"):
        # Only the fixture's project exists, so a wrong project cannot pass unnoticed.
        pubsub_emulator.publisher.create_topic(name="projects/other-project/topics/trips")


@pytest.mark.skipif(missing_prerequisite() is not None, reason=str(missing_prerequisite()))
def test_leaving_the_block_stops_the_emulator_and_restores_the_variable(monkeypatch):
    monkeypatch.setenv(EMULATOR_HOST_VARIABLE, "previous-host:1")

    with running_emulator(project="lifecycle-project") as emulator:
        assert os.environ[EMULATOR_HOST_VARIABLE] == emulator.host
        assert emulator.create_topic("lifecycle-trips") == (
            "projects/lifecycle-project/topics/lifecycle-trips"
        )

    assert os.environ[EMULATOR_HOST_VARIABLE] == "previous-host:1"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with pytest.raises(urllib.error.URLError):
        opener.open(f"http://{emulator.host}/", timeout=2)


def test_direct_runner_reads_and_writes_pubsub_through_the_emulator(pubsub_emulator):
    input_topic = pubsub_emulator.create_topic("beam-input-trips")
    input_subscription = pubsub_emulator.create_subscription("beam-input-trips-sub", input_topic)
    output_topic = pubsub_emulator.create_topic("beam-output-trips")
    output_subscription = pubsub_emulator.create_subscription("beam-output-trips-sub", output_topic)

    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    pipeline = beam.Pipeline(runner="BundleBasedDirectRunner", options=options)
    (
        pipeline
        | "ReadTrips"
        >> beam.io.ReadFromPubSub(subscription=input_subscription, with_attributes=True)
        | "UpperCaseData" >> beam.Map(upper_case_data)
        | "WriteTrips" >> beam.io.WriteToPubSub(output_topic, with_attributes=True)
    )
    # A streaming pipeline never finishes, so `with pipeline:` would block forever.
    result = pipeline.run()
    try:
        pubsub_emulator.publish_many(input_topic, TRIPS)
        # The first output needs the runner's start-up plus one read bundle; a minute
        # leaves room for a slow machine without hiding a pipeline that never writes.
        pulled = pubsub_emulator.pull_all(
            output_subscription, max_wait_seconds=60, expected_count=len(TRIPS)
        )
    finally:
        cancel_pipeline(result, pubsub_emulator, input_topic)

    assert by_data(pulled) == by_data(
        [PulledMessage(data.upper(), attributes) for data, attributes in TRIPS]
    )
