"""The online prediction service: TensorFlow Serving's REST API over a model
export, with the spec's windowed aggregates looked up point-in-time in the
online store (Bigtable) instead of sent by the client.

    python -m serving.service --model_dir M --bigtable_project P \\
        --bigtable_instance I --bigtable_table T [--port 8501] [--not_final reject]

Endpoints (MODEL: --model_name, by default the spec's name):

- POST /v1/models/MODEL:predict, body {"instances": [{raw column: value}, ...]}:
  each instance is what trainer.predict takes, validated by the batch job's own
  validator with the export's spec, without the label and without the
  aggregate columns (an instance that sends one is refused, so that a client
  cannot feed the model values the store does not hold). Its aggregates are
  looked up in the store for its event time (serving.lookup).
  200: {"predictions": [...], "metadata": {"aggregates": [{aggregate:
  {"value": v, "source": "store" | "default" | "latest_final", "period_start":
  "YYYY-MM-DDTHH:MM:SSZ"}}, ...]}}, one element per instance. A prediction is
  the number for regression and, as TensorFlow Serving gives a signature with
  several outputs, {output name: value} for classification (probabilities,
  classes, predicted_class, class_ids, and predictions for a binary label).
  400 {"error": "instance N: <reason>"} (N counts from 0 in "instances") for a
  request the batch job would refuse, malformed JSON, no "instances" list, or
  more than --max_instances instances; 404 for another model name; 413 for a
  body over --max_request_bytes; 503 when the store does not answer, and, with
  --not_final reject, for an instance whose period is not final yet (with
  Retry-After). One bad request never stops the server.
- GET /v1/models/MODEL: TensorFlow Serving's model status (version "1", AVAILABLE).
- GET /healthz: 200 when the model is loaded and the store answers a read, else 503.

Model calls and store reads block, so they run in a small thread pool, never
on the event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence

from aiohttp import web

from serving.lookup import (
    AggregateValue,
    NotFinal,
    NotFinalPolicy,
    instances_of,
    plan_lookup,
    reads,
    resolve,
)

DEFAULT_PORT = 8501  # TensorFlow Serving's REST port
# The streaming job's default --allowed_lateness (pipeline.options.StreamOptions).
DEFAULT_ALLOWED_LATENESS = "2min"
DEFAULT_MAX_INSTANCES = 1000
DEFAULT_MAX_REQUEST_BYTES = 8 * 1024 * 1024
DEFAULT_STORE_TIMEOUT_SECONDS = 2.0
# Threads for model calls and store reads: TensorFlow parallelises one call
# over the cores itself, so a few threads are enough to overlap a store read
# with another request's model call.
WORKER_THREADS = 4
# What GET /healthz reads: a row key no aggregate has (row keys start with a name).
HEALTH_PROBE_KEY = b"#healthz"
MODEL_VERSION = "1"
_EXECUTOR = web.AppKey("executor", concurrent.futures.ThreadPoolExecutor)
# The --bigtable_* flags that name the table; OnlineStoreOptions' others
# (--online_retention, --create_table) concern the jobs that write it.
STORE_FLAGS = ("--bigtable_project", "--bigtable_instance", "--bigtable_table")

_LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ServiceConfig:
    model_name: str
    allowed_lateness_seconds: int
    not_final: NotFinalPolicy = NotFinalPolicy.LATEST_FINAL
    max_instances: int = DEFAULT_MAX_INSTANCES
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    store_timeout_seconds: float = DEFAULT_STORE_TIMEOUT_SECONDS


@dataclasses.dataclass(frozen=True)
class Answer:
    """An HTTP answer: status, JSON document, extra headers."""

    status: int
    document: dict
    headers: dict = dataclasses.field(default_factory=dict)


class Refused(Exception):
    """A request answered with an error status instead of predictions."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.answer = Answer(status, {"error": message}, headers or {})


def request_instances(body: bytes, max_instances: int) -> list:
    """The "instances" list of a predict request's body."""
    try:
        document = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise Refused(400, f"the request body is not JSON: {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get("instances"), list):
        raise Refused(400, 'the request body must be a JSON object with an "instances" list')
    instances = document["instances"]
    if len(instances) > max_instances:
        raise Refused(400, f"{len(instances)} instances, more than --max_instances {max_instances}")
    return instances


def instance_source(index: int) -> str:
    return f"instance {index}"


def _jsonable(value):
    value = value.tolist() if hasattr(value, "tolist") else value
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, list):
        return [_jsonable(element) for element in value]
    return value


def prediction_json(outputs: dict, index: int):
    """TensorFlow Serving's row format: the one output's value (regression),
    else {output name: value}."""
    if set(outputs) == {"predictions"}:
        # .item(): a float whether the model gives [batch] or [batch, 1].
        return float(outputs["predictions"][index].item())
    return {name: _jsonable(outputs[name][index]) for name in sorted(outputs)}


def value_columns(values: Sequence[dict[str, AggregateValue]], aggregates) -> dict:
    """{aggregate name: pyarrow array of the instances' values}, the columns the
    signature takes."""
    import pyarrow as pa

    from transforms.validation import aggregate_arrow_type

    return {
        aggregate.name: pa.array(
            [instance[aggregate.name].value for instance in values], aggregate_arrow_type(aggregate)
        )
        for aggregate in aggregates
    }


class Predictor:
    """A predict request's body -> its Answer: validate, look up, predict.
    Blocking; thread-safe. `data_table`: a google.cloud.bigtable.data table."""

    def __init__(self, model, data_table, config: ServiceConfig, clock: Callable[[], float]):
        self.model = model
        self.data_table = data_table
        self.config = config
        self.clock = clock
        self.aggregates = list(model.spec.aggregates)
        self.aggregate_names = {aggregate.name for aggregate in self.aggregates}

    def answer(self, body: bytes) -> Answer:
        try:
            return Answer(200, self.predict(body))
        except Refused as refused:
            return refused.answer

    def predict(self, body: bytes) -> dict:
        now = self.clock()
        instances = request_instances(body, self.config.max_instances)
        for index, instance in enumerate(instances):
            fields = set(instance) if isinstance(instance, dict) else set()
            sent = sorted(self.aggregate_names & fields)
            if sent:
                raise Refused(
                    400,
                    f"{instance_source(index)}: {sent[0]}: an aggregate column is looked up in "
                    "the online store, not sent",
                )
        # The adapter takes JSON text, as trainer.predict's lines: one parser for both.
        validated = self.model.validate(
            [(instance_source(i), json.dumps(instance)) for i, instance in enumerate(instances)]
        )
        if validated.dead_letters:
            first = min(validated.dead_letters, key=lambda letter: int(letter["source"].split()[1]))
            raise Refused(400, f"{first['source']}: {first['reason']}")
        valid = validated.valid
        if not valid.num_rows:
            return {"predictions": [], "metadata": {"aggregates": []}}
        values = self.lookup(valid, now)
        outputs = self.model.outputs(valid, value_columns(values, self.aggregates))
        return {
            "predictions": [prediction_json(outputs, row) for row in range(valid.num_rows)],
            "metadata": {
                "aggregates": [
                    {name: value.as_json() for name, value in instance.items()}
                    for instance in values
                ]
            },
        }

    def lookup(self, valid, now: float) -> list[dict[str, AggregateValue]]:
        """Per validated row, its aggregates' values from the store (serving.lookup)."""
        if not self.aggregates:
            return [{} for _ in range(valid.num_rows)]
        instances = instances_of(valid, self.aggregates, self.model.spec.timestamp_column)
        try:
            plan = plan_lookup(
                instances, self.aggregates, now, self.config.allowed_lateness_seconds,
                self.config.not_final,
            )  # fmt: skip
        except NotFinal as not_final:
            retry = {"Retry-After": str(not_final.retry_after_seconds)}
            message = f"{not_final}; retry in {not_final.retry_after_seconds} s"
            raise Refused(503, message, retry) from None
        cells = self.read(reads(plan))
        return resolve(plan, self.aggregates, cells)

    def read(self, period_keys: dict[int, list[bytes]]) -> dict[int, dict[bytes, bytes]]:
        from google.api_core.exceptions import GoogleAPIError

        from transforms.online_store import read_period_cells

        try:
            return read_period_cells(self.data_table, period_keys)
        except GoogleAPIError as error:
            raise Refused(503, f"the online store did not answer: {_first_line(error)}") from None

    def store_problem(self) -> str | None:
        """None when the store answers a read of one row (or the spec has no
        aggregates, so there is no store), else why not."""
        from google.api_core.exceptions import GoogleAPIError

        if self.data_table is None:
            return None
        timeout = self.config.store_timeout_seconds
        try:
            self.data_table.read_row(HEALTH_PROBE_KEY, operation_timeout=timeout)
        except GoogleAPIError as error:
            return f"the online store did not answer: {_first_line(error)}"
        return None


def _first_line(error: Exception) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0]


def _json_response(answer: Answer) -> web.Response:
    return web.json_response(answer.document, status=answer.status, headers=answer.headers)


def build_app(
    model,
    data_table,
    config: ServiceConfig,
    clock: Callable[[], float] = time.time,
) -> web.Application:
    """The aiohttp application of the service over a loaded trainer.predict.
    ServingModel (made with aggregates_in_instance=False) and a store table."""
    predictor = Predictor(model, data_table, config, clock)
    app = web.Application(client_max_size=config.max_request_bytes, middlewares=[_json_errors])

    async def on_startup(app):
        app[_EXECUTOR] = concurrent.futures.ThreadPoolExecutor(
            WORKER_THREADS, thread_name_prefix="serving"
        )

    async def on_cleanup(app):
        app[_EXECUTOR].shutdown(wait=True)

    async def blocking(request, function, *args):
        return await asyncio.get_running_loop().run_in_executor(
            request.app[_EXECUTOR], function, *args
        )

    def check_name(request) -> None:
        name = request.match_info["name"]
        if name != config.model_name:
            raise web.HTTPNotFound(text=f"Servable not found for request: Latest({name})")

    async def predict(request):
        check_name(request)
        body = await request.read()  # 413 beyond client_max_size
        return _json_response(await blocking(request, predictor.answer, body))

    async def model_status(request):
        check_name(request)
        status = {"error_code": "OK", "error_message": ""}
        version = {"version": MODEL_VERSION, "state": "AVAILABLE", "status": status}
        return web.json_response({"model_version_status": [version]})

    async def health(request):
        problem = await blocking(request, predictor.store_problem)
        if problem is not None:
            return _json_response(Answer(503, {"error": problem}))
        store = "OK" if data_table is not None else "none: the spec has no aggregates"
        return web.json_response({"model": config.model_name, "store": store})

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    app.router.add_post("/v1/models/{name}:predict", predict)
    app.router.add_get("/v1/models/{name}", model_status)
    app.router.add_get("/healthz", health)
    return app


@web.middleware
async def _json_errors(request, handler):
    """aiohttp's own error answers (no route, wrong method, body too large) in
    the service's shape, {"error": message}."""
    try:
        return await handler(request)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        headers = {k: v for k, v in error.headers.items() if k.lower() == "allow"}
        return _json_response(Answer(error.status, {"error": error.text or error.reason}, headers))


class _TableFlags:
    """Takes OnlineStoreOptions' flags into an argparse group, only those that
    name the table (STORE_FLAGS): one definition of their names and help."""

    def __init__(self, group):
        self._group = group

    def add_argument(self, *names, **kwargs):
        if names[0] in STORE_FLAGS:
            self._group.add_argument(*names, **kwargs)


def parser() -> argparse.ArgumentParser:
    from pipeline.options import LOG_LEVELS, OnlineStoreOptions

    result = argparse.ArgumentParser(
        prog="python -m serving.service",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_NOT_FINAL_HELP,
    )
    result.add_argument(
        "--model_dir", required=True, help="Directory written by trainer.task; serves M/export/."
    )
    result.add_argument(
        "--model_name", default=None, help="Name in the URLs (default: the spec's name)."
    )
    result.add_argument(
        "--host", default="127.0.0.1", help="Address to listen on (default %(default)s)."
    )
    result.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="Port to listen on (default %(default)s)."
    )
    OnlineStoreOptions._add_argparse_args(_TableFlags(result.add_argument_group("online store")))
    result.add_argument(
        "--allowed_lateness",
        default=DEFAULT_ALLOWED_LATENESS,
        help="The streaming job's --allowed_lateness L: a period starting at e is final, "
        "and its value in the store, at e + L (default %(default)s).",
    )
    result.add_argument(
        "--not_final",
        choices=[policy.value for policy in NotFinalPolicy],
        default=NotFinalPolicy.LATEST_FINAL.value,
        help="What an instance whose period is not final yet gets (default %(default)s; "
        "see below).",
    )
    result.add_argument(
        "--max_instances",
        type=int,
        default=DEFAULT_MAX_INSTANCES,
        help="Most instances in one request; more is a 400 (default %(default)s).",
    )
    result.add_argument(
        "--max_request_bytes",
        type=int,
        default=DEFAULT_MAX_REQUEST_BYTES,
        help="Largest request body; larger is a 413 (default %(default)s).",
    )
    result.add_argument(
        "--store_timeout",
        type=float,
        default=DEFAULT_STORE_TIMEOUT_SECONDS,
        help="Seconds a store read may take, retries included, before the request is a "
        "503 (default %(default)s).",
    )
    result.add_argument(
        "--log_level",
        default="WARNING",
        choices=LOG_LEVELS,
        help="Log records shown; INFO adds one access-log line per request (default %(default)s).",
    )
    return result


_NOT_FINAL_HELP = """\
Periods not final yet. An instance at event time t takes, for each aggregate of
period P, the value of its window [e - W, e), e = floor(t / P) * P, which the
streaming job writes to the store at e + L. Before then (a real-time request in
the first L seconds of a period, or a future t):
  --not_final latest_final  the value of the newest final period,
                            e' = floor((now - L) / P) * P, with source
                            "latest_final" and period_start e' in the metadata;
  --not_final reject        503 with Retry-After: the seconds until e + L.
"""


def arguments_problems(args: argparse.Namespace) -> list[str]:
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.options import duration_seconds, online_store_problems
    from trainer.export import load_export_spec

    export_dir = os.path.join(args.model_dir, "export")
    # A model without aggregates reads no store, so it needs none named.
    needs_store = not os.path.isdir(export_dir) or bool(load_export_spec(export_dir).aggregates)
    store = {flag[2:]: getattr(args, flag[2:]) for flag in STORE_FLAGS}
    options = PipelineOptions.from_dictionary({k: v for k, v in store.items() if v})
    problems = online_store_problems(options, required=needs_store)
    try:
        duration_seconds(args.allowed_lateness)
    except ValueError as error:
        problems.append(f"--allowed_lateness: {error}")
    for flag in ("max_instances", "max_request_bytes", "port"):
        if getattr(args, flag) < (0 if flag == "port" else 1):
            problems.append(f"--{flag} must be positive, got {getattr(args, flag)}")
    if args.store_timeout <= 0:
        problems.append(f"--store_timeout must be positive, got {args.store_timeout}")
    if not os.path.isdir(export_dir):
        problems.append(f"{export_dir} does not exist; run trainer.task first")
    return problems


def store_data_table(args: argparse.Namespace):
    """The google.cloud.bigtable.data table of the --bigtable_* flags, whose
    reads give up after --store_timeout. With BIGTABLE_EMULATOR_HOST set, the
    client talks to that emulator."""
    from google.cloud.bigtable.data import BigtableDataClient

    client = BigtableDataClient(project=args.bigtable_project)
    return client.get_table(
        args.bigtable_instance,
        args.bigtable_table,
        default_read_rows_operation_timeout=args.store_timeout,
        default_read_rows_attempt_timeout=args.store_timeout,
    )


def main(argv: list[str] | None = None) -> int:
    from pipeline.options import duration_seconds
    from trainer.predict import ServingModel

    args = parser().parse_args(argv)
    problems = arguments_problems(args)
    if problems:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(message)s")
    model = ServingModel(os.path.join(args.model_dir, "export"), aggregates_in_instance=False)
    config = ServiceConfig(
        model_name=args.model_name or model.spec.name,
        allowed_lateness_seconds=duration_seconds(args.allowed_lateness),
        not_final=NotFinalPolicy(args.not_final),
        max_instances=args.max_instances,
        max_request_bytes=args.max_request_bytes,
        store_timeout_seconds=args.store_timeout,
    )
    data_table = store_data_table(args) if args.bigtable_table else None
    app = build_app(model, data_table, config)
    web.run_app(
        app,
        host=args.host,
        port=args.port,
        print=lambda line: print(line, file=sys.stderr, flush=True),
        access_log=_LOG if args.log_level in ("DEBUG", "INFO") else None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
