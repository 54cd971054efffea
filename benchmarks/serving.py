"""Throughput and latency of the prediction service (serving.service), with its
online store on the Bigtable emulator.

    python -m benchmarks.serving [--model_dir M] [--sizes 1 10 100] [--requests 200] \\
        [--concurrency 8]

Without --model_dir it first makes a small taxi model (pipeline.sample_data,
pipeline.preprocess, trainer.task with --train_steps 200) in a temporary
directory. Then it starts the Bigtable emulator (tests.bigtable_emulator),
fills the store through the jobs' own writer (transforms.online_store.
WriteGroupValues) for the periods of a pool of sample instances (every other
one, so that both stored values and defaults are looked up), starts the
service as its own process on the emulator, and waits for /healthz. For each
size it sends --requests predict requests of that many instances,
--concurrency at a time, after a warm-up of --concurrency requests, and
prints one JSON object: per size the requests/s, instances/s, p50 and p99
latency in milliseconds, and how many requests were answered 200 with one
prediction per instance.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

from pipeline.sample_data import HEADER, generate_rows

TABLE = "serving_benchmark"
POOL_SIZE = 1000
# Event times of the pool: spread over one day that ended this long ago, so that
# every period is final and the service reads the store (not latest_final).
POOL_AGE_SECONDS = 2 * 86400
START_DEADLINE_SECONDS = 300.0


def train_small_model(work: str, spec: str) -> str:
    """A model directory trained on a few thousand sample trips."""
    data, run, model = (os.path.join(work, name) for name in ("trips.csv", "run", "model"))
    for command in (
        ["pipeline.sample_data", "--rows", "4000", "--output", data],
        ["pipeline.preprocess", "--spec", spec, "--input", data, "--output_dir", run,
         "--runner", "FnApiRunner"],
        ["trainer.task", "--data_dir", run, "--model_dir", model, "--train_steps", "200",
         "--batch_size", "64"],
    ):  # fmt: skip
        subprocess.run([sys.executable, "-m", *command], check=True, capture_output=True)
    return model


def instance_pool(spec, size: int, newest_event_time: int) -> list[dict]:
    """`size` request instances: sample trips as JSON values of the spec's
    types, without the label, event times spread over the day before
    `newest_event_time`."""
    from schemas.spec import Kind

    convert = {Kind.FLOAT: float, Kind.INT: int}
    pool = []
    for index, record in enumerate(generate_rows(size, seed=5, messy_fraction=0.0)):
        fields = dict(zip(HEADER, record, strict=True))
        instance = {}
        for column in spec.columns:
            if column.name == spec.label:
                continue
            text = fields[column.source_name]
            instance[column.name] = convert.get(column.kind, str)(text) if text else None
        instance[spec.timestamp_column] = newest_event_time - (index * 97) % 86400
        pool.append(instance)
    return pool


def fill_store(store, spec, pool: list[dict]) -> int:
    """Writes a value of every aggregate for the (entity, period) of every other
    instance of the pool; returns the number of values per aggregate."""
    import apache_beam as beam

    from schemas.spec import Kind
    from transforms import online_store
    from transforms.aggregates import group_aggregates

    online_store.ensure_table(store, spec, 100 * 365 * 86400)
    written = 0
    for group in group_aggregates(spec):
        values = {}
        for index, instance in enumerate(pool[::2]):
            entity = tuple(instance[name] for name in group.key_columns)
            query = instance[spec.timestamp_column] // group.period_seconds
            values[entity, query] = {
                aggregate.name: (index % 50) + 1
                if aggregate.kind is Kind.INT
                else 10.0 + (index % 40) * 0.5
                for aggregate in group.aggregates
            }
        elements = [(entity, (query, value)) for (entity, query), value in values.items()]
        with beam.Pipeline(runner="FnApiRunner") as p:
            _ = p | beam.Create(elements) | online_store.WriteGroupValues(group, store)
        written = max(written, len(elements))
    return written


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@contextlib.contextmanager
def running_service(model_dir: str, emulator, port: int, log_path: str) -> Iterator[str]:
    from tests.processes import stop_process_group
    from tests.support import wait_for

    command = [
        sys.executable, "-m", "serving.service", "--model_dir", model_dir, "--port", str(port),
        "--bigtable_project", emulator.project, "--bigtable_instance", emulator.instance,
        "--bigtable_table", TABLE,
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, env=emulator.environment(), stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:

        def ready() -> bool:
            if process.poll() is not None:
                with open(log_path, errors="replace") as handle:
                    raise RuntimeError(f"the service exited: {handle.read()[-4000:]}")
            return _healthy(url)

        wait_for(ready, START_DEADLINE_SECONDS, 0.5, "the service's /healthz")
        yield url
    finally:
        stop_process_group(process, 10.0)


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


async def drive(url: str, model_name: str, pool: list[dict], size: int, requests: int,
                concurrency: int) -> dict:  # fmt: skip
    """Sends `requests` predict requests of `size` instances, `concurrency` at a time."""
    import aiohttp

    bodies = [
        json.dumps({"instances": [pool[(i * size + j) % len(pool)] for j in range(size)]})
        for i in range(requests)
    ]
    latencies: list[float] = []
    answered = right = 0

    async with aiohttp.ClientSession(
        headers={"Content-Type": "application/json"},
        connector=aiohttp.TCPConnector(limit=concurrency),
    ) as session:
        endpoint = f"{url}/v1/models/{model_name}:predict"

        async def one(body: str, timed: bool) -> None:
            nonlocal answered, right
            started = time.perf_counter()
            async with session.post(endpoint, data=body) as response:
                document = await response.json(content_type=None)
            if not timed:
                return
            latencies.append(time.perf_counter() - started)
            if response.status == 200:
                answered += 1
                right += len(document.get("predictions", [])) == size

        async def worker(queue: asyncio.Queue, timed: bool) -> None:
            while not queue.empty():
                await one(queue.get_nowait(), timed)

        async def run(batch: list[str], timed: bool) -> None:
            queue: asyncio.Queue = asyncio.Queue()
            for body in batch:
                queue.put_nowait(body)
            await asyncio.gather(*(worker(queue, timed) for _ in range(concurrency)))

        await run(bodies[:concurrency], timed=False)
        started = time.perf_counter()
        await run(bodies, timed=True)
        seconds = time.perf_counter() - started
    return {
        "instances_per_request": size,
        "requests": requests,
        "answered_200": answered,
        "with_all_predictions": right,
        "seconds": round(seconds, 3),
        "requests_per_second": round(requests / seconds, 1),
        "instances_per_second": round(requests * size / seconds, 1),
        "p50_ms": round(1000 * percentile(latencies, 0.50), 2),
        "p99_ms": round(1000 * percentile(latencies, 0.99), 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_dir", help="A trainer.task model directory (default: train one).")
    parser.add_argument("--spec", default="schemas/taxi.yaml", help="Spec of the trained model.")
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[1, 10, 100], help="Instances per request."
    )
    parser.add_argument("--requests", type=int, default=200, help="Timed requests per size.")
    parser.add_argument("--concurrency", type=int, default=8, help="Requests in flight.")
    args = parser.parse_args(argv)

    from tests.bigtable_emulator import running_bigtable_emulator
    from tests.processes import free_local_port
    from trainer.export import load_export_spec
    from transforms.online_store import StoreTable

    with tempfile.TemporaryDirectory(prefix="serving_benchmark_") as work:
        model_dir = args.model_dir or train_small_model(work, args.spec)
        spec = load_export_spec(os.path.join(model_dir, "export"))
        newest = (int(time.time()) - POOL_AGE_SECONDS) // 60 * 60
        pool = instance_pool(spec, POOL_SIZE, newest)
        with running_bigtable_emulator() as emulator:
            store = StoreTable(emulator.project, emulator.instance, TABLE)
            stored = fill_store(store, spec, pool)
            log_path = os.path.join(work, "service.log")
            with running_service(model_dir, emulator, free_local_port(), log_path) as url:
                results = [
                    asyncio.run(drive(url, spec.name, pool, size, args.requests, args.concurrency))
                    for size in args.sizes
                ]
    report = {
        "concurrency": args.concurrency,
        "stored_values_per_aggregate": stored,
        "pool_instances": len(pool),
        "sizes": results,
    }
    print(json.dumps(report, indent=2))
    complete = all(r["with_all_predictions"] == r["requests"] for r in results)
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
