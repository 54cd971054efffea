"""Stopping the worker processes a local run started.

Beam's multi-process local runner starts its SDK workers through a shell and
does not stop them when the run is interrupted, so a stopped or failed run
could leave workers behind, still writing into its staging directory. Before a
run discards its staging directory it stops every process it started.

Linux-only (it reads /proc); elsewhere it does nothing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time


def descendants(root: int | None = None) -> list[int]:
    """PIDs of every process below `root` (default: this process), children first."""
    root = os.getpid() if root is None else root
    if not os.path.isdir("/proc"):
        return []
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                # The command name may hold spaces and parentheses; the fields after
                # its last ')' do not. The second of them is the parent's PID.
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry))
    found, stack = [], list(children.get(root, []))
    while stack:
        pid = stack.pop(0)
        found.append(pid)
        stack.extend(children.get(pid, []))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_descendants(grace_seconds: float = 5.0, root: int | None = None) -> list[int]:
    """SIGTERM to every descendant of `root` (default: this process), then
    SIGKILL to those still alive after `grace_seconds`. Returns the PIDs it
    signalled."""
    pids = descendants(root)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.1)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids
