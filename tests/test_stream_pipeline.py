"""The whole streaming job under TestStream, checked against the batch job on the
same events: identical aggregate values and transformed features for every key,
and every malformed message in dead letters with a reason."""

from __future__ import annotations

import glob
import json
import os
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from tests.support import ZONES_SPEC_DOCUMENT

START = 1_767_225_600  # 2026-01-01T00:00:00Z
LATENESS = 20


def make_events(count: int, seed: int = 7) -> list[dict]:
    generator = random.Random(seed)
    return [
        {
            "id": f"e{i:04d}",
            "when": START + generator.randrange(0, 300),
            "zone": generator.choice(["north", "south", "east"]),
            "x": round(generator.uniform(0, 100), 3),
            "y": round(generator.uniform(-5, 5), 3),
        }
        for i in range(count)
    ]


def utc(seconds: int) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))


@pytest.fixture(scope="module")
def batch_run(tmp_path_factory):
    """The spec file, the events, and a batch run over them (the transform_dir)."""
    from pipeline import preprocess

    root = tmp_path_factory.mktemp("parity")
    spec_path = root / "zones.yaml"
    spec_path.write_text(yaml.safe_dump(ZONES_SPEC_DOCUMENT))
    events = make_events(400)
    csv_path = root / "events.csv"
    lines = ["id,when,zone,x,y"] + [
        f"{e['id']},{utc(e['when'])},{e['zone']},{e['x']},{e['y']}" for e in events
    ]
    csv_path.write_text("\n".join(lines) + "\n")
    out = root / "batch"
    code = preprocess.run(
        [
            "--spec",
            str(spec_path),
            "--input",
            str(csv_path),
            "--output_dir",
            str(out),
            "--write_raw_features",
        ]
    )
    assert code == 0
    return spec_path, events, out


def message(data: bytes, **attributes):
    from apache_beam.io.gcp.pubsub import PubsubMessage

    return PubsubMessage(data, attributes)


def _body(**fields) -> bytes:
    document = {"id": "m", "when": utc(START + 5), "zone": "a", "x": 1, "y": 0, **fields}
    return json.dumps(document).encode()


# Each malformed message and the exact reason of its dead letter.
MALFORMED = [
    (b"{not json", "invalid JSON: Expecting property name enclosed in double quotes"),
    (b"[1, 2]", "message is an array, not a JSON object"),
    (_body(zone=7), "zone: expected a string, got a number"),
    (_body(x=500), "x: 500 is above max 100"),
    (_body(when=None), "when: required value is missing"),
    (_body(when="yesterday"), "when: 'yesterday' is not a timestamp"),
    (_body(y=True), "y: expected a number, got a boolean"),
    (b"\xff\xfe", "invalid UTF-8 at byte 0"),
]


def stream_options(spec_path, transform_dir, output_dir):
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    options = PipelineOptions(
        [
            "--spec",
            str(spec_path),
            "--transform_dir",
            str(transform_dir),
            "--output_dir",
            str(output_dir),
            "--input_topic",
            "projects/test/topics/events",
            "--allowed_lateness",
            f"{LATENESS}s",
            "--file_window",
            "60s",
            "--write_raw_features",
        ]
    )
    options.view_as(StandardOptions).streaming = True
    return options


def run_stream(spec_path, transform_dir, output_dir, events, malformed):
    """Runs pipeline.stream's graph on a TestStream of the events, in event-time
    order with jitter inside the allowed lateness, malformed messages among them."""
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.test_stream import TestStream
    from apache_beam.transforms.window import TimestampedValue

    from pipeline import stream
    from schemas.spec import load_spec

    spec = load_spec(str(spec_path))
    options = stream_options(spec_path, transform_dir, output_dir)
    generator = random.Random(1)
    ordered = sorted(events, key=lambda e: e["when"] + generator.uniform(0, LATENESS - 2))
    test_stream = TestStream().advance_watermark_to(START - 1)
    watermark = START - 1
    for index, event in enumerate(ordered):
        document = json.dumps({**event, "when": utc(event["when"])}).encode()
        # Pub/Sub stamps publish time; parsing must replace it with event time.
        elements = [TimestampedValue(message(document), event["when"] + LATENESS // 2)]
        if index % 50 == 0 and malformed:
            data, _ = malformed.pop()
            elements.append(TimestampedValue(message(data), event["when"]))
        test_stream = test_stream.add_elements(elements)
        if event["when"] - LATENESS // 2 > watermark:
            watermark = event["when"] - LATENESS // 2
            test_stream = test_stream.advance_watermark_to(watermark)
    assert not malformed, "every malformed message must be sent"
    test_stream = test_stream.advance_watermark_to_infinity()
    with TestPipeline(runner="BundleBasedDirectRunner", options=options) as p:
        stream.build_pipeline(p, options, spec, messages=p | test_stream)
    return spec


def read_jsonl(pattern):
    records = []
    for path in sorted(glob.glob(pattern)):
        with open(path) as handle:
            records.extend(json.loads(line) for line in handle if line.strip())
    return records


@pytest.fixture(scope="module")
def stream_run(batch_run, tmp_path_factory):
    spec_path, events, batch_out = batch_run
    output_dir = tmp_path_factory.mktemp("stream")
    spec = run_stream(spec_path, batch_out, output_dir, events, list(MALFORMED))
    return spec, output_dir


def test_every_malformed_message_is_a_dead_letter_with_its_reason(stream_run):
    _, output_dir = stream_run
    dead = read_jsonl(os.path.join(output_dir, "dead_letter", "*.jsonl"))
    assert sorted(d["reason"] for d in dead) == sorted(reason for _, reason in MALFORMED)
    assert all(d["source"] == "pubsub" for d in dead)


def test_stream_aggregates_equal_batch_aggregates_for_every_key(batch_run, stream_run):
    _, events, batch_out = batch_run
    spec, output_dir = stream_run
    live = {r["id"]: r for r in read_jsonl(os.path.join(output_dir, "raw_features", "*.jsonl"))}
    batch = pa.concat_tables(
        pq.read_table(p) for p in glob.glob(os.path.join(batch_out, "raw_features", "*", "*"))
    ).to_pylist()
    assert len(live) == len(events) == len(batch)
    # Most rows have earlier rows of their zone, so the comparison is not of defaults.
    assert sum(row["n_60s"] > 0 for row in batch) > len(batch) // 2
    for row in batch:
        for aggregate in spec.aggregates:
            assert live[row["id"]][aggregate.name] == pytest.approx(
                row[aggregate.name], rel=1e-12
            ), (row["id"], aggregate.name)


def test_stream_examples_equal_batch_examples_for_every_key(batch_run, stream_run):
    import tensorflow_transform as tft

    from pipeline.verify_skew import batch_examples

    _, events, batch_out = batch_run
    spec, output_dir = stream_run
    feature_spec = tft.TFTransformOutput(str(batch_out)).transformed_feature_spec()
    keys = {e["id"] for e in events}
    batch = batch_examples(str(batch_out), spec.key_column, feature_spec, keys)
    live = batch_examples(str(output_dir), spec.key_column, feature_spec, keys)
    assert set(batch) == set(live) == keys
    paths = glob.glob(os.path.join(output_dir, "examples", "part-*.tfrecord.gz"))
    assert paths and all("T" in os.path.basename(p) for p in paths), "files are named by window"
    for key in keys:
        for name in feature_spec:
            np.testing.assert_allclose(live[key][name], batch[key][name], rtol=1e-6, atol=1e-6)


def test_stream_refuses_a_transform_dir_of_another_spec(batch_run, tmp_path):
    from pipeline import stream

    spec_path, _, batch_out = batch_run
    other = dict(ZONES_SPEC_DOCUMENT, name="other")
    other_path = tmp_path / "other.yaml"
    other_path.write_text(yaml.safe_dump(other))
    argv = [
        "--spec",
        str(other_path),
        "--transform_dir",
        str(batch_out),
        "--output_dir",
        str(tmp_path / "out"),
        "--input_subscription",
        "projects/p/subscriptions/s",
    ]
    assert stream.run(argv) == 2
    argv[3] = str(tmp_path)  # a directory without a manifest
    argv[1] = str(spec_path)
    assert stream.run(argv) == 2
    assert not (tmp_path / "out").exists()
