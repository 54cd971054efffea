"""For test fixtures that run a server as a child process: stopping it, probing it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import urllib.error
import urllib.request


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
