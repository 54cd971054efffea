"""Replays CSV rows into a Pub/Sub topic as live JSON events, for trying
pipeline.stream locally (against the emulator) or on a test topic.

    PUBSUB_EMULATOR_HOST=localhost:8085 python -m pipeline.replay \\
        --spec schemas/taxi.yaml --input data/taxi.csv \\
        --topic projects/local/topics/trips --create_subscription trips-stream \\
        [--rate 50] [--limit 5000]

Each valid row of the CSV (validated with the spec, as batch does) becomes one
JSON message of the spec's columns. Its event time is replaced by the time it is
published, as a live event's would be (a spec without timestamp_column takes the
publish time as event time anyway, and a derived record key is left out: the
stream derives its own from the message id); rows the spec rejects are skipped and
counted. --create_subscription creates the topic and a pull subscription on it
before the first message, so no message is published into the void.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import sys
import time

from schemas.spec import RECORD_KEY, SpecError, load_spec
from transforms.csv_source import InputError, discover_layouts
from transforms.validation import LineParser

CHUNK_LINES = 1000


def typed_rows(spec, path: str, limit: int | None):
    """Valid rows of one CSV file as dicts, in file order, and the count rejected."""
    layouts = discover_layouts([path], spec)
    parser = LineParser(spec, layouts)
    source = next(iter(layouts))
    rejected = 0
    rows = []
    with open(path, "rb") as handle:
        chunk = []
        offset = 0
        for line in handle:
            # With the line's byte offset, which a derived record key needs.
            chunk.append((source, line.rstrip(b"\n"), offset))
            offset += len(line)
            if len(chunk) == CHUNK_LINES:
                parsed = parser.parse(chunk)
                rows.extend(parsed.valid.to_pylist())
                rejected += len(parsed.dead_letters)
                chunk = []
            if limit and len(rows) >= limit:
                break
        if chunk:
            parsed = parser.parse(chunk)
            rows.extend(parsed.valid.to_pylist())
            rejected += len(parsed.dead_letters)
    return rows[:limit] if limit else rows, rejected


def live_message(
    row: dict, timestamp_column: str | None, now: float, source_names: dict | None = None
) -> bytes:
    """The row as the streaming job's JSON message, stamped `now`; keys are the
    input's own names (`source_names`: spec name -> a column's `header`)."""
    stamped = {name: value for name, value in row.items() if name != RECORD_KEY}
    if timestamp_column is not None:
        stamped[timestamp_column] = dt.datetime.fromtimestamp(int(now), dt.UTC).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
    names = source_names or {}
    return json.dumps({names.get(name, name): value for name, value in stamped.items()}).encode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", required=True, help="Dataset spec YAML.")
    parser.add_argument("--input", required=True, help="A local CSV file in the spec's layout.")
    parser.add_argument("--topic", required=True, help="projects/P/topics/T to publish to.")
    parser.add_argument(
        "--create_subscription",
        default=None,
        help="Create the topic and this pull subscription (name only) first, if missing.",
    )
    parser.add_argument("--rate", type=float, default=50.0, help="Messages per second.")
    parser.add_argument("--limit", type=int, default=None, help="Publish at most this many.")
    args = parser.parse_args(argv)
    try:
        spec = load_spec(args.spec)
        rows, rejected = typed_rows(spec, args.input, args.limit)
    except (SpecError, InputError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.rate <= 0:
        print("error: --rate must be positive", file=sys.stderr)
        return 2

    from google.api_core import exceptions
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient()
    if args.create_subscription:
        project = args.topic.split("/")[1]
        subscriber = pubsub_v1.SubscriberClient()
        subscription = subscriber.subscription_path(project, args.create_subscription)
        for create in (
            lambda: publisher.create_topic(name=args.topic),
            lambda: subscriber.create_subscription(name=subscription, topic=args.topic),
        ):
            with contextlib.suppress(exceptions.AlreadyExists):
                create()
        print(f"subscription {subscription}")
    source_names = {c.name: c.source_name for c in spec.columns if c.header is not None}
    started = time.time()
    futures = []
    for index, row in enumerate(rows):
        # Pace by the schedule, not by sleeping a fixed interval, so slow
        # publishes do not lower the rate.
        delay = started + index / args.rate - time.time()
        if delay > 0:
            time.sleep(delay)
        message = live_message(row, spec.timestamp_column, time.time(), source_names)
        futures.append(publisher.publish(args.topic, message))
    for future in futures:
        future.result(timeout=60)
    print(
        f"published {len(rows)} events in {time.time() - started:.1f} s to {args.topic}; "
        f"{rejected} rows of the file failed validation and were skipped"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
