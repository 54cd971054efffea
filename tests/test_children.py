"""stop_descendants stops children and grandchildren, and nothing else; WorkerWatch
names a worker process that was killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest

from pipeline import children
from tests.support import wait_for

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc (Linux only)")


def test_every_process_below_a_root_is_found_and_stopped():
    # A shell with two children stands in for a runner and its workers; the
    # test process's other children (fixtures' servers) must not be touched.
    shell = subprocess.Popen(["sh", "-c", "sleep 60 & sleep 60 & wait"])
    try:
        wait_for(
            lambda: len(children.descendants(shell.pid)) >= 2,
            timeout=10,
            message="the shell's two children to start",
        )
        found = children.descendants(shell.pid)
        assert len(found) == 2
        assert shell.pid in children.descendants()
        assert set(children.stop_descendants(grace_seconds=5, root=shell.pid)) == set(found)
        shell.wait(timeout=10)  # `wait` returns once both children are gone
        assert children.descendants(shell.pid) == []
    finally:
        shell.kill()


@pytest.mark.parametrize(
    ("code", "expected"),
    [(137, "was killed by SIGKILL"), (143, "was killed by SIGTERM"), (-9, "was killed by SIGKILL"),
     (3, "exited with status 3")],
)  # fmt: skip
def test_exit_codes_are_described(code, expected):
    assert children.describe_exit(code) == expected


def test_the_worker_watch_names_a_killed_worker_once():
    lost = []
    # A stand-in for an SDK worker started through a shell, and for the runner's
    # thread that waits for the shell and raises on a non-zero exit code.
    sleeper = f"{sys.executable} -c 'import time; time.sleep(60)' {children.SDK_WORKER_MODULE}"
    shell = subprocess.Popen(["sh", "-c", f"{sleeper}; exit $?"])

    def wait_like_the_runner():
        shell.wait()
        if shell.returncode:
            raise RuntimeError(f"Worker subprocess exited with return code {shell.returncode}")

    try:
        with children.WorkerWatch(lost.append, interval=0.05) as watch:
            wait_for(lambda: watch._workers, timeout=10, message="the watch to see the worker")
            (worker,) = watch._workers
            waiter = threading.Thread(target=wait_like_the_runner)
            waiter.start()
            assert lost == []
            os.kill(worker, signal.SIGKILL)
            waiter.join(timeout=10)
    finally:
        shell.kill()
        shell.wait()
    assert lost == [f"worker process {worker} was killed by SIGKILL"]
