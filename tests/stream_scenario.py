"""A live run of `pipeline.stream` against the Pub/Sub emulator, checked end to end.

    python -m tests.stream_scenario --spec schemas/taxi.yaml --transform_dir BATCH_OUT \\
        --events 5000 --allowed_lateness 120 [--work_dir DIR]

Publishes events built from sample rows, with event times shifted to around the
current time, as live events are: most in the current admission window, a few
hundred in windows that have already closed but within the allowed lateness,
a few beyond it, and some malformed messages. Then waits until every window has
closed, stops the pipeline with SIGTERM and checks:

- every event within the allowed lateness is in the output TFRecords exactly
  once, and nothing else is;
- every event beyond it is a dead letter with reason 'late', every malformed
  message a dead letter with its reason;
- a batch run (pipeline.preprocess) over the admitted events gives the same
  aggregate values for every key, and the batch run's rows through the
  transform graph give the same transformed features as the stream wrote;
- the output topic carried one example per admitted key and the aggregates;
- with an online store (`run_scenario(..., store=BigtableEmulator)`), the
  stream's cells of every period before the last admission window's end are
  the cells `pipeline.materialize` writes from that batch run.

The DirectRunner's Pub/Sub watermark is the wall clock, so which events are
late depends on when the pipeline reads them; the plan leaves a safety margin
on each side of every boundary (`read_margin`).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as dt
import glob
import json
import math
import os
import random
import signal
import subprocess
import sys
import time

from tests.support import poll, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass
class Plan:
    """Which messages are sent, and what must become of each."""

    admitted: list[dict]  # valid events that must reach the output exactly once
    beyond: list[dict]  # valid events later than the allowed lateness
    malformed: list[tuple[bytes, str]]  # message body and the start of its reason
    last_window_end: int  # end of the latest admission window with admitted events
    late_admitted: int  # how many admitted events arrive after their window closed


def sample_rows(spec, count: int, seed: int) -> list[dict]:
    """Rows of the spec's columns with JSON-typed values (timestamps are set by the
    plan): from the sample generator for the taxi layout, else random values
    within each column's range."""
    from pipeline.sample_data import HEADER, generate_rows

    if spec.column_names == list(HEADER):
        records = generate_rows(count, seed, messy_fraction=0.0)
    else:
        generator = random.Random(seed)
        records = [
            [_random_field(spec, column, i, generator) for column in spec.columns]
            for i in range(count)
        ]
    return typed_records(spec, records)


def typed_records(spec, records: list[list[str]]) -> list[dict]:
    """CSV field texts in spec order -> typed row dicts, by the project's own
    validator (timestamps as epoch seconds, defaults applied)."""
    from transforms.records import Fields
    from transforms.validation import RowValidator

    texts = [",".join(record) for record in records]
    fields = Fields.from_rows(["sample"] * len(records), texts, records, len(spec.columns))
    valid, rejected = RowValidator(spec).validate(fields)
    if rejected:
        raise ValueError(f"sample rows failed validation: {rejected[:3]}")
    return valid.to_pylist()


def _random_field(spec, column, index: int, generator: random.Random) -> str:
    from schemas.spec import ColumnType

    if column.name == spec.key_column:
        return f"k{index:06d}"
    if column.type is ColumnType.TIMESTAMP:
        return "0"
    if column.allowed:
        return str(generator.choice(column.allowed))
    if column.type is ColumnType.STRING:
        return generator.choice(["north", "south", "east", "west"])
    low = column.min if column.min is not None else 0.0
    high = column.max if column.max is not None else 100.0
    if column.type is ColumnType.INT:
        return str(generator.randint(int(low), int(high)))
    return f"{generator.uniform(low, high):.4f}"


def make_plan(
    spec, rows: list[dict], now: float, lateness: int, read_margin: int, seed: int
) -> Plan:
    """Assigns event times around `now` and picks the late and malformed messages."""
    from transforms.admission import admission_window_seconds

    size = admission_window_seconds(spec)
    generator = random.Random(seed)
    current = int(now // size) * size  # start of the current admission window
    # Closed windows still admitted: end e with e <= now and e + lateness beyond
    # every read, i.e. e >= now - lateness + read_margin.
    closed_ends = [
        end
        for end in range(current, current - 100 * size, -size)
        if end >= now - lateness + read_margin
    ]
    if not closed_ends:
        raise ValueError("no closed window is within the lateness; wait for a window boundary")
    beyond_latest = int(now - lateness - read_margin)  # every window ending before this is late
    timestamp_column, key_column = spec.timestamp_column, spec.key_column
    late_count = max(1, len(rows) // 16)
    beyond_count = max(1, len(rows) // 200)
    admitted, beyond = [], []
    for index, row in enumerate(rows):
        row = dict(row)
        row[key_column] = f"{row[key_column]}-{index}"
        if index < late_count:
            end = generator.choice(closed_ends)
            row[timestamp_column] = generator.randrange(end - size, end)
            admitted.append(row)
        elif index < late_count + beyond_count:
            end = (beyond_latest // size) * size
            row[timestamp_column] = generator.randrange(end - 3 * size, end)
            beyond.append(row)
        else:
            row[timestamp_column] = generator.randrange(current, max(current + 1, int(now)))
            admitted.append(row)
    for row in admitted + beyond:
        row[timestamp_column] = _iso(row[timestamp_column])
    malformed = [
        (b"{truncated", "invalid JSON"),
        (b'"just a string"', "message is a string, not a JSON object"),
        (b"\xc3\x28", "invalid UTF-8"),
    ]
    template = dict(admitted[-1])
    for column in spec.columns:
        if column.required and column.name != key_column:
            broken = {**template, column.name: None, key_column: f"missing-{column.name}"}
            malformed.append(
                (json.dumps(broken).encode(), f"{column.name}: required value is missing")
            )
            break
    wrong_type = {**template, key_column: "wrong-type", timestamp_column: [1, 2]}
    malformed.append((json.dumps(wrong_type).encode(), f"{timestamp_column}: expected"))
    last_end = max((int(_seconds(row[timestamp_column])) // size + 1) * size for row in admitted)
    return Plan(admitted, beyond, malformed, last_end, late_count)


def _iso(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _seconds(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).timestamp())


def wait_for_window_start(spec, lateness: int, read_margin: int) -> float:
    """Sleeps, if needed, until a closed window is within the lateness with margin."""
    from transforms.admission import admission_window_seconds

    size = admission_window_seconds(spec)
    now = time.time()
    if now - (now // size) * size > lateness - read_margin:
        time.sleep(size - now % size + 1)
    return time.time()


def read_examples(directory: str, key_column: str) -> list[str]:
    """Record keys of every example under `directory`, duplicates included."""
    import tensorflow as tf

    keys = []
    for path in sorted(glob.glob(os.path.join(directory, "*.tfrecord.gz"))):
        for record in tf.data.TFRecordDataset(path, compression_type="GZIP"):
            example = tf.train.Example.FromString(record.numpy())
            keys.append(example.features.feature[key_column].bytes_list.value[0].decode())
    return keys


def read_jsonl(pattern: str) -> list[dict]:
    records = []
    for path in sorted(glob.glob(pattern)):
        with open(path) as handle:
            records.extend(json.loads(line) for line in handle if line.strip())
    return records


def run_scenario(
    emulator,
    spec_path: str,
    transform_dir: str,
    work_dir: str,
    events: int,
    lateness: int,
    read_margin: int,
    file_window: int,
    seed: int = 5,
    log=print,
    store=None,
    name_prefix: str = "",
) -> dict:
    """Runs the whole scenario; returns a report whose 'problems' list is empty on
    success. `store`, a running tests.bigtable_emulator.BigtableEmulator, turns
    the stream's online store on (table STREAM_TABLE). `name_prefix` starts the
    names of the topics and subscriptions, which must differ between the
    scenarios run on one emulator. The report's 'batch_rows' are the batch
    reference's rows of the admitted events, with their aggregates, and
    'late_keys' the keys of the events that arrived after their window closed
    but within the lateness."""
    from schemas.spec import load_spec

    spec = load_spec(spec_path)
    topic = emulator.create_topic(f"{name_prefix}events")
    subscription = emulator.create_subscription(f"{name_prefix}events-stream", topic)
    output_topic = emulator.create_topic(f"{name_prefix}features")
    output_subscription = emulator.create_subscription(f"{name_prefix}features-check", output_topic)
    output_dir = os.path.join(work_dir, "stream")
    command = [
        sys.executable,
        "-m",
        "pipeline.stream",
        "--spec",
        spec_path,
        "--transform_dir",
        transform_dir,
        "--input_subscription",
        subscription,
        "--output_dir",
        output_dir,
        "--output_topic",
        output_topic,
        "--allowed_lateness",
        f"{lateness}s",
        "--file_window",
        f"{file_window}s",
        "--write_raw_features",
        "--streaming",
    ]
    env = dict(os.environ, PUBSUB_EMULATOR_HOST=emulator.host, TF_CPP_MIN_LOG_LEVEL="2")
    if store is not None:
        command += store.store_flags(STREAM_TABLE)
        env.update(store.environment())
    log_path = os.path.join(work_dir, "stream.log")
    started = time.time()
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
    try:
        # stream.json is written just before the pipeline starts reading.
        def reading() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"pipeline.stream exited before reading; see {log_path}")
            return os.path.exists(os.path.join(output_dir, "stream.json"))

        wait_for(reading, 120, 0.5, f"pipeline.stream to start reading; see {log_path}")
        now = wait_for_window_start(spec, lateness, read_margin)
        plan = make_plan(spec, sample_rows(spec, events, seed), now, lateness, read_margin, seed)
        # Late-but-admitted events go first: they must be read before their
        # window's lateness runs out.
        messages = [(json.dumps(row).encode(), {}) for row in plan.admitted[: plan.late_admitted]]
        rest = [(json.dumps(row).encode(), {}) for row in plan.admitted[plan.late_admitted :]]
        rest += [(json.dumps(row).encode(), {}) for row in plan.beyond]
        rest += [(body, {}) for body, _ in plan.malformed]
        random.Random(seed).shuffle(rest)
        published_at = time.time()
        emulator.publish_many(topic, messages + rest)
        log(
            f"published {len(messages) + len(rest)} messages in "
            f"{time.time() - published_at:.1f} s: {len(plan.admitted)} admissible "
            f"({plan.late_admitted} late within the lateness), {len(plan.beyond)} beyond "
            f"it, {len(plan.malformed)} malformed"
        )
        # Every window has fired once the wall-clock watermark passes the last
        # window's end plus the lateness, and its files are written when the file
        # window holding that moment (or the dead letters' arrival) closes.
        last_output = max(plan.last_window_end + lateness, int(time.time()))
        files_closed = -(-last_output // file_window) * file_window
        wait = files_closed + read_margin - time.time()
        log(f"waiting {max(wait, 0):.0f} s for the last window to close")
        time.sleep(max(wait, 0))
        expected_rows = len(plan.admitted)
        raw_pattern = os.path.join(output_dir, "raw_features", "*.jsonl")
        # No error when the rows fall short: check() reports what is missing.
        poll(
            lambda: len(read_jsonl(raw_pattern)) >= expected_rows or process.poll() is not None,
            timeout=120,
            interval=3,
        )
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            exit_code = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            exit_code = process.wait()
    report = check(
        spec, spec_path, transform_dir, work_dir, output_dir, plan, emulator, output_subscription
    )
    if store is not None:
        report["problems"] += check_store(store, work_dir, plan.last_window_end)
    report["exit_code"] = exit_code
    report["late_keys"] = [row[spec.key_column] for row in plan.admitted[: plan.late_admitted]]
    report["wall_seconds"] = round(time.time() - started, 1)
    if exit_code != 0:
        report["problems"].append(f"pipeline.stream exited {exit_code}; see {log_path}")
    return report


STREAM_TABLE = "live"
MATERIALIZED_TABLE = "materialized"


def check_store(store, work_dir: str, end: int) -> list[str]:
    """The stream's cells of the periods before `end` against pipeline.materialize
    over the batch reference run (the admitted events) with --end `end`: the same
    row keys and timestamps, and the same values (floats to 1e-9: the two add
    in different orders). Later periods' windows may not have closed yet."""
    from pipeline import materialize

    run_dir = os.path.join(work_dir, "batch_reference")
    argv = ["--run_dir", run_dir, "--end", str(end), *store.store_flags(MATERIALIZED_TABLE)]
    if materialize.run([*argv, "--direct_num_workers", "1"]) != 0:
        return ["pipeline.materialize over the batch reference failed"]
    expected = store.read_all(MATERIALIZED_TABLE)
    live = {
        key: kept
        for key, cells in store.read_all(STREAM_TABLE).items()
        if (kept := [(stamp, value) for stamp, value in cells if stamp < end * 1_000_000])
    }
    if not expected:
        return ["materialize wrote no cells"]
    if {k: [s for s, _ in c] for k, c in live.items()} != {
        k: [s for s, _ in c] for k, c in expected.items()
    }:
        return [f"the stream wrote cells of {len(live)} rows, materialize of {len(expected)}"]
    differing = sum(
        not math.isclose(json.loads(got), json.loads(want), rel_tol=1e-9, abs_tol=1e-9)
        for key, cells in expected.items()
        for (_, want), (_, got) in zip(cells, live[key], strict=True)
    )
    return [f"{differing} stored values differ from materialize"] if differing else []


def check(spec, spec_path, transform_dir, work_dir, output_dir, plan, emulator, subscription):
    problems: list[str] = []
    key_column = spec.key_column
    admitted_keys = {row[key_column] for row in plan.admitted}
    beyond_keys = {row[key_column] for row in plan.beyond}

    keys = read_examples(os.path.join(output_dir, "examples"), key_column)
    duplicates = len(keys) - len(set(keys))
    missing = admitted_keys - set(keys)
    unexpected = set(keys) - admitted_keys
    for name, found in (("duplicated", duplicates), ("missing", len(missing)),
                        ("unexpected", len(unexpected))):  # fmt: skip
        if found:
            problems.append(f"{found} keys {name} in the output examples")

    dead = read_jsonl(os.path.join(output_dir, "dead_letter", "*.jsonl"))
    late = [d for d in dead if d["reason"].startswith("late:")]
    late_keys = [json.loads(d["line"])[key_column] for d in late]
    if sorted(late_keys) != sorted(beyond_keys):
        problems.append(
            f"late dead letters {len(late_keys)} != {len(beyond_keys)} events beyond the lateness"
        )
    other = sorted(d["reason"] for d in dead if not d["reason"].startswith("late:"))
    expected_reasons = sorted(reason for _, reason in plan.malformed)
    if len(other) != len(expected_reasons) or not all(
        got.startswith(want) for got, want in zip(other, expected_reasons, strict=False)
    ):
        problems.append(f"malformed dead letters {other} != {expected_reasons}")

    batch = batch_reference(spec_path, work_dir, plan.admitted, key_column)
    live = {r[key_column]: r for r in read_jsonl(os.path.join(output_dir, "raw_features", "*"))}
    aggregate_mismatches = 0
    for row in batch.to_pylist():
        for aggregate in spec.aggregates:
            got = live.get(row[key_column], {}).get(aggregate.name)
            if got is None or not math.isclose(
                got, row[aggregate.name], rel_tol=1e-9, abs_tol=1e-9
            ):
                aggregate_mismatches += 1
    if aggregate_mismatches:
        problems.append(f"{aggregate_mismatches} aggregate values differ from batch")

    feature_report = compare_features(transform_dir, batch, output_dir, key_column)
    if feature_report["mismatches"] or feature_report["missing"]:
        problems.append(f"transformed features differ from batch: {feature_report}")

    published = emulator.pull_all(subscription, max_wait_seconds=10)
    kinds = [m.attributes.get("kind") for m in published]
    example_keys = {
        m.attributes.get("key")
        for m, kind in zip(published, kinds, strict=True)
        if kind == "example"
    }
    aggregates = [m for m, kind in zip(published, kinds, strict=True) if kind == "aggregate"]
    if example_keys != admitted_keys:
        problems.append(
            f"output topic carried {len(example_keys)} example keys, expected {len(admitted_keys)}"
        )
    if spec.aggregates and not aggregates:
        problems.append("output topic carried no aggregate messages")
    return {
        "admitted": len(admitted_keys),
        "late_within_lateness": plan.late_admitted,
        "beyond_lateness": len(beyond_keys),
        "malformed": len(plan.malformed),
        "examples": len(keys),
        "dead_letters": len(dead),
        "aggregate_values_compared": batch.num_rows * len(spec.aggregates),
        "features": feature_report,
        "published_examples": len(example_keys),
        "published_aggregates": len(aggregates),
        "batch_rows": batch.to_pylist(),
        "problems": problems,
    }


def batch_reference(spec_path: str, work_dir: str, rows: list[dict], key_column: str):
    """pipeline.preprocess over `rows`; its raw rows with the batch aggregates."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline import preprocess
    from schemas.spec import load_spec

    spec = load_spec(spec_path)
    csv_path = os.path.join(work_dir, "admitted.csv")
    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(spec.column_names)
        for row in rows:
            writer.writerow(["" if row[name] is None else row[name] for name in spec.column_names])
    out = os.path.join(work_dir, "batch_reference")
    code = preprocess.run(
        ["--spec", spec_path, "--input", csv_path, "--output_dir", out, "--write_raw_features",
         "--max_bad_fraction", "0"]
    )  # fmt: skip
    if code != 0:
        raise RuntimeError(f"the batch reference run failed with exit code {code}")
    paths = glob.glob(os.path.join(out, "raw_features", "*", "*.parquet"))
    return pa.concat_tables(pq.read_table(path) for path in paths)


def compare_features(transform_dir: str, table, output_dir: str, key_column: str) -> dict:
    """The batch rows through the transform graph of `transform_dir` (the serving
    path) against the examples the stream wrote, key by key."""
    import numpy as np
    import tensorflow_transform as tft

    from pipeline.verify_skew import FLOAT_TOLERANCE, batch_examples, serving_transform

    tft_output = tft.TFTransformOutput(transform_dir)
    served = serving_transform(tft_output, table)
    keys = [str(k) for k in table.column(key_column).to_pylist()]
    written = batch_examples(
        output_dir, key_column, tft_output.transformed_feature_spec(), set(keys)
    )
    mismatches, max_difference = 0, 0.0
    for name, values in served.items():
        for index, key in enumerate(keys):
            if key not in written:
                continue
            expected = values[index].astype(np.float64).reshape(-1)
            got = np.asarray(written[key][name], dtype=np.float64).reshape(-1)
            difference = float(np.max(np.abs(expected - got))) if got.size else 0.0
            max_difference = max(max_difference, difference)
            if expected.shape != got.shape or difference > FLOAT_TOLERANCE * max(
                1.0, float(np.max(np.abs(expected), initial=0))
            ):
                mismatches += 1
    return {
        "rows": len(keys),
        "features": len(served),
        "missing": len(set(keys) - set(written)),
        "mismatches": mismatches,
        "max_abs_difference": max_difference,
    }


def main(argv: list[str] | None = None) -> int:
    from tests.pubsub_emulator import running_emulator

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", required=True, help="Spec of the batch run.")
    parser.add_argument("--transform_dir", required=True, help="A pipeline.preprocess output.")
    parser.add_argument("--events", type=int, default=5000, help="Valid events to publish.")
    parser.add_argument("--allowed_lateness", type=int, default=120, help="Seconds.")
    parser.add_argument("--read_margin", type=int, default=40, help="Seconds of safety margin.")
    parser.add_argument(
        "--file_window", type=int, default=300, help="Seconds of event time per output file."
    )
    parser.add_argument("--work_dir", default=None, help="Where outputs go (default: a temp dir).")
    args = parser.parse_args(argv)
    import tempfile

    work_dir = args.work_dir or tempfile.mkdtemp(prefix="stream_scenario_")
    os.makedirs(work_dir, exist_ok=True)
    with running_emulator() as emulator:
        report = run_scenario(
            emulator,
            args.spec,
            args.transform_dir,
            work_dir,
            args.events,
            args.allowed_lateness,
            args.read_margin,
            args.file_window,
        )
    report.pop("batch_rows")
    print(json.dumps(report, indent=2))
    print(f"outputs under {work_dir}")
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
