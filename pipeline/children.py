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
import re
import signal
import threading
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


SDK_WORKER_MODULE = "apache_beam.runners.worker.sdk_worker_main"
# What a process started early to become an SDK worker runs
# (pipeline.workarounds.early_workers starts it; a module of its own, which that
# package does not import, so that `python -m` runs it fresh).
WARM_WORKER_MODULE = "pipeline.workarounds.waiting_worker"
# What Beam's local runner raises, on the thread that waits for a worker process,
# when the worker (started through a shell) exits with a non-zero code.
_WORKER_EXIT = re.compile(r"Worker subprocess exited with return code (-?\d+)")


def is_sdk_worker(pid: int) -> bool:
    """Whether `pid` runs Beam's SDK worker module itself (not the shell that
    Beam's local runner starts it through), or a process started early to
    become one."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            arguments = handle.read().split(b"\0")
    except OSError:
        return False
    return SDK_WORKER_MODULE.encode() in arguments or WARM_WORKER_MODULE.encode() in arguments


def describe_exit(code: int) -> str:
    """A shell's exit code in words: 128 + N means its command was killed by signal N."""
    signum = code - 128 if code > 128 else -code if code < 0 else 0
    if signum:
        try:
            return f"was killed by {signal.Signals(signum).name}"
        except ValueError:
            return f"was killed by signal {signum}"
    return f"exited with status {code}"


class WorkerWatch:
    """Notices when a worker process of Beam's multi-process local runner ends
    with an error while a pipeline runs, and calls `on_lost(message)` once, with
    the worker's PID and fate ("worker process 123 was killed by SIGKILL").

    Why: the runner then fails with "Channel closed prematurely", which names
    neither the process nor the cause (an out-of-memory kill, say). The runner's
    own thread that waits for the worker learns its exit code and raises; this
    catches that through threading.excepthook while the block runs, and keeps
    track of the worker PIDs (polling /proc every `interval` seconds) to name
    the one that is gone. A context manager; the message is also kept in `lost`.
    """

    def __init__(self, on_lost, interval: float = 0.2):
        self._on_lost = on_lost
        self._interval = interval
        self._workers: set[int] = set()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._track, name="worker-watch", daemon=True)
        self._previous_hook = None
        self.lost: str | None = None

    def __enter__(self):
        self._previous_hook = threading.excepthook
        threading.excepthook = self._on_thread_exception
        if os.path.isdir("/proc"):
            self._thread.start()
        return self

    def __exit__(self, *exc_info):
        threading.excepthook = self._previous_hook
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()

    def _track(self) -> None:
        while True:
            self._workers.update(pid for pid in descendants() if is_sdk_worker(pid))
            if self._done.wait(self._interval):
                return

    def _on_thread_exception(self, args) -> None:
        match = _WORKER_EXIT.search(str(args.exc_value)) if args.exc_value else None
        if match is None or self.lost:
            self._previous_hook(args)
            return
        gone = sorted(pid for pid in self._workers if not _alive(pid))
        process = f"worker process {gone[0]}" if gone else "a worker process"
        self.lost = f"{process} {describe_exit(int(match.group(1)))}"
        self._on_lost(self.lost)
