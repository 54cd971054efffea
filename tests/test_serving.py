"""serving.service on a trained taxi export and the real Bigtable emulator: the
predictions are trainer.predict's with the store's aggregate values, the
metadata says where each value came from, and every refusal has its status
while the server keeps serving."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator

import apache_beam as beam
import httpx
import pytest

from serving.lookup import NotFinalPolicy
from serving.service import ServiceConfig, build_app, store_data_table
from tests.bigtable_emulator import EMULATOR_HOST_VARIABLE
from tests.processes import environment_variable, free_local_port
from tests.support import ROOT, test_pipeline

pytest_plugins = ["tests.bigtable_emulator", "tests.taxi_model"]
pytestmark = [pytest.mark.slow, pytest.mark.emulator]

LATENESS = 120
PERIOD = 300  # both taxi aggregates: 5 minutes
E = 1_796_000_400  # a period start (2026-11-30T01:00:00Z)
TABLE = "serving"
STORED = {
    # (zone, period start) -> the values the streaming job would have written.
    ("Midtown", E): {"zone_trips_1h": 17, "zone_mean_fare_3h": 23.5},
    ("Midtown", E - PERIOD): {"zone_trips_1h": 11, "zone_mean_fare_3h": 19.25},
    ("JFK Airport", E): {"zone_trips_1h": 4, "zone_mean_fare_3h": 52.0},
}
DEFAULTS = {"zone_trips_1h": 0, "zone_mean_fare_3h": 0.0}


def trip(zone: str = "Midtown", seconds: int = E + 10, **fields) -> dict:
    """A request instance: raw columns without the label and the aggregates."""
    instance = {
        "trip_id": "t-1", "pickup_datetime": seconds, "pickup_longitude": -73.984,
        "pickup_latitude": 40.754, "dropoff_longitude": -73.957, "dropoff_latitude": 40.773,
        "passenger_count": 2, "pickup_zone": zone, "payment_type": "CARD", "vendor_id": "CMT",
    }  # fmt: skip
    return {**instance, **fields}


class Clock:
    """The service's `now`, set by each test."""

    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


@contextlib.contextmanager
def serving(app) -> Iterator[str]:
    """Runs the aiohttp app on a loopback port in a thread; yields its base URL."""
    from aiohttp import web

    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", 0).start())
    host, port = runner.addresses[0][:2]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(60)
        loop.close()


@pytest.fixture(scope="module")
def export_dir(taxi_model_dir) -> str:
    return os.path.join(taxi_model_dir, "export")


@pytest.fixture(scope="module")
def model(export_dir):
    from trainer.predict import ServingModel

    return ServingModel(export_dir, aggregates_in_instance=False)


def store_args(emulator, table: str = TABLE, timeout: float = 10.0) -> argparse.Namespace:
    return argparse.Namespace(
        bigtable_project=emulator.project, bigtable_instance=emulator.instance,
        bigtable_table=table, store_timeout=timeout,
    )  # fmt: skip


@pytest.fixture(scope="module")
def data_table(bigtable_emulator, model):
    """The emulator's table, filled through the jobs' own writer with STORED."""
    from transforms import online_store
    from transforms.aggregates import group_aggregates

    (group,) = group_aggregates(model.spec)
    store = online_store.StoreTable(bigtable_emulator.project, bigtable_emulator.instance, TABLE)
    # A retention long enough that Bigtable keeps these fixed, past periods.
    online_store.ensure_table(store, model.spec, 100 * 365 * 86400)
    values = [((zone,), (start // PERIOD, stored)) for (zone, start), stored in STORED.items()]
    with test_pipeline() as p:
        _ = p | beam.Create(values) | online_store.WriteGroupValues(group, store)
    return store_data_table(store_args(bigtable_emulator))


def config(**changes) -> ServiceConfig:
    return ServiceConfig(**{"model_name": "taxi", "allowed_lateness_seconds": LATENESS, **changes})


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock(E + LATENESS)


@pytest.fixture(scope="module")
def service(model, data_table, clock) -> Iterator[httpx.Client]:
    app = build_app(model, data_table, config(max_instances=50, max_request_bytes=64 * 1024), clock)
    with serving(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield client


def expected_predictions(export_dir, instances: list[dict], values: list[dict]) -> list[float]:
    """trainer.predict's predictions with the aggregate columns set to `values`."""
    from trainer.predict import predict_instances

    lines = [
        json.dumps({**instance, **value}) for instance, value in zip(instances, values, strict=True)
    ]
    return [result["predictions"] for result in predict_instances(export_dir, lines)]


def predict(client: httpx.Client, instances, model_name: str = "taxi") -> httpx.Response:
    return client.post(f"/v1/models/{model_name}:predict", json={"instances": instances})


def test_predictions_use_the_store_values_of_the_instances_period(service, clock, export_dir):
    clock.now = E + LATENESS  # period E is final from this second on
    instances = [
        trip(), trip("JFK Airport", E + 299), trip("Newark Airport"),  # never in the store
        trip(seconds=E - 1),  # the period before: its own cell
    ]  # fmt: skip
    response = predict(service, instances)
    assert response.status_code == 200, response.text
    body = response.json()
    values = [STORED["Midtown", E], STORED["JFK Airport", E], DEFAULTS,
              STORED["Midtown", E - PERIOD]]  # fmt: skip
    expected = expected_predictions(export_dir, instances, values)
    assert len(body["predictions"]) == 4
    for served, wanted in zip(body["predictions"], expected, strict=True):
        assert abs(served - wanted) < 1e-5, (served, wanted)
    # The values differ enough to move the prediction: the lookup matters.
    assert abs(expected[0] - expected[2]) > 1e-3
    assert body["metadata"]["aggregates"] == [
        {name: {"value": v, "source": "store", "period_start": "2026-11-30T01:00:00Z"}
         for name, v in STORED["Midtown", E].items()},
        {name: {"value": v, "source": "store", "period_start": "2026-11-30T01:00:00Z"}
         for name, v in STORED["JFK Airport", E].items()},
        {name: {"value": v, "source": "default", "period_start": "2026-11-30T01:00:00Z"}
         for name, v in DEFAULTS.items()},
        {name: {"value": v, "source": "store", "period_start": "2026-11-30T00:55:00Z"}
         for name, v in STORED["Midtown", E - PERIOD].items()},
    ]  # fmt: skip


def test_a_period_not_final_yet_takes_the_newest_final_one(service, clock, export_dir):
    clock.now = E + LATENESS - 1  # period E becomes final a second later
    instances = [trip(), trip("JFK Airport")]
    response = predict(service, instances)
    assert response.status_code == 200, response.text
    body = response.json()
    # The newest final period is E - PERIOD: Midtown's cell there, JFK's default.
    expected = expected_predictions(
        export_dir, instances, [STORED["Midtown", E - PERIOD], DEFAULTS]
    )
    for served, wanted in zip(body["predictions"], expected, strict=True):
        assert abs(served - wanted) < 1e-5
    midtown, jfk = body["metadata"]["aggregates"]
    assert midtown["zone_trips_1h"] == {
        "value": 11, "source": "latest_final", "period_start": "2026-11-30T00:55:00Z"
    }  # fmt: skip
    assert jfk["zone_mean_fare_3h"] == {
        "value": 0.0, "source": "latest_final", "period_start": "2026-11-30T00:55:00Z"
    }  # fmt: skip


class CountingTable:
    """A data table that records the row keys of every query it is given."""

    def __init__(self, table):
        self.table = table
        self.reads: list[list[bytes]] = []

    def read_rows(self, query):
        self.reads.append(sorted(query.row_keys))
        return self.table.read_rows(query)


def test_a_request_reads_the_store_once_whatever_its_periods(model, data_table):
    from serving.service import Predictor

    table = CountingTable(data_table)
    predictor = Predictor(model, table, config(), Clock(E + LATENESS))
    instances = [trip(), trip("JFK Airport"), trip(seconds=E - 1), trip(seconds=E + 200)]
    answer = predictor.answer(json.dumps({"instances": instances}).encode())
    assert answer.status == 200 and len(answer.document["predictions"]) == 4
    names = ("zone_mean_fare_3h", "zone_trips_1h")
    # Periods E - PERIOD (Midtown only) and E (Midtown and JFK), in one query.
    assert table.reads == [
        sorted(
            f'{name}#["{zone}"]'.encode() for name in names for zone in ("JFK Airport", "Midtown")
        )
    ]
    # JFK's row may bring back its cell of E - PERIOD too; only E's value is used.
    jfk = answer.document["metadata"]["aggregates"][1]
    assert {value["period_start"] for value in jfk.values()} == {"2026-11-30T01:00:00Z"}


def test_reject_answers_503_with_retry_after_until_the_period_is_final(model, data_table):
    clock = Clock(E + 30)
    app = build_app(model, data_table, config(not_final=NotFinalPolicy.REJECT), clock)
    with serving(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        response = predict(client, [trip(seconds=E - 600), trip()])
        assert response.status_code == 503
        assert response.headers["Retry-After"] == str(LATENESS - 30)
        assert response.json()["error"].startswith("instance 1: the value of zone_trips_1h")
        clock.now = E + LATENESS
        assert predict(client, [trip(seconds=E - 600), trip()]).status_code == 200


@pytest.mark.parametrize(
    ("instances", "status", "error"),
    [
        ([trip(), trip(pickup_latitude=None)], 400, "instance 1: pickup_latitude"),
        ([trip(pickup_longitude="east")], 400, "instance 0: pickup_longitude"),
        ([trip(payment_type="BITCOIN")], 400, "instance 0: payment_type"),
        ([trip(), trip(), trip(pickup_datetime="yesterday")], 400, "instance 2: pickup_datetime"),
        ([trip(), "a trip"], 400, "instance 1: an instance must be a JSON object"),
        ([trip(zone_trips_1h=3)], 400, "instance 0: zone_trips_1h: an aggregate column"),
        ([trip()] * 51, 400, "51 instances, more than --max_instances 50"),
    ],
)
def test_a_bad_instance_is_a_400_naming_it_and_the_next_request_is_served(
    service, clock, instances, status, error
):
    clock.now = E + LATENESS
    response = predict(service, instances)
    assert response.status_code == status
    assert response.json()["error"].startswith(error), response.json()
    assert predict(service, [trip()]).status_code == 200


def test_a_missing_required_field_is_named(service):
    instance = trip()
    del instance["dropoff_latitude"]
    response = predict(service, [instance])
    assert response.status_code == 400
    assert "dropoff_latitude" in response.json()["error"]


@pytest.mark.parametrize(
    "body", [b"{not json", b"[]", b'{"inputs": []}', b'{"instances": {"a": 1}}', b"\xff"]
)
def test_a_body_without_an_instances_list_is_a_400(service, body):
    response = service.post("/v1/models/taxi:predict", content=body)
    assert response.status_code == 400
    assert "error" in response.json()
    assert predict(service, [trip()]).status_code == 200


def test_no_instances_is_no_predictions(service):
    response = predict(service, [])
    assert response.status_code == 200
    assert response.json() == {"predictions": [], "metadata": {"aggregates": []}}


def test_another_model_name_is_a_404_and_a_large_body_a_413(service):
    response = predict(service, [trip()], model_name="fares")
    assert response.status_code == 404
    assert response.json() == {"error": "Servable not found for request: Latest(fares)"}
    assert service.get("/v1/models/fares").status_code == 404
    response = service.post("/v1/models/taxi:predict", content=b" " * (64 * 1024 + 1))
    assert response.status_code == 413
    assert "error" in response.json()
    assert service.get("/v1/models/taxi:predict").status_code in (404, 405)
    assert predict(service, [trip()]).status_code == 200


def test_model_status_and_health(service):
    response = service.get("/v1/models/taxi")
    assert response.status_code == 200
    assert response.json() == {
        "model_version_status": [
            {
                "version": "1",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    response = service.get("/healthz")
    assert response.status_code == 200 and response.json()["store"] == "OK"


def test_an_unreachable_store_is_a_503_and_the_server_keeps_serving(model, bigtable_emulator):
    # A client pointed at a port nothing listens on, as when the store is down.
    with environment_variable(EMULATOR_HOST_VARIABLE, f"127.0.0.1:{free_local_port()}"):
        unreachable = store_data_table(store_args(bigtable_emulator, timeout=1.0))
    app = build_app(model, unreachable, config(), Clock(E + LATENESS))
    with serving(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        assert client.get("/healthz").status_code == 503
        response = predict(client, [trip()])
        assert response.status_code == 503
        assert response.json()["error"].startswith("the online store did not answer")
        assert client.get("/v1/models/taxi").status_code == 200
        assert predict(client, [trip(pickup_latitude=None)]).status_code == 400


def test_a_table_that_does_not_exist_is_unhealthy(model, bigtable_emulator):
    missing = store_data_table(store_args(bigtable_emulator, table="no_such_table"))
    app = build_app(model, missing, config(), Clock(E + LATENESS))
    with serving(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        assert client.get("/healthz").status_code == 503
        assert predict(client, [trip()]).status_code == 503


def test_main_refuses_bad_flags_with_exit_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "serving.service", "--model_dir", str(tmp_path),
         "--bigtable_project", "p", "--allowed_lateness", "soon", "--max_instances", "0"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: --bigtable_instance is required",
        "error: --bigtable_table is required",
        "error: --allowed_lateness: 'soon' is not a duration like 30s, 5min, 1h or 2d",
        "error: --max_instances must be positive, got 0",
        f"error: {tmp_path}/export does not exist; run trainer.task first",
    ]


def test_the_benchmark_answers_every_request_with_every_prediction(taxi_model_dir):
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.serving", "--model_dir", taxi_model_dir,
         "--sizes", "1", "10", "--requests", "3", "--concurrency", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout)
    answered = [
        (size["instances_per_request"], size["requests"], size["answered_200"],
         size["with_all_predictions"])
        for size in report["sizes"]
    ]  # fmt: skip
    assert answered == [(1, 3, 3, 3), (10, 3, 3, 3)]
    assert report["stored_values_per_aggregate"] > 0
    assert all(size["p99_ms"] >= size["p50_ms"] > 0 for size in report["sizes"])
