"""The streaming job on a spec without event time or key (issue 18): each
message's record key is its message id and its event time its publish time;
admission and lateness apply to that time, and the examples equal the batch
job's for the same rows."""

from __future__ import annotations

import datetime as dt
import json
import os
import random

import numpy as np
import pytest
import yaml

from tests.stream_scenario import read_jsonl

pytestmark = pytest.mark.slow

START = 1_767_225_600  # 2026-01-01T00:00:00Z
LATENESS = 20
SPEC_DOCUMENT = {
    "name": "plain_zones",
    "null_tokens": ["NA"],
    "columns": [
        {"name": "zone", "type": "string"},
        {"name": "x", "type": "float", "required": False},
        {"name": "y", "type": "float"},
    ],
    "label": "y",
    "features": [
        {"name": "x_z", "source": "x",
         "transform": [{"fill_missing": {"value": 0.0}}, "scale_to_z_score"]},
        {"name": "zone_id", "source": "zone", "transform": "vocabulary"},
    ],
}  # fmt: skip


def make_events(count: int) -> list[dict]:
    generator = random.Random(3)
    return [
        {
            "zone": generator.choice(["north", "south", "east"]),
            "x": None if i % 5 == 0 else round(generator.uniform(0, 100), 3),
            "y": round(generator.uniform(-5, 5), 3),
        }
        for i in range(count)
    ]


@pytest.fixture(scope="module")
def batch_run(tmp_path_factory):
    from pipeline import preprocess

    root = tmp_path_factory.mktemp("plain_stream")
    spec_path = root / "plain.yaml"
    spec_path.write_text(yaml.safe_dump(SPEC_DOCUMENT))
    events = make_events(200)
    csv_path = root / "events.csv"
    lines = ["zone,x,y"] + [
        f"{e['zone']},{'NA' if e['x'] is None else e['x']},{e['y']}" for e in events
    ]
    csv_path.write_text("\n".join(lines) + "\n")
    out = root / "batch"
    argv = ["--spec", str(spec_path), "--input", str(csv_path), "--output_dir", str(out),
            "--write_raw_features", "--direct_num_workers", "1"]  # fmt: skip
    assert preprocess.run(argv) == 0
    # Line i of the events sits at this byte offset: its derived batch key.
    offsets, position = [], len(lines[0]) + 1
    for line in lines[1:]:
        offsets.append(f"{csv_path}:{position}")
        position += len(line) + 1
    return spec_path, events, out, offsets


@pytest.fixture(scope="module")
def stream_run(batch_run, tmp_path_factory):
    from apache_beam.io.gcp.pubsub import PubsubMessage
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.test_stream import TestStream
    from apache_beam.transforms.window import TimestampedValue

    from pipeline import stream
    from schemas.spec import load_spec

    spec_path, events, batch_out, _ = batch_run
    output_dir = tmp_path_factory.mktemp("stream_out")
    options = PipelineOptions(
        ["--spec", str(spec_path), "--transform_dir", str(batch_out),
         "--output_dir", str(output_dir), "--input_topic", "projects/test/topics/events",
         "--allowed_lateness", f"{LATENESS}s", "--file_window", "60s", "--write_raw_features"]
    )  # fmt: skip
    options.view_as(StandardOptions).streaming = True

    def message(index: int, published: int) -> TimestampedValue:
        body = json.dumps(events[index]).encode()
        publish_time = dt.datetime.fromtimestamp(published, dt.UTC)
        element = PubsubMessage(body, {}, message_id=f"m{index}", publish_time=publish_time)
        # Beam's Pub/Sub source stamps each element with its publish time.
        return TimestampedValue(element, published)

    test_stream = TestStream().advance_watermark_to(START - 1)
    for index in range(len(events)):
        test_stream = test_stream.add_elements([message(index, START + index)])
        if index % 10 == 9:
            test_stream = test_stream.advance_watermark_to(START + index)
    # Published (as a replayed or delayed publisher might stamp it) long before
    # the watermark: past the allowed lateness, so a late dead letter.
    test_stream = test_stream.add_elements([message(0, START + 5)]).advance_watermark_to_infinity()
    with TestPipeline(runner="BundleBasedDirectRunner", options=options) as p:
        stream.build_pipeline(p, options, load_spec(str(spec_path)), messages=p | test_stream)
    return output_dir


def test_stream_rows_are_keyed_by_message_id_at_publish_time(batch_run, stream_run):
    _, events, _, _ = batch_run
    rows = read_jsonl(os.path.join(stream_run, "raw_features", "*.jsonl"))
    by_key = {row["__record_key__"]: row for row in rows}
    assert len(by_key) == len(rows) == len(events)
    for index, event in enumerate(events):
        row = by_key[f"m{index}"]
        assert row["__event_time__"] == START + index
        assert (row["zone"], row["x"], row["y"]) == (event["zone"], event["x"], event["y"])


def test_a_message_published_too_late_is_a_late_dead_letter(stream_run):
    dead = read_jsonl(os.path.join(stream_run, "dead_letter", "*.jsonl"))
    assert [d["reason"][:5] for d in dead] == ["late:"]
    assert json.loads(dead[0]["line"])["__record_key__"] == "m0"


def test_stream_examples_equal_batch_examples_row_for_row(batch_run, stream_run):
    import tensorflow_transform as tft

    from pipeline.verify_skew import batch_examples

    _, events, batch_out, offsets = batch_run
    feature_spec = tft.TFTransformOutput(str(batch_out)).transformed_feature_spec()
    batch = batch_examples(str(batch_out), "__record_key__", feature_spec, set(offsets))
    live_keys = {f"m{i}" for i in range(len(events))}
    live = batch_examples(str(stream_run), "__record_key__", feature_spec, live_keys)
    assert set(batch) == set(offsets) and set(live) == live_keys
    for index, offset in enumerate(offsets):
        for name in feature_spec:
            np.testing.assert_allclose(
                live[f"m{index}"][name], batch[offset][name], rtol=1e-6, atol=1e-6
            )
