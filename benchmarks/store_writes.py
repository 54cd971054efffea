"""Online-store writes per second of the streaming job, on the Bigtable emulator.

    python -m benchmarks.store_writes [--events 20000] [--entities 2000] [--span 600]

Starts Google's Bigtable emulator (cbtemulator) on loopback, as the tests do
(tests/bigtable_emulator.py), makes a small batch run for the transform graph
(not timed), then streams --events synthetic events of --entities zones,
spread over --span seconds of event time, through pipeline.stream's real
graph (TestStream input, the local streaming runner) with the store on, and
times two things:

  job         the whole streaming job with the store, wall time around its run;
  write_step  the same cells written again by the store's write step alone
              (transforms.online_store.direct_row and Beam's WriteToBigTable,
              on the local batch runner), to another table.

Prints one JSON line: the cells the job wrote (read back from the emulator:
a retried write overwrites its cell, so this counts each once; the local
streaming runner's counters undercount), the cells the write step alone wrote
(the connector's counter), and cells per wall second of each. The emulator
keeps everything in memory and runs on the same cores, so these figures bound
the client side (connector, mutation batching, gRPC), not a Bigtable cluster.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sys
import tempfile
import time

import yaml

START = 1_767_225_600  # 2026-01-01T00:00:00Z
LATENESS = 10
BATCH_RUN_EVENTS = 2000
JOB_TABLE = "stream_writes"
WRITE_TABLE = "write_step"


def synthetic_events(count: int, entities: int, span: int, seed: int = 1) -> list[dict]:
    generator = random.Random(seed)
    return sorted(
        (
            {
                "id": f"e{index:08d}",
                "when": START + generator.randrange(span),
                "zone": f"z{generator.randrange(entities):06d}",
                "x": generator.randrange(400) / 4,
                "y": round(generator.uniform(-5, 5), 3),
            }
            for index in range(count)
        ),
        key=lambda event: event["when"],
    )


def _utc(seconds: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))


def batch_run(spec_path: str, events: list[dict], work_dir: str) -> str:
    """A pipeline.preprocess run over the first events: the stream's transform_dir."""
    from pipeline import preprocess

    csv_path = os.path.join(work_dir, "history.csv")
    with open(csv_path, "w") as handle:
        handle.write("id,when,zone,x,y\n")
        for e in events[:BATCH_RUN_EVENTS]:
            handle.write(f"{e['id']},{_utc(e['when'])},{e['zone']},{e['x']},{e['y']}\n")
    out = os.path.join(work_dir, "batch")
    argv = ["--spec", spec_path, "--input", csv_path, "--output_dir", out]
    # Its summary goes to stderr: stdout is the result's one JSON line.
    with contextlib.redirect_stdout(sys.stderr):
        code = preprocess.run([*argv, "--direct_num_workers", "1"])
    if code != 0:
        raise RuntimeError("the batch run for the transform graph failed")
    return out


def _messages(events: list[dict]):
    """A TestStream of the events, one step per second of event time, on time."""
    from apache_beam.io.gcp.pubsub import PubsubMessage
    from apache_beam.testing.test_stream import TestStream
    from apache_beam.transforms.window import TimestampedValue

    stream = TestStream().advance_watermark_to(START - 1)
    second, pending = None, []
    for event in [*events, None]:
        if event is None or event["when"] != second:
            if pending:
                stream = stream.add_elements(pending).advance_watermark_to(second)
            if event is None:
                break
            second, pending = event["when"], []
        document = json.dumps({**event, "when": _utc(event["when"])}).encode()
        pending.append(TimestampedValue(PubsubMessage(document, {}), event["when"]))
    return stream.advance_watermark_to_infinity()


def _written_rows(result) -> int:
    """The Bigtable connector's count of the rows (here: cells) it wrote."""
    from apache_beam.metrics.metric import MetricsFilter

    counters = result.metrics().query(MetricsFilter().with_name("Written Row"))["counters"]
    return sum(counter.committed or 0 for counter in counters)


def time_stream_job(spec_path, transform_dir, output_dir, events, emulator) -> float:
    """Wall seconds of the streaming job with the store. What it wrote is read
    back from the emulator: the local streaming runner's counters undercount
    (the connector's 'Written Row' reported 12 of 128 cells)."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    from pipeline import stream
    from pipeline.options import create_online_store_if_missing
    from schemas.spec import load_spec

    spec = load_spec(spec_path)
    argv = ["--spec", spec_path, "--transform_dir", transform_dir, "--output_dir", output_dir]
    argv += ["--input_topic", "projects/bench/topics/events", "--allowed_lateness"]
    argv += [f"{LATENESS}s", *emulator.store_flags(JOB_TABLE)]
    options = PipelineOptions(argv)
    options.view_as(StandardOptions).streaming = True
    problems = stream.validate_stream_options(options)
    if problems:
        raise ValueError("; ".join(problems))
    create_online_store_if_missing(options, spec)
    messages = _messages(events)
    pipeline = beam.Pipeline(runner="BundleBasedDirectRunner", options=options)
    stream.build_pipeline(pipeline, options, spec, messages=pipeline | messages)
    started = time.perf_counter()
    pipeline.run().wait_until_finish()
    return time.perf_counter() - started


def time_write_step(cells, spec, emulator) -> tuple[float, int]:
    """(wall seconds, cells written) of the store's write step alone over `cells`."""
    import apache_beam as beam
    from apache_beam.io.gcp.bigtableio import WriteToBigTable

    from transforms.online_store import StoreTable, direct_row, ensure_table

    store = StoreTable(emulator.project, emulator.instance, WRITE_TABLE)
    ensure_table(store, spec, 7 * 86400)
    pipeline = beam.Pipeline(runner="FnApiRunner")
    _ = (
        pipeline
        | "Cells" >> beam.Create(cells)
        | "Mutations" >> beam.Map(direct_row)
        | "WriteToBigtable" >> WriteToBigTable(store.project, store.instance, store.table)
    )
    started = time.perf_counter()
    result = pipeline.run()
    result.wait_until_finish()
    return time.perf_counter() - started, _written_rows(result)


def stored_cells(emulator, table: str) -> list:
    """Every cell of `table` as transforms.online_store.Cell."""
    from transforms.online_store import MICROS, Cell

    return [
        Cell(key, stamp // MICROS, value)
        for key, row in emulator.read_all(table).items()
        for stamp, value in row
    ]


def measure(events: int, entities: int, span: int, work_dir: str, emulator) -> dict:
    """Runs both measurements against a running emulator; the result's JSON fields."""
    from schemas.spec import load_spec
    from tests.support import ZONES_SPEC_DOCUMENT

    spec_path = os.path.join(work_dir, "zones.yaml")
    with open(spec_path, "w") as handle:
        yaml.safe_dump(ZONES_SPEC_DOCUMENT, handle)
    spec = load_spec(spec_path)
    generated = synthetic_events(events, entities, span)
    transform_dir = batch_run(spec_path, generated, work_dir)
    job_seconds = time_stream_job(
        spec_path, transform_dir, os.path.join(work_dir, "stream"), generated, emulator
    )
    cells = stored_cells(emulator, JOB_TABLE)
    write_seconds, write_cells = time_write_step(cells, spec, emulator)
    return {
        "benchmark": "store_writes",
        "events": events,
        "entities": entities,
        "span_seconds": span,
        "table": JOB_TABLE,
        "cells_written": len(cells),
        "job_seconds": round(job_seconds, 3),
        "job_cells_per_second": round(len(cells) / job_seconds, 1),
        "write_step_cells": write_cells,
        "write_step_seconds": round(write_seconds, 3),
        "write_step_cells_per_second": round(write_cells / write_seconds, 1),
    }


def main(argv: list[str] | None = None) -> int:
    from tests.bigtable_emulator import missing_prerequisite, running_bigtable_emulator

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="Events to stream.")
    parser.add_argument("--entities", type=int, default=2_000, help="Distinct entity keys.")
    parser.add_argument("--span", type=int, default=600, help="Seconds of event time.")
    args = parser.parse_args(argv)
    if min(args.events, args.entities, args.span) < 1:
        parser.error("--events, --entities and --span must be positive")
    missing = missing_prerequisite()
    if missing:
        print(f"error: {missing}", file=sys.stderr)
        return 2
    with (
        tempfile.TemporaryDirectory(prefix="store_writes_") as work_dir,
        running_bigtable_emulator() as emulator,
    ):
        result = measure(args.events, args.entities, args.span, work_dir, emulator)
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
