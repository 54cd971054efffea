"""For test fixtures that run a server as a child process: stopping it, probing it."""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator


def stop_process_group(process: subprocess.Popen, grace_seconds: float) -> None:
    """SIGTERM to the process's whole group, then SIGKILL.

    The child must have been started with start_new_session=True. Signalling the
    group also reaches anything it forked (a launcher script's JVM, a server's
    workers), so nothing outlives the test session; the SIGKILL catches a child
    that still holds the group after the leader exited on SIGTERM.
    """
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace_seconds)


def answers_ok(url: str, timeout: float) -> bool:
    """Whether a GET of `url` answers 200 within `timeout` seconds.

    Proxies are bypassed because an HTTP(S)_PROXY in the environment would
    otherwise swallow a request to a server on localhost.
    """
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def free_local_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on at the moment of asking."""
    # The port is released before the server binds it, so another process could take
    # it in between; the server then fails to bind, and the error shows its log.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def environment_variable(name: str, value: str) -> Iterator[None]:
    """Sets `name` for the block, restoring its previous value (or absence) after."""
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def log_tail(log_path: pathlib.Path, lines: int = 40) -> str:
    """The last `lines` lines of a server's log, for an error message."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError as error:
        return f"(no emulator log: {error})"
    return "\n".join(text.splitlines()[-lines:]) or "(emulator log is empty)"
