"""A local BigQuery emulator for tests that read through Beam's `ReadFromBigQuery`.

`running_bigquery_emulator()` starts `bqemulator` (a BigQuery emulator on PyPI that
serves the REST API and the Storage Read API over gRPC) on free local ports, redirects
Beam's BigQuery clients in this process to it, and stops it again. Nothing reaches Google
Cloud, and no credentials are needed: the redirected clients use anonymous credentials.

Beam's Python BigQuery IO has no endpoint option, so the redirection lives here and
product code does not know about the emulator. `redirect_beam_bigquery()` replaces, for
the duration of a block, the three places where Beam builds a client:

- `BigQueryWrapper._bigquery_client` (table metadata, query jobs, temporary datasets),
- `google.cloud.bigquery_storage_v1.BigQueryReadClient` (the Storage Read API, which
  `ReadFromBigQuery(method=DIRECT_READ)` reads rows with),
- `google.cloud.bigquery.Client` (built by `BigQueryWrapper()` without a client, e.g.
  for `output_type="BEAM_ROW"`).

It works with runners that execute in this process, such as `FnApiRunner`; workers in
other processes do not see the redirection. Only `method=DIRECT_READ` can work: the
EXPORT method writes files to Cloud Storage and reads them back from there. Where
bqemulator 1.4.0 answers Beam differently from BigQuery, the redirected client makes up
for it: it applies the label filter of datasets.list (which the emulator ignores, so
Beam's clean-up would delete every dataset of the project), and it runs a query into a
destination table as `CREATE TABLE ... AS` (the emulator does not write a SELECT's
result there), which limits `ReadFromBigQuery(query=...)` to `use_standard_sql=True`.

The emulator does not run in the project's virtualenv, so that neither constrains the
other's dependencies: `ensure_emulator_venv()` builds a virtualenv of its own, once, under
`${XDG_CACHE_HOME:-~/.cache}/beam-tft-preprocess/`, from the package registry. The
emulator needs DuckDB's spatial extension at start and would otherwise download it from
DuckDB's own site; here it comes from a PyPI package built for the pinned DuckDB.

A test module gets the `bigquery_emulator` fixture by loading this module as a plugin:

    pytest_plugins = ["tests.bigquery_emulator"]

The fixture skips only when the emulator's virtualenv cannot be built because no package
registry answers (or this Python cannot create virtualenvs); an emulator that is
installed but fails to start is an error, not a skip.

PYTEST_DONT_REWRITE: test modules import helpers from here before `pytest_plugins` loads
it, too late for assertion rewriting, and pytest would warn; there are no asserts here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from unittest import mock

import pytest

from tests.processes import answers_ok, log_tail, stop_process_group
from tests.support import wait_for

if TYPE_CHECKING:
    from google.cloud import bigquery

# The emulator's virtualenv. Every version is pinned so that the cached virtualenv is
# the one these tests were written against; changing a pin rebuilds it.
EMULATOR_REQUIREMENTS = (
    "bqemulator==1.4.0",
    # bqemulator accepts any duckdb>=1.0, but the extension packages below are built for
    # exactly one DuckDB release and each requires it. A newer duckdb would not find them
    # and would try to download its extensions at start.
    "duckdb==1.5.5",
    # Required: the emulator runs `INSTALL spatial; LOAD spatial` at start and exits when
    # that fails (GEOGRAPHY support).
    "duckdb-extension-spatial==1.5.5",
    # Optional for the emulator (Avro load and extract jobs), but bundled so that its
    # start never tries the network.
    "duckdb-extension-avro==1.5.5",
    # DuckDB's create_function needs numpy; bqemulator 1.4.0 registers Python UDFs at
    # start but does not declare the dependency.
    "numpy==2.4.6",
)
# Extensions copied from their PyPI packages into DuckDB's extension directory, where
# the emulator's `INSTALL <name>` finds them installed and does nothing.
_DUCKDB_EXTENSIONS = ("spatial", "avro")

_CACHE_SUBDIRECTORY = pathlib.Path("beam-tft-preprocess", "bqemulator-venv")
# Written last by a successful build; a virtualenv without it (or with other pins) is
# rebuilt.
_REQUIREMENTS_MARKER = "beam-tft-requirements.txt"
# The emulator runs with HOME here, so DuckDB's default extension directory
# (~/.duckdb/extensions) is the one inside the virtualenv, not the user's.
_DUCKDB_HOME = "duckdb-home"

_INSTALL_EXTENSIONS_SCRIPT = """
import importlib, pathlib, sys
import duckdb
home = pathlib.Path(sys.argv[1])
home.mkdir(exist_ok=True)
connection = duckdb.connect(config={"home_directory": str(home)})
version = connection.sql("PRAGMA version").fetchone()[0]
for name in sys.argv[2:]:
    package = pathlib.Path(importlib.import_module(f"duckdb_extension_{name}").__file__).parent
    extension = package / "extensions" / version / f"{name}.duckdb_extension"
    connection.execute(f"FORCE INSTALL '{extension}'")
"""

# pip prints these when it cannot reach the index at all, as opposed to failing to
# resolve or build: only then is the emulator truly unavailable here.
_UNREACHABLE_REGISTRY_MARKERS = (
    "NewConnectionError",
    "ConnectTimeoutError",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "Connection refused",
    "ProxyError",
    "Max retries exceeded",
)
# A cold pip install of the pins takes about two minutes on two cores.
_PIP_DEADLINE_SECONDS = 1200.0

# The emulator answers in about three seconds on two idle cores; a loaded CI machine
# needs more.
_START_DEADLINE_SECONDS = 90.0
_PROBE_TIMEOUT_SECONDS = 1.0
_PROBE_INTERVAL_SECONDS = 0.1
# On SIGTERM the emulator gives its gRPC server two seconds of grace, then exits.
_STOP_GRACE_SECONDS = 10.0
_LOG_TAIL_LINES = 40
# Rows per insertAll request, to keep each request well below the API's 10 MB limit.
_INSERT_BATCH_ROWS = 5000

# BigQuery's REST API accepts the standard SQL type names but returns the legacy ones,
# which Beam's schema code (e.g. output_type="BEAM_ROW") expects; bqemulator 1.4.0
# returns a table's types as they were given.
_LEGACY_TYPE_NAMES = {"INT64": "INTEGER", "FLOAT64": "FLOAT", "BOOL": "BOOLEAN", "STRUCT": "RECORD"}

# Beam's Storage Read client may receive large ReadRows responses; Google's own
# transport lifts gRPC's 4 MB default the same way. Proxies are bypassed because an
# https_proxy in the environment would otherwise swallow requests to localhost.
_GRPC_CHANNEL_OPTIONS = (
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
    ("grpc.enable_http_proxy", 0),
)


class EmulatorUnavailable(RuntimeError):
    """The emulator cannot be installed on this machine (no registry, no venv)."""


def emulator_venv_dir() -> pathlib.Path:
    """Where the emulator's virtualenv lives: under $XDG_CACHE_HOME or ~/.cache."""
    cache_home = os.environ.get("XDG_CACHE_HOME") or str(pathlib.Path.home() / ".cache")
    return pathlib.Path(cache_home) / _CACHE_SUBDIRECTORY


def _requirements_text() -> str:
    # The interpreter's version is part of the key: a virtualenv of another Python
    # would have to be rebuilt anyway.
    return "\n".join(
        (f"python {sys.version_info[0]}.{sys.version_info[1]}", *EMULATOR_REQUIREMENTS)
    )


def _venv_is_ready(venv: pathlib.Path) -> bool:
    try:
        return (venv / _REQUIREMENTS_MARKER).read_text() == _requirements_text()
    except OSError:
        return False


def _output_tail(text: str, lines: int = _LOG_TAIL_LINES) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _build_venv(venv: pathlib.Path) -> None:
    if venv.exists():
        shutil.rmtree(venv)
    created = subprocess.run(
        [sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True, check=False
    )
    if created.returncode != 0:
        raise EmulatorUnavailable(
            f"{sys.executable} cannot create a virtualenv (is the venv module installed?):\n"
            f"{_output_tail(created.stdout + created.stderr)}"
        )
    python = str(venv / "bin" / "python")
    installed = subprocess.run(
        [
            python,
            *("-m", "pip", "install", "--disable-pip-version-check", "--no-input"),
            *EMULATOR_REQUIREMENTS,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=_PIP_DEADLINE_SECONDS,
    )
    if installed.returncode != 0:
        output = installed.stdout + installed.stderr
        if any(marker in output for marker in _UNREACHABLE_REGISTRY_MARKERS):
            raise EmulatorUnavailable(
                f"pip could not reach a package registry to install {EMULATOR_REQUIREMENTS[0]}"
                f":\n{_output_tail(output, lines=3)}"
            )
        raise RuntimeError(
            f"pip failed to install the BigQuery emulator into {venv}:\n{_output_tail(output)}"
        )
    copied = subprocess.run(
        [python, "-c", _INSTALL_EXTENSIONS_SCRIPT, str(venv / _DUCKDB_HOME), *_DUCKDB_EXTENSIONS],
        capture_output=True,
        text=True,
        check=False,
    )
    if copied.returncode != 0:
        raise RuntimeError(
            "could not install DuckDB extensions from their PyPI packages:\n"
            f"{_output_tail(copied.stdout + copied.stderr)}"
        )
    (venv / _REQUIREMENTS_MARKER).write_text(_requirements_text())


def ensure_emulator_venv() -> pathlib.Path:
    """Return the emulator's virtualenv, building it first if it is missing or stale.

    Building takes a couple of minutes and needs a package registry; later calls return
    at once. Concurrent test processes wait for one another's build.

    Raises EmulatorUnavailable when no registry answers or no virtualenv can be created,
    and RuntimeError when the installation fails for any other reason.
    """
    venv = emulator_venv_dir()
    if _venv_is_ready(venv):
        return venv
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _venv_is_ready(venv):
            _build_venv(venv)
    return venv


def _listening_ports(log_path: pathlib.Path) -> dict[str, int]:
    """The ports the emulator logged it listens on, by event ("rest.listen", "grpc.listen")."""
    ports: dict[str, int] = {}
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return ports
    for line in lines:
        # The emulator logs JSON; uvicorn adds a few plain lines of its own.
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("event") in ("rest.listen", "grpc.listen"):
            ports[record["event"]] = int(record["port"])
    return ports


def _rest_is_ready(rest_url: str) -> bool:
    # /readyz answers 200 once DuckDB and the catalog answer.
    return answers_ok(f"{rest_url}/readyz", _PROBE_TIMEOUT_SECONDS)


def _grpc_is_ready(grpc_endpoint: str) -> bool:
    import grpc

    with grpc.insecure_channel(grpc_endpoint, options=_GRPC_CHANNEL_OPTIONS) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=_PROBE_TIMEOUT_SECONDS)
        except grpc.FutureTimeoutError:
            return False
    return True


def _wait_until_answering(process: subprocess.Popen, log_path: pathlib.Path) -> tuple[str, str]:
    """Wait for both servers and return (REST base URL, gRPC host:port)."""

    def answering() -> tuple[str, str] | None:
        if process.poll() is not None:
            raise RuntimeError(
                f"BigQuery emulator exited with code {process.returncode} before answering; "
                f"log tail:\n{log_tail(log_path)}"
            )
        ports = _listening_ports(log_path)
        # The emulator starts REST first and logs the gRPC port just before serving it.
        if "grpc.listen" not in ports:
            return None
        rest_url = f"http://127.0.0.1:{ports['rest.listen']}"
        grpc_endpoint = f"127.0.0.1:{ports['grpc.listen']}"
        if _rest_is_ready(rest_url) and _grpc_is_ready(grpc_endpoint):
            return rest_url, grpc_endpoint
        return None

    return wait_for(
        answering,
        _START_DEADLINE_SECONDS,
        _PROBE_INTERVAL_SECONDS,
        lambda: f"the BigQuery emulator to answer; log tail:\n{log_tail(log_path)}",
    )


def _emulator_environment(venv: pathlib.Path) -> dict[str, str]:
    environment = dict(os.environ)
    environment["HOME"] = str(venv / _DUCKDB_HOME)
    # The test process's module search path (e.g. PYTHONPATH=<repo>) must not leak
    # into the emulator's interpreter.
    for variable in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
        environment.pop(variable, None)
    return environment


def _anonymous_client_arguments(rest_url: str) -> dict[str, Any]:
    """Arguments that bind a google.cloud.bigquery.Client to the emulator, without credentials."""
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.auth.transport.requests import AuthorizedSession

    credentials = AnonymousCredentials()
    # AuthorizedSession rather than a plain one, because Client.close() expects it.
    session = AuthorizedSession(credentials)
    # An HTTP(S)_PROXY in the environment would otherwise swallow requests to localhost.
    session.trust_env = False
    return {
        "credentials": credentials,
        "client_options": ClientOptions(api_endpoint=rest_url),
        "_http": session,
    }


def _labels_match(filter_text: str, labels: Mapping[str, str]) -> bool:
    """Apply a datasets.list filter of "labels.KEY[:VALUE]" terms, all of which must hold."""
    for term in filter_text.split():
        key, _, value = term.removeprefix("labels.").partition(":")
        if key not in labels or (value and labels[key] != value):
            return False
    return True


def _dataset_labels(dataset: Any) -> dict[str, str]:
    """The labels of an apitools DatasetList entry."""
    if dataset.labels is None:
        return {}
    return {label.key: label.value for label in dataset.labels.additionalProperties}


def _create_table_as(query_config: Any, job_project: str) -> str:
    """The DDL that writes a SELECT's result to its destination table."""
    destination = query_config.destinationTable
    table = (
        f"`{destination.projectId or job_project}.{destination.datasetId}.{destination.tableId}`"
    )
    truncate = query_config.writeDisposition == "WRITE_TRUNCATE"
    verb = "CREATE OR REPLACE TABLE" if truncate else "CREATE TABLE"
    select = query_config.query.strip().rstrip(";")
    return f"{verb} {table} AS (\n{select}\n)"


@functools.cache
def _emulator_bigquery_v2_class() -> type:
    """Beam's apitools BigQuery client, adjusted where bqemulator 1.4.0 differs from BigQuery.

    Built on first use so that importing this module does not import Beam.
    """
    from apache_beam.io.gcp.internal.clients import bigquery as bigquery_api
    from apache_beam.utils.retry import PermanentException

    class NotEmulated(PermanentException, NotImplementedError):
        """A request this shim cannot make behave as BigQuery would; Beam must not retry it."""

    base_datasets = bigquery_api.BigqueryV2.DatasetsService
    base_jobs = bigquery_api.BigqueryV2.JobsService

    class LabelFilteringDatasets(base_datasets):
        def List(self, request, global_params=None):
            # The emulator ignores `filter` and lists every dataset. Beam's DIRECT_READ
            # cleans up by deleting the datasets that carry its run's label, so without
            # this a pipeline run with --project would delete every dataset in it.
            terms = (request.filter or "").split()
            if any(not term.startswith("labels.") for term in terms):
                raise NotEmulated(f"datasets.list filter {request.filter!r} is not emulated")
            response = super().List(request, global_params=global_params)
            if terms and response.datasets:
                response.datasets = [
                    dataset
                    for dataset in response.datasets
                    if _labels_match(request.filter, _dataset_labels(dataset))
                ]
            return response

        List.method_config = base_datasets.List.method_config

    class DestinationWritingJobs(base_jobs):
        def Insert(self, request, global_params=None, upload=None):
            # The emulator runs a SELECT but does not write its result to the requested
            # destination table, which Beam's query reads then fail to find. A
            # `CREATE TABLE ... AS` does write it.
            configuration = request.job.configuration if request.job else None
            query_config = configuration.query if configuration else None
            if (
                query_config is not None
                and query_config.destinationTable is not None
                and not configuration.dryRun
                and query_config.writeDisposition in (None, "WRITE_EMPTY", "WRITE_TRUNCATE")
            ):
                if query_config.useLegacySql is not False:
                    raise NotEmulated(
                        "the BigQuery emulator fixture runs only standard SQL queries into a "
                        "destination table; read with use_standard_sql=True"
                    )
                query_config.query = _create_table_as(query_config, request.projectId)
                query_config.destinationTable = None
                query_config.destinationEncryptionConfiguration = None
                query_config.writeDisposition = None
                query_config.allowLargeResults = None
                query_config.flattenResults = None
            return super().Insert(request, global_params=global_params, upload=upload)

        Insert.method_config = base_jobs.Insert.method_config

    class EmulatorBigqueryV2(bigquery_api.BigqueryV2):
        # BigqueryV2.__init__ instantiates its services through these attributes.
        DatasetsService = LabelFilteringDatasets
        JobsService = DestinationWritingJobs

    return EmulatorBigqueryV2


@contextlib.contextmanager
def redirect_beam_bigquery(rest_url: str, grpc_endpoint: str, project: str) -> Iterator[None]:
    """Point Beam's BigQuery clients in this process at an emulator for the block.

    `rest_url` is "http://host:port" of the REST API, `grpc_endpoint` "host:port" of the
    Storage Read API; `project` is the default project of a `google.cloud.bigquery.Client`
    created without one. Every replaced attribute is restored on exit.
    """
    import apache_beam
    import grpc
    import httplib2
    from apache_beam.io.gcp import bigquery_tools
    from google.cloud import bigquery, bigquery_storage_v1
    from google.cloud.bigquery_storage_v1.services.big_query_read.transports import (
        BigQueryReadGrpcTransport,
    )

    bigquery_v2_class = _emulator_bigquery_v2_class()
    default_project = project

    def bigquery_v2_client(pipeline_options=None):
        # Same as Beam's own factory, minus credentials and with the emulator's URL.
        return bigquery_v2_class(
            url=f"{rest_url}/bigquery/v2/",
            get_credentials=False,
            http=httplib2.Http(proxy_info=None),
            response_encoding="utf8",
            additional_http_headers={"user-agent": f"apache-beam-{apache_beam.__version__}"},
        )

    class EmulatorBigQueryReadClient(bigquery_storage_v1.BigQueryReadClient):
        def __init__(self, **kwargs: Any) -> None:
            for ignored in ("credentials", "client_options", "transport"):
                kwargs.pop(ignored, None)
            # The emulator serves plain gRPC; the default transport would use TLS.
            channel = grpc.insecure_channel(grpc_endpoint, options=_GRPC_CHANNEL_OPTIONS)
            super().__init__(transport=BigQueryReadGrpcTransport(channel=channel), **kwargs)

    class EmulatorBigQueryClient(bigquery.Client):
        def __init__(self, project: str | None = None, **kwargs: Any) -> None:
            kwargs.update(_anonymous_client_arguments(rest_url))
            super().__init__(project=project or default_project, **kwargs)

    with contextlib.ExitStack() as patches:
        patches.enter_context(
            mock.patch.object(
                bigquery_tools.BigQueryWrapper, "_bigquery_client", staticmethod(bigquery_v2_client)
            )
        )
        patches.enter_context(
            mock.patch.object(bigquery_storage_v1, "BigQueryReadClient", EmulatorBigQueryReadClient)
        )
        patches.enter_context(mock.patch.object(bigquery, "Client", EmulatorBigQueryClient))
        yield


@dataclasses.dataclass
class BigQueryEmulator:
    """A running emulator and a client bound to it.

    `rest_url` is "http://127.0.0.1:<port>" (the REST API), `grpc_endpoint` is
    "127.0.0.1:<port>" (the Storage Read API), and `project` is the project that tables
    are created in.
    """

    project: str
    rest_url: str
    grpc_endpoint: str
    client: bigquery.Client = dataclasses.field(repr=False)

    def create_table(
        self,
        dataset: str,
        table: str,
        schema: Sequence[tuple[str, str]],
        rows: Sequence[Mapping[str, Any]],
    ) -> str:
        """Create `dataset` (if missing) and `table`, insert `rows`, return "PROJECT:DATASET.TABLE".

        `schema` is (column name, BigQuery type) pairs, all NULLABLE, e.g.
        [("event_time", "TIMESTAMP"), ("fare", "FLOAT64")]. `rows` hold Python values
        (str, int, float, datetime, None), converted as google-cloud-bigquery's
        `insert_rows` converts them. The rows are readable as soon as this returns.
        """
        from google.cloud import bigquery

        self.client.create_dataset(f"{self.project}.{dataset}", exists_ok=True)
        table_resource = self.client.create_table(
            bigquery.Table(
                f"{self.project}.{dataset}.{table}",
                schema=[
                    bigquery.SchemaField(
                        name, _LEGACY_TYPE_NAMES.get(field_type.upper(), field_type)
                    )
                    for name, field_type in schema
                ],
            )
        )
        for start in range(0, len(rows), _INSERT_BATCH_ROWS):
            batch = rows[start : start + _INSERT_BATCH_ROWS]
            # No insert ids: the rows are not deduplicated, as a load job would not.
            errors = self.client.insert_rows(table_resource, batch, row_ids=[None] * len(batch))
            if errors:
                raise RuntimeError(f"the emulator rejected rows of {table}: {errors[:5]}")
        return f"{self.project}:{dataset}.{table}"


@contextlib.contextmanager
def running_bigquery_emulator(project: str = "test-project") -> Iterator[BigQueryEmulator]:
    """Run the BigQuery emulator for the duration of the block.

    Builds the emulator's virtualenv first if needed (see `ensure_emulator_venv`).
    While the block runs, Beam's BigQuery clients in this process talk to the emulator
    (see `redirect_beam_bigquery`). On exit the emulator's whole process group is
    terminated, then killed; its data lives in memory and goes with it.

    Raises EmulatorUnavailable when the emulator cannot be installed, RuntimeError when
    it exits, and tests.support.WaitTimeout when it does not answer within the deadline
    (both with the tail of its log).
    """
    venv = ensure_emulator_venv()
    with tempfile.TemporaryDirectory(prefix="bigquery-emulator-") as workdir:
        log_path = pathlib.Path(workdir, "emulator.log")
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    str(venv / "bin" / "bqemulator"),
                    "start",
                    "--rest-host=127.0.0.1",
                    # Port 0: the emulator binds free ports itself and logs them, so no
                    # other process can take a port between choosing and binding it.
                    "--rest-port=0",
                    "--grpc-host=127.0.0.1",
                    "--grpc-port=0",
                    "--ephemeral",
                    f"--project={project}",
                    "--log-format=json",
                    "--log-level=info",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                env=_emulator_environment(venv),
                # Its own process group, so stopping it cannot signal pytest, and one
                # killpg reaches every process it started.
                start_new_session=True,
            )
        try:
            rest_url, grpc_endpoint = _wait_until_answering(process, log_path)
            from google.cloud import bigquery

            client = bigquery.Client(project=project, **_anonymous_client_arguments(rest_url))
            try:
                with redirect_beam_bigquery(rest_url, grpc_endpoint, project):
                    yield BigQueryEmulator(project, rest_url, grpc_endpoint, client)
            finally:
                client.close()
        finally:
            stop_process_group(process, _STOP_GRACE_SECONDS)


@pytest.fixture(scope="module")
def bigquery_emulator() -> Iterator[BigQueryEmulator]:
    """A running BigQuery emulator shared by the tests of one module.

    Dataset and table names must be unique within the module, since the tests share the
    emulator's state. Beam's BigQuery reads in this process go to the emulator while
    the module's tests run.
    """
    try:
        ensure_emulator_venv()
    except EmulatorUnavailable as unavailable:
        pytest.skip(
            f"BigQuery emulator tests need bqemulator from a package registry: {unavailable}"
        )
    with running_bigquery_emulator() as emulator:
        yield emulator
