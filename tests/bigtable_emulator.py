"""The real Cloud Bigtable emulator for tests that need an online store.

`running_bigtable_emulator()` starts Google's emulator (`cbtemulator`, from the
Debian package `google-cloud-cli-bigtable-emulator`, a Go program) on a free
loopback port, points every Bigtable client in this process, Beam's connector
included, at it through BIGTABLE_EMULATOR_HOST, and stops it again. A child
process (the streaming job, the prediction service) gets the same variable from
`BigtableEmulator.environment()`. With the variable set the client library talks
plain gRPC to the emulator with anonymous credentials; nothing reaches Google Cloud.

A test module gets the `bigtable_emulator` fixture by loading this module as a
plugin: `pytest_plugins = ["tests.bigtable_emulator"]`. The fixture skips only
when the emulator is not installed; one that is installed but fails to start is
an error.

PYTEST_DONT_REWRITE: helpers here are imported before the plugin loads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import shutil
import socket
import subprocess
import tempfile
import warnings
from collections.abc import Iterator

import pytest

from tests.processes import environment_variable, free_local_port, log_tail, stop_process_group
from tests.support import wait_for

EMULATOR_HOST_VARIABLE = "BIGTABLE_EMULATOR_HOST"
_PACKAGED_EMULATOR = pathlib.Path(
    "/usr/lib/google-cloud-sdk/platform/bigtable-emulator/cbtemulator"
)
_START_DEADLINE_SECONDS = 30.0
_PROBE_INTERVAL_SECONDS = 0.05
_STOP_GRACE_SECONDS = 5.0


def find_emulator() -> pathlib.Path | None:
    """The cbtemulator binary: the Debian package's, else one on PATH."""
    if os.access(_PACKAGED_EMULATOR, os.X_OK):
        return _PACKAGED_EMULATOR
    found = shutil.which("cbtemulator")
    return pathlib.Path(found) if found else None


def missing_prerequisite() -> str | None:
    if find_emulator() is None:
        return (
            "Bigtable emulator not installed (apt-get install "
            f"google-cloud-cli-bigtable-emulator); looked for {_PACKAGED_EMULATOR} and PATH"
        )
    return None


def _accepts_connections(port: int) -> bool:
    # The Go server serves as soon as its socket listens, so a connect is enough.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@dataclasses.dataclass
class BigtableEmulator:
    """A running emulator. `host` is "127.0.0.1:<port>". The emulator accepts any
    project and instance; tables are created by the code under test or by
    `create_table`."""

    host: str
    project: str = "test-project"
    instance: str = "test-instance"

    def environment(self) -> dict[str, str]:
        """os.environ plus the variable that sends a child's clients here."""
        return {**os.environ, EMULATOR_HOST_VARIABLE: self.host}

    def store_flags(self, table: str) -> list[str]:
        """The --bigtable_* flags that name `table` of this emulator as the online store."""
        return [
            "--bigtable_project",
            self.project,
            "--bigtable_instance",
            self.instance,
            "--bigtable_table",
            table,
        ]

    def data_table(self, table: str):
        """A google.cloud.bigtable.data table of the emulator (a sync client)."""
        from google.cloud.bigtable.data import BigtableDataClient

        with warnings.catch_warnings():
            # "Connecting to Bigtable emulator at ...": expected here.
            warnings.simplefilter("ignore", RuntimeWarning)
            client = BigtableDataClient(project=self.project)
        return client.get_table(self.instance, table)

    def read_all(self, table: str) -> dict[bytes, list[tuple[int, bytes]]]:
        """Every row of `table`: {row key: [(cell timestamp micros, value), ...]},
        the cells newest first, as Bigtable returns them."""
        from google.cloud.bigtable.data import ReadRowsQuery

        rows = self.data_table(table).read_rows(ReadRowsQuery())
        return {row.row_key: [(c.timestamp_micros, c.value) for c in row.cells] for row in rows}


@contextlib.contextmanager
def running_bigtable_emulator() -> Iterator[BigtableEmulator]:
    """Runs the emulator for the block, with BIGTABLE_EMULATOR_HOST set meanwhile."""
    binary = find_emulator()
    if binary is None:
        raise RuntimeError(f"cannot run the Bigtable emulator: {missing_prerequisite()}")
    with tempfile.TemporaryDirectory(prefix="bigtable-emulator-") as workdir:
        log_path = pathlib.Path(workdir, "emulator.log")
        port = free_local_port()
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [str(binary), "-host", "127.0.0.1", "-port", str(port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                start_new_session=True,
            )
        try:

            def answering() -> bool:
                if process.poll() is not None:
                    raise RuntimeError(
                        f"Bigtable emulator exited with code {process.returncode}; "
                        f"log tail:\n{log_tail(log_path)}"
                    )
                return _accepts_connections(port)

            wait_for(
                answering,
                _START_DEADLINE_SECONDS,
                _PROBE_INTERVAL_SECONDS,
                lambda: f"the Bigtable emulator on port {port}; log:\n{log_tail(log_path)}",
            )
            host = f"127.0.0.1:{port}"
            with environment_variable(EMULATOR_HOST_VARIABLE, host):
                yield BigtableEmulator(host)
        finally:
            stop_process_group(process, _STOP_GRACE_SECONDS)


@pytest.fixture(scope="module")
def bigtable_emulator() -> Iterator[BigtableEmulator]:
    """A running Bigtable emulator shared by one module's tests (use distinct tables)."""
    missing = missing_prerequisite()
    if missing is not None:
        pytest.skip(f"Bigtable emulator tests need the emulator: {missing}")
    with running_bigtable_emulator() as emulator:
        yield emulator
