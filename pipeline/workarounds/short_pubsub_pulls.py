"""Short Pub/Sub pulls for the local streaming runner (the Python DirectRunner).

The DirectRunner reads Pub/Sub with one blocking pull of up to 30 s and 10
messages per bundle, on the runner's only worker thread. When the subscription
is idle, every step of the pipeline then waits for that pull, so each window
needs one 30 s round per GroupByKey on its way to the files: minutes per window
for this job (apache/beam#25442, open). Running more worker threads is not an
option: the DirectRunner's executor fails with them.

This workaround replaces the DirectRunner's pull (the private
`_PubSubReadEvaluator._read_from_pubsub`, which reads the private `_sub_name`)
with one that waits at most LOCAL_PULL_TIMEOUT_SECONDS and takes up to
LOCAL_PULL_MAX_MESSAGES. Measured gain: a window reaches its files in seconds
instead of minutes (tests/test_stream_pipeline.py would take hours without it).
On a Beam release where those internals moved it turns itself off with one
warning (pipeline.workarounds.guard), and local streaming runs are slow again. Everything
else stays the DirectRunner's: the watermark is the wall clock, and messages are
acknowledged when pulled (so a cancelled local run loses the messages of windows
that had not closed). Only pipeline.stream's local runs apply it, for the run;
Dataflow reads Pub/Sub with its own native source.
"""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.workarounds.guard import (
    Patch,
    Workaround,
    missing_attributes,
    missing_in_source,
    missing_parameters,
)

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


class ShortPubsubPulls(Workaround):
    name = "short_pubsub_pulls"
    summary = "the local streaming runner pulls Pub/Sub briefly instead of for 30 s"

    def missing_internals(self) -> list[str]:
        from apache_beam.runners.direct import transform_evaluator

        evaluator = getattr(transform_evaluator, "_PubSubReadEvaluator", None)
        if evaluator is None:
            return ["transform_evaluator._PubSubReadEvaluator"]
        missing = missing_attributes(evaluator, ["_read_from_pubsub"])
        if missing:
            return missing
        return missing_parameters(
            evaluator._read_from_pubsub,
            ["self", "timestamp_attribute"],
            "_PubSubReadEvaluator._read_from_pubsub",
        ) + missing_in_source(evaluator.__init__, ["self._sub_name"], "_PubSubReadEvaluator")

    def patches(self) -> Sequence[Patch]:
        from apache_beam.runners.direct import transform_evaluator

        return [Patch(transform_evaluator._PubSubReadEvaluator, "_read_from_pubsub", _pull_briefly)]
