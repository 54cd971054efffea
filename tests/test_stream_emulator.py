"""pipeline.stream as a process, on the real Pub/Sub emulator and the wall clock:
late, too-late and malformed events, and parity with batch (tests/stream_scenario.py);
and online serving end to end, with the Bigtable emulator as the store."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import yaml

from tests.processes import free_local_port, stop_process_group
from tests.stream_scenario import ROOT, run_scenario, sample_rows
from tests.stream_scenario import STREAM_TABLE as TABLE
from tests.support import ZONES_SPEC_DOCUMENT, wait_for

pytest_plugins = ["tests.bigtable_emulator"]
pytestmark = [pytest.mark.emulator, pytest.mark.slow]

# Allowed lateness of the live scenarios, in seconds.
LATENESS = 30


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
        lateness=LATENESS,
        read_margin=12,
        file_window=10,
    )
    assert not report["problems"], "\n".join(report["problems"])
    assert report["late_within_lateness"] > 0 and report["beyond_lateness"] > 0
    assert report["examples"] == report["admitted"] == report["published_examples"]
    assert report["features"]["rows"] == report["admitted"]


@pytest.fixture(scope="module")
def zones_model(zones_batch_run, tmp_path_factory):
    """A small model trained on the batch run, with its serving export."""
    from trainer import task

    _, transform_dir = zones_batch_run
    model_dir = tmp_path_factory.mktemp("zones_model") / "model"
    task.train_and_evaluate(str(transform_dir), str(model_dir), 200, 32, steps_per_checkpoint=200)
    return model_dir


def _post(url: str, document: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, json.dumps(document).encode(), method="POST")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def _answers(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _iso(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def test_online_serving_end_to_end_point_in_time(
    pubsub_emulator, bigtable_emulator, zones_batch_run, zones_model, tmp_path
):
    """A batch run and training; live events through the Pub/Sub emulator into
    pipeline.stream, which writes each final period value to the Bigtable
    emulator (and must write the cells pipeline.materialize writes for the
    admitted events: the scenario's check_store); serving.service answering HTTP
    requests for those events. The values it fills equal the batch job's key by
    key, a late event within the lateness included, and its predictions equal
    the model's on those batch rows; an entity the store has never seen gets the
    defaults, and a request for a period not final yet the newest final
    period's value, flagged."""
    from schemas.spec import load_spec
    from trainer.predict import predict_instances
    from transforms.online_store import decode_value, read_period_cells, row_key

    spec_path, transform_dir = zones_batch_run
    model_dir = zones_model
    spec = load_spec(str(spec_path))
    store_flags = bigtable_emulator.store_flags(TABLE)
    report = run_scenario(
        pubsub_emulator,
        str(spec_path),
        str(transform_dir),
        str(tmp_path),
        events=600,
        lateness=LATENESS,
        read_margin=12,
        file_window=10,
        store=bigtable_emulator,
        name_prefix="serving-",
    )
    assert not report["problems"], "\n".join(report["problems"])
    assert bigtable_emulator.read_all(TABLE), "the stream wrote nothing to the store"
    batch_rows = report["batch_rows"]
    key = spec.key_column
    late_keys = set(report["late_keys"])
    assert late_keys & {row[key] for row in batch_rows}

    port = free_local_port()
    log_path = tmp_path / "service.log"
    with open(log_path, "wb") as log:
        service = subprocess.Popen(
            [sys.executable, "-m", "serving.service", "--model_dir", str(model_dir),
             "--port", str(port), "--allowed_lateness", f"{LATENESS}s", *store_flags],
            cwd=ROOT, env=bigtable_emulator.environment(), stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}/v1/models/{spec.name}"
    try:
        wait_for(lambda: _answers(base), 120, 0.5, f"serving.service; see {log_path}")
        aggregate_names = [a.name for a in spec.aggregates]
        hidden = {*aggregate_names, spec.label}

        def instance(row: dict) -> dict:
            fields = {k: v for k, v in row.items() if k not in hidden}
            fields[spec.timestamp_column] = _iso(row[spec.timestamp_column])
            return fields

        status, served = _post(f"{base}:predict", {"instances": [instance(r) for r in batch_rows]})
        assert status == 200, served
        assert len(served["predictions"]) == len(batch_rows)

        # 1. The values filled from the store are the batch job's, key by key.
        metadata = served["metadata"]["aggregates"]
        mismatched = [
            (row[spec.key_column], name, row[name], filled[name])
            for row, filled in zip(batch_rows, metadata, strict=True)
            for name in aggregate_names
            if not _close(filled[name]["value"], row[name])
        ]
        assert not mismatched, mismatched[:5]
        sources = [filled[name]["source"] for filled in metadata for name in aggregate_names]
        assert set(sources) <= {"store", "default"}
        # Most events follow others of their zone within the window.
        assert sources.count("store") > 0.8 * len(sources), sources.count("store")
        late = [f for row, f in zip(batch_rows, metadata, strict=True) if row[key] in late_keys]
        # Late events sit in windows that closed before they arrived; their values,
        # checked above with the rest, come from the store too.
        assert any(f[name]["source"] == "store" for f in late for name in aggregate_names)

        # 2. The predictions are the model's on the batch rows, aggregates included.
        with_aggregates = [
            json.dumps({**instance(row), **{n: row[n] for n in aggregate_names}})
            for row in batch_rows
        ]
        expected = predict_instances(os.path.join(model_dir, "export"), with_aggregates)
        differences = [
            abs(got - want["predictions"])
            for got, want in zip(served["predictions"], expected, strict=True)
        ]
        assert max(differences) < 1e-5, max(differences)

        # 3. An entity the store has never seen: the spec's defaults, said so.
        zone = next(c for c in spec.columns if c.name == spec.aggregates[0].key[0]).name
        unseen = {**instance(batch_rows[0]), zone: "nowhere-ever"}
        status, answer = _post(f"{base}:predict", {"instances": [unseen]})
        assert status == 200, answer
        for aggregate in spec.aggregates:
            filled = answer["metadata"]["aggregates"][0][aggregate.name]
            assert filled["source"] == "default"
            assert filled["value"] == aggregate.default

        # 4. A period that is not final yet (t = now, so now < e + L): the value of
        # the newest final period, e' = floor((now - L) / P) * P, flagged as such.
        entity = batch_rows[-1]
        asked = int(time.time())
        current = {**instance(entity), spec.timestamp_column: _iso(asked)}
        status, answer = _post(f"{base}:predict", {"instances": [current]})
        answered = int(time.time())
        assert status == 200, answer
        table = bigtable_emulator.data_table(TABLE)
        for aggregate in spec.aggregates:
            period = aggregate.period_seconds
            filled = answer["metadata"]["aggregates"][0][aggregate.name]
            # The stream writes a period only while the entity's trailing window
            # holds rows, so e' may have no cell: then the default, as in training.
            assert filled["source"] in ("latest_final", "default"), filled
            candidates = {(moment - LATENESS) // period * period for moment in (asked, answered)}
            assert filled["period_start"] in {_iso(c) for c in candidates}, filled
            start = next(c for c in candidates if _iso(c) == filled["period_start"])
            key = row_key(aggregate.name, [entity[name] for name in aggregate.key])
            cell = read_period_cells(table, {start: [key]})[start]
            want = decode_value(cell[key], aggregate) if cell else aggregate.default
            assert _close(filled["value"], want), (filled, want)
    finally:
        stop_process_group(service, 5)
