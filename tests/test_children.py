"""stop_descendants stops children and grandchildren, and nothing else."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from pipeline import children

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc (Linux only)")


def test_every_process_below_a_root_is_found_and_stopped():
    # A shell with two children stands in for a runner and its workers; the
    # test process's other children (fixtures' servers) must not be touched.
    shell = subprocess.Popen(["sh", "-c", "sleep 60 & sleep 60 & wait"])
    try:
        deadline = time.monotonic() + 10
        while len(children.descendants(shell.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        found = children.descendants(shell.pid)
        assert len(found) == 2
        assert shell.pid in children.descendants()
        assert set(children.stop_descendants(grace_seconds=5, root=shell.pid)) == set(found)
        shell.wait(timeout=10)  # `wait` returns once both children are gone
        assert children.descendants(shell.pid) == []
    finally:
        shell.kill()
