"""Starts the local batch runner's worker processes while the job is still
being built, so that their imports overlap the runner's.

A local batch run used to spend its first 12 s or so in one process, on one
core: importing TensorFlow and tf.Transform and building the job graph. Only
then did Beam's FnApiRunner start its SDK worker processes, each of which
imported Beam, then TensorFlow and tf.Transform when it unpickled the first
stage that needed them: several more seconds before the first row was read
(benchmarks/stage_times.py shows both).

`started(count)` starts `count` processes at once. Each imports what a worker
will need (WORKER_IMPORTS) at a lower CPU priority, then waits for one line on
its stdin. When the runner later starts a worker, it is handed a waiting
process instead of a new one: the process reads the environment Beam gives a
new worker (control and logging addresses, pipeline options, worker id), takes
it as its own, and runs Beam's worker main, as the new process would have.
From then on it is Beam's worker process: the runner waits for it, reads its
exit code and kills it at the end. Two differences remain: it keeps the lower
priority where raising it back needs privileges, and it ends without the
interpreter's teardown (pipeline.workarounds.quick_exit).

A waiting process is only handed out when the runner asks for Beam's own SDK
worker command and the rest of its environment is the one the waiting process
has after its imports (a variable read at import time would otherwise be
missed); otherwise the runner starts a new process as before, unless the block
has ended. Unclaimed processes are stopped when the block ends.

The hand-off replaces the `subprocess` module as seen by Beam's
local_job_service (where SubprocessSdkWorker.run starts workers) with a proxy
whose Popen does the above; every other name is the real module's. That is a
private detail of Beam: `EarlyWorkers.missing_internals` checks that
SubprocessSdkWorker.run still makes that very call, and where it does not the
workaround turns itself off with one warning and Beam starts its workers as
usual. No upstream issue. Measured gain at 1M rows: 2.5 s of 24.4 s (medians
of three; the slowest run with it beat the fastest without), benchmarks/README,
"Runner workarounds, with and without".
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence

from pipeline.children import WARM_WORKER_MODULE
from pipeline.workarounds.guard import Patch, Workaround, missing_in_source

_LOGGER = logging.getLogger(__name__)

# The command Beam's FnApiRunner gives its multi-process workers (fn_runner.py).
SDK_WORKER_COMMAND = f"{sys.executable} -m apache_beam.runners.worker.sdk_worker_main"
# What Beam's SubprocessSdkWorker.run adds to its own environment for a worker.
BEAM_WORKER_VARIABLES = frozenset(
    {
        "CONTROL_API_SERVICE_DESCRIPTOR",
        "LOGGING_API_SERVICE_DESCRIPTOR",
        "PIPELINE_OPTIONS",
        "WORKER_ID",
    }
)
# What a waiting process imports: Beam's worker, and the libraries the job's
# first stages unpickle DoFns of (tf.Transform pulls in TensorFlow and tfx-bsl).
WORKER_IMPORTS = (
    "apache_beam.runners.worker.sdk_worker_main",
    "pyarrow",
    "tensorflow_transform.beam",
)
STOP_SECONDS = 5.0
# While the runner builds the job it is the one process that everything waits
# for: the waiting processes import at a lower priority, so that they take the
# idle core rather than share the runner's. Measured at 1M rows, sharing it
# delayed the first stage by about as much as the early imports saved.
IMPORT_NICENESS = 10

_PROXY_LOCK = threading.Lock()
_active_pool: WarmWorkerPool | None = None


class WarmWorkerPool:
    """Processes waiting to become SDK workers; see the module docstring."""

    def __init__(self, count: int, imports: Sequence[str] = WORKER_IMPORTS):
        self._count = count
        self._imports = tuple(imports)
        self._lock = threading.Lock()
        self._waiting: list[_WaitingProcess] = []
        self._stopped = False
        self.claimed = 0

    def start(self) -> None:
        with self._lock:
            for _ in range(self._count):
                self._waiting.append(_WaitingProcess.start(self._imports))

    def claim(self, command: str, environment: Mapping[str, str]) -> subprocess.Popen | None:
        """A waiting process, now running Beam's worker with `environment`, or
        None when `command` is not Beam's worker command, or no process is left
        waiting whose environment after its imports is `environment` without
        Beam's own variables."""
        if command != SDK_WORKER_COMMAND:
            return None
        inherited = {k: v for k, v in environment.items() if k not in BEAM_WORKER_VARIABLES}
        while True:
            with self._lock:
                if not self._waiting:
                    return None
                waiting = self._waiting.pop(0)
            process = waiting.hand_over(inherited, environment)
            if process is not None:
                with self._lock:  # the runner starts its workers from several threads
                    self.claimed += 1
                return process

    def start_new(self, args, **keywords) -> subprocess.Popen:
        """A new process, as Beam would have started it, unless the pool has been
        stopped. A run being stopped must not start a worker after its clean-up
        listed the processes to kill (a hand-over fails then, as the waiting
        process was stopped too)."""
        with self._lock:
            if self._stopped:
                raise RuntimeError("the run is ending: no new worker process is started")
            return subprocess.Popen(args, **keywords)

    def stop(self) -> None:
        """Stops the processes still waiting (none is a worker yet); from now on
        start_new refuses."""
        with self._lock:
            self._stopped = True
            waiting, self._waiting = self._waiting, []
        for process in waiting:
            process.stop()


class _WaitingProcess:
    """One process importing WORKER_IMPORTS, then waiting on its stdin for the
    environment to run Beam's worker with. It reports its own environment, as
    its imports left it, on a pipe: TensorFlow's import sets variables, which
    Beam's workers otherwise inherit from the runner's."""

    def __init__(self, process: subprocess.Popen, report):
        self._process = process
        self._report = report

    @classmethod
    def start(cls, imports: Sequence[str]) -> _WaitingProcess:
        read_end, write_end = os.pipe()
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", WARM_WORKER_MODULE, str(write_end), *imports],
                stdin=subprocess.PIPE,
                pass_fds=(write_end,),
                # As Beam builds a worker's environment: from os.environ, which
                # can differ from the C-level one that env=None would pass on.
                env=dict(os.environ),
            )
        finally:
            os.close(write_end)
        return cls(process, os.fdopen(read_end, "rb"))

    def hand_over(self, inherited: Mapping[str, str], environment: Mapping[str, str]):
        """The process, now running Beam's worker with `environment`, if its own
        environment after its imports is `inherited`; otherwise (or if it died)
        None, and the process is stopped."""
        try:
            with self._report:
                # Blocks until the imports are done, as the worker would have to anyway.
                report = self._report.read()
            own = json.loads(report) if report else None
        except (OSError, ValueError):
            # A report cut short (the process was killed while writing it): an
            # exception here would leave Beam waiting for a worker that never comes.
            own = None
        if own != dict(inherited):
            if own is not None:
                changed = sorted({name for name, _ in set(own.items()) ^ set(inherited.items())})
                _LOGGER.info(
                    "starting a new worker process: the waiting one's environment differs in %s",
                    ", ".join(changed),
                )
            self.stop()
            return None
        try:
            self._process.stdin.write((json.dumps(dict(environment)) + "\n").encode())
            self._process.stdin.close()
        except (BrokenPipeError, ValueError):
            self.stop()  # it died after reporting
            return None
        return self._process

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self._process.terminate()
        try:
            self._process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        for handle in (self._process.stdin, self._report):
            with contextlib.suppress(OSError):
                handle.close()


class _SubprocessWithWarmWorkers:
    """What Beam's local_job_service sees as its `subprocess` module."""

    def __getattr__(self, name):
        return getattr(subprocess, name)

    @staticmethod
    def Popen(args, *rest, **keywords):
        pool = _active_pool
        # Beam calls Popen(command, shell=True, env=environment).
        if pool is not None and not rest and keywords.keys() == {"shell", "env"}:
            process = pool.claim(args, keywords["env"]) if keywords["shell"] else None
            return process if process is not None else pool.start_new(args, **keywords)
        return subprocess.Popen(args, *rest, **keywords)


def active_pool() -> WarmWorkerPool | None:
    """The pool of the block in force, if any."""
    with _PROXY_LOCK:
        return _active_pool


class EarlyWorkers(Workaround):
    """Starts `count` waiting worker processes for the block; Beam's
    multi-process local runner takes them as its workers."""

    name = "early_workers"
    summary = "local worker processes start while the job is built"

    def __init__(self, count: int, imports: Sequence[str] = WORKER_IMPORTS):
        self._count = count
        self._imports = tuple(imports)

    def missing_internals(self) -> list[str]:
        from apache_beam.runners.portability import local_job_service

        worker = getattr(local_job_service, "SubprocessSdkWorker", None)
        if worker is None or not hasattr(local_job_service, "subprocess"):
            return ["local_job_service.SubprocessSdkWorker, local_job_service.subprocess"]
        return missing_in_source(
            worker.run,
            ["subprocess.Popen(self._worker_command_line, shell=True, env=env_dict)"],
            "SubprocessSdkWorker.run",
        )

    def patches(self) -> Sequence[Patch]:
        from apache_beam.runners.portability import local_job_service

        return [Patch(local_job_service, "subprocess", _SubprocessWithWarmWorkers())]

    @contextlib.contextmanager
    def session(self) -> Iterator[WarmWorkerPool]:
        global _active_pool
        pool = WarmWorkerPool(self._count, self._imports)
        with _PROXY_LOCK:
            if _active_pool is not None:
                raise RuntimeError("warm worker processes are already started for another run")
            _active_pool = pool
        try:
            pool.start()
            yield pool
        finally:
            with _PROXY_LOCK:
                _active_pool = None
            pool.stop()
