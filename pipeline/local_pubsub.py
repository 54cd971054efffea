"""Short Pub/Sub pulls for the local streaming runner (the Python DirectRunner).

The DirectRunner reads Pub/Sub with one blocking pull of up to 30 s and 10
messages per bundle, on the runner's only worker thread. When the subscription
is idle, every step of the pipeline then waits for that pull, so each window
needs one 30 s round per GroupByKey on its way to the files: minutes per window
for this job (apache/beam#25442, open). Running more worker threads is not an
option: the DirectRunner's executor fails with them.

`use_short_pulls()` replaces the DirectRunner's pull with one that waits at most
LOCAL_PULL_TIMEOUT_SECONDS and takes up to LOCAL_PULL_MAX_MESSAGES. Everything
else stays the DirectRunner's: the watermark is the wall clock, and messages are
acknowledged when pulled (so a cancelled local run loses the messages of windows
that had not closed). Only pipeline.stream's local runs call it; Dataflow reads
Pub/Sub with its own native source.
"""

from __future__ import annotations

LOCAL_PULL_TIMEOUT_SECONDS = 2.0
LOCAL_PULL_MAX_MESSAGES = 500


def _pull_briefly(evaluator, timestamp_attribute):
    """(timestamp, PubsubMessage) pairs from one short pull, acknowledged."""
    from apache_beam.io.gcp.pubsub import PubsubMessage
    from apache_beam.utils.timestamp import Timestamp
    from google.api_core import exceptions
    from google.cloud import pubsub

    if timestamp_attribute:
        # pipeline.stream parses event time itself and never sets this.
        raise ValueError("short local pulls do not support timestamp_attribute")
    client = pubsub.SubscriberClient()
    try:
        try:
            response = client.pull(
                subscription=evaluator._sub_name,
                max_messages=LOCAL_PULL_MAX_MESSAGES,
                timeout=LOCAL_PULL_TIMEOUT_SECONDS,
            )
        except exceptions.DeadlineExceeded:
            return []
        results = []
        for received in response.received_messages:
            message = received.message
            element = PubsubMessage(
                message.data,
                dict(message.attributes),
                message_id=message.message_id,
                publish_time=message.publish_time,
            )
            results.append((Timestamp.from_utc_datetime(message.publish_time), element))
        if response.received_messages:
            client.acknowledge(
                subscription=evaluator._sub_name,
                ack_ids=[received.ack_id for received in response.received_messages],
            )
        return results
    finally:
        client.close()


def use_short_pulls() -> None:
    """Makes the DirectRunner's Pub/Sub reads short (see the module docstring)."""
    from apache_beam.runners.direct import transform_evaluator

    transform_evaluator._PubSubReadEvaluator._read_from_pubsub = _pull_briefly
