"""The real Cloud Pub/Sub emulator for tests that need a Pub/Sub endpoint.

`running_emulator()` starts Google's emulator (the Debian package
`google-cloud-cli-pubsub-emulator`, a Java program) on a free local port, points every
Pub/Sub client in this process at it through PUBSUB_EMULATOR_HOST, and stops it again.
Nothing reaches Google Cloud: with that variable set, the client library talks plain
gRPC to the emulator and uses anonymous credentials.

A test module gets the `pubsub_emulator` fixture by loading this module as a plugin:

    pytest_plugins = ["tests.pubsub_emulator"]

The fixture skips only when Java or the emulator is not installed on the machine; an
emulator that is installed but fails to start is an error, not a skip.

PYTEST_DONT_REWRITE: test modules import helpers from here before `pytest_plugins` loads
it, too late for assertion rewriting, and pytest would warn; there are no asserts here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, NamedTuple

import pytest

from tests.processes import (
    answers_ok,
    environment_variable,
    free_local_port,
    log_tail,
    stop_process_group,
)
from tests.support import wait_for

if TYPE_CHECKING:
    from google.cloud import pubsub_v1

EMULATOR_HOST_VARIABLE = "PUBSUB_EMULATOR_HOST"

_LAUNCHER_IN_SDK = pathlib.Path("platform", "pubsub-emulator", "bin", "cloud-pubsub-emulator")
# Where the Debian/Ubuntu package installs the SDK.
_PACKAGED_SDK_ROOT = pathlib.Path("/usr/lib/google-cloud-sdk")

# A cold JVM brings the emulator up in about two seconds; a loaded CI machine needs more.
_START_DEADLINE_SECONDS = 60.0
_PROBE_TIMEOUT_SECONDS = 1.0
_PROBE_INTERVAL_SECONDS = 0.1
_STOP_GRACE_SECONDS = 5.0


class PulledMessage(NamedTuple):
    """One message as a subscriber received it."""

    data: bytes
    attributes: dict[str, str]


def _sdk_roots() -> list[pathlib.Path]:
    roots = [_PACKAGED_SDK_ROOT]
    gcloud = shutil.which("gcloud")
    if gcloud:
        # An SDK unpacked from Google's archive keeps gcloud in <root>/bin.
        roots.append(pathlib.Path(gcloud).resolve().parent.parent)
    return roots


def _java_is_missing() -> str | None:
    """Why the launcher would find no Java, or None when it would find one."""
    # The launcher script prefers $JAVA_HOME/bin/java and dies if JAVA_HOME is set wrong,
    # even when a `java` is on PATH, so check the same thing it will use.
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        java = pathlib.Path(java_home, "bin", "java")
        if not os.access(java, os.X_OK):
            return f"JAVA_HOME={java_home} has no executable bin/java"
        return None
    if shutil.which("java") is None:
        return "no `java` on PATH (the Pub/Sub emulator is a Java program)"
    return None


def _find_launcher_file() -> pathlib.Path | None:
    for root in _sdk_roots():
        launcher = root / _LAUNCHER_IN_SDK
        if os.access(launcher, os.X_OK):
            return launcher
    return None


def missing_prerequisite() -> str | None:
    """Why the emulator cannot run on this machine, or None when it can."""
    java_problem = _java_is_missing()
    if java_problem:
        return java_problem
    if _find_launcher_file() is None:
        searched = ", ".join(str(root / _LAUNCHER_IN_SDK) for root in _sdk_roots())
        return (
            "Pub/Sub emulator not installed (apt-get install "
            f"google-cloud-cli-pubsub-emulator); looked for {searched}"
        )
    return None


def find_emulator_launcher() -> pathlib.Path | None:
    """The emulator's start script, or None when it or Java is missing."""
    if missing_prerequisite() is not None:
        return None
    return _find_launcher_file()


def _answers(host: str) -> bool:
    # The emulator answers plain HTTP on its gRPC port and replies "Ok" at the root, which
    # is the readiness check gcloud itself uses. A bare TCP connect is not enough: the
    # port opens a moment before requests are served.
    return answers_ok(f"http://{host}/", _PROBE_TIMEOUT_SECONDS)


def _died_in_main(log_path: pathlib.Path) -> bool:
    # When its port is taken, the emulator's main thread dies with a BindException but
    # Netty's threads keep the JVM alive, so the process never exits; without this check
    # the caller would wait out the whole deadline.
    try:
        return 'Exception in thread "main"' in log_path.read_text(errors="replace")
    except OSError:
        return False


def _wait_until_answering(process: subprocess.Popen, host: str, log_path: pathlib.Path) -> None:
    def answering() -> bool:
        if process.poll() is not None:
            raise RuntimeError(
                f"Pub/Sub emulator exited with code {process.returncode} before answering "
                f"on {host}; log tail:\n{log_tail(log_path)}"
            )
        if _died_in_main(log_path):
            raise RuntimeError(
                f"Pub/Sub emulator failed to start on {host}; log tail:\n{log_tail(log_path)}"
            )
        return _answers(host)

    wait_for(
        answering,
        _START_DEADLINE_SECONDS,
        _PROBE_INTERVAL_SECONDS,
        lambda: f"the Pub/Sub emulator to answer on {host}; log tail:\n{log_tail(log_path)}",
    )


@dataclasses.dataclass
class PubSubEmulator:
    """A running emulator and clients bound to it.

    `host` is "127.0.0.1:<port>", the value of PUBSUB_EMULATOR_HOST while it runs;
    `project` is the only project the emulator accepts. Topic and subscription arguments
    and results are full resource paths ("projects/<project>/topics/<name>").
    """

    host: str
    project: str
    publisher: pubsub_v1.PublisherClient = dataclasses.field(repr=False)
    subscriber: pubsub_v1.SubscriberClient = dataclasses.field(repr=False)

    def create_topic(self, name: str) -> str:
        """Create topic `name` in the emulator's project and return its path."""
        topic_path = self.publisher.topic_path(self.project, name)
        self.publisher.create_topic(name=topic_path)
        return topic_path

    def create_subscription(self, name: str, topic_path: str) -> str:
        """Create pull subscription `name` on `topic_path` and return its path."""
        subscription_path = self.subscriber.subscription_path(self.project, name)
        self.subscriber.create_subscription(name=subscription_path, topic=topic_path)
        return subscription_path

    def publish(self, topic_path: str, data: bytes, **attributes: str) -> str:
        """Publish one message, wait until the emulator has it, and return its id."""
        return self.publish_many(topic_path, [(data, attributes)])[0]

    def publish_many(
        self,
        topic_path: str,
        messages: Iterable[tuple[bytes, Mapping[str, str]]],
        timeout_seconds: float = 30.0,
    ) -> list[str]:
        """Publish (data, attributes) pairs as one batch and return their ids in order.

        Returns only once every message is stored, so a pull that follows sees them all.
        """
        futures = [
            self.publisher.publish(topic_path, data, **dict(attributes))
            for data, attributes in messages
        ]
        return [future.result(timeout=timeout_seconds) for future in futures]

    def pull_all(
        self,
        subscription_path: str,
        max_wait_seconds: float,
        expected_count: int | None = None,
    ) -> list[PulledMessage]:
        """Pull and acknowledge messages, in arrival order, for at most `max_wait_seconds`.

        With `expected_count`, keeps pulling until that many have arrived, for output that
        a pipeline is still producing. Without it, returns as soon as one pull comes back
        empty, which drains what has already been published. Returns what arrived either
        way; the caller asserts on it, so a shortfall shows up as a diff, not a timeout.
        """
        from google.api_core import exceptions

        received: list[PulledMessage] = []
        deadline = time.monotonic() + max_wait_seconds
        while expected_count is None or len(received) < expected_count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                # The emulator holds an empty pull open until about a second before the
                # call's deadline, so a short per-call timeout keeps the overall deadline.
                response = self.subscriber.pull(
                    subscription=subscription_path,
                    max_messages=100,
                    timeout=min(remaining, 2.0),
                )
            except exceptions.DeadlineExceeded:
                response = None
            if response is None or not response.received_messages:
                if expected_count is None:
                    break
                continue
            self.subscriber.acknowledge(
                subscription=subscription_path,
                ack_ids=[pulled.ack_id for pulled in response.received_messages],
            )
            received.extend(
                PulledMessage(pulled.message.data, dict(pulled.message.attributes))
                for pulled in response.received_messages
            )
        return received


@contextlib.contextmanager
def running_emulator(project: str = "test-project") -> Iterator[PubSubEmulator]:
    """Run the Pub/Sub emulator for the duration of the block.

    Sets PUBSUB_EMULATOR_HOST while the block runs (restoring the previous value after),
    so any Pub/Sub client created inside it, including Beam's, talks to the emulator.
    On exit the emulator's whole process group is terminated, then killed.

    Raises RuntimeError when Java or the emulator is missing, or when the emulator exits,
    and tests.support.WaitTimeout when it does not answer within a minute (both with
    the tail of its log).
    """
    launcher = find_emulator_launcher()
    if launcher is None:
        raise RuntimeError(f"cannot run the Pub/Sub emulator: {missing_prerequisite()}")

    with tempfile.TemporaryDirectory(prefix="pubsub-emulator-") as workdir:
        log_path = pathlib.Path(workdir, "emulator.log")
        host = f"127.0.0.1:{free_local_port()}"
        bind_address, port = host.rsplit(":", 1)
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    str(launcher),
                    f"--host={bind_address}",
                    f"--port={port}",
                    # Any other project is rejected, so a test that builds a path with the
                    # wrong project fails loudly instead of talking to an empty namespace.
                    f"--projects={project}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                # Its own process group, so stopping it cannot signal pytest, and one
                # killpg reaches every process it started.
                start_new_session=True,
            )
        try:
            _wait_until_answering(process, host, log_path)
            with environment_variable(EMULATOR_HOST_VARIABLE, host):
                from google.cloud import pubsub_v1

                publisher = pubsub_v1.PublisherClient()
                subscriber = pubsub_v1.SubscriberClient()
                try:
                    yield PubSubEmulator(host, project, publisher, subscriber)
                finally:
                    publisher.stop()
                    publisher.transport.close()
                    subscriber.close()
        finally:
            stop_process_group(process, _STOP_GRACE_SECONDS)


@pytest.fixture(scope="module")
def pubsub_emulator() -> Iterator[PubSubEmulator]:
    """A running Pub/Sub emulator shared by the tests of one module.

    Topic and subscription names must be unique within the module, since the tests share
    the emulator's state.
    """
    missing = missing_prerequisite()
    if missing is not None:
        pytest.skip(f"Pub/Sub emulator tests need Java and the emulator: {missing}")
    with running_emulator() as emulator:
        yield emulator
