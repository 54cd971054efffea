"""Closes the local batch runner's worker processes together rather than in turn.

What Beam does: at the end of a run, FnApiRunner's WorkerHandlerManager.close_all
closes its SDK worker processes one after the other and waits for each to exit.
A worker that has loaded TensorFlow takes about 1.5 s to exit, so with two
workers 3 s of every run passed after the last stage with nothing left to do
(benchmarks/stage_times.py shows it as "after the last stage").

What this changes: close_all closes them in parallel threads, and gives up
waiting after CLOSE_TIMEOUT_SECONDS, so that a stopped run cannot hang on a
worker that never finishes its bundle. No upstream issue. Measured at 1M rows
(benchmarks/README, "Runner workarounds, with and without"): 0.5 s of 21.9 s,
inside the run-to-run spread, so as speed it would not earn its place. It stays
for the bound: Beam's close_all waits for every worker without one, and a
stopped run whose worker sat in a bundle hung there (before commit eb228f5 a
SIGINT test timed out in CI).
It replaces WorkerHandlerManager.close_all and reads its private
`_cached_handlers`; without them it turns itself off (pipeline.workarounds.guard).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Sequence

from pipeline.workarounds.guard import Patch, Workaround, missing_attributes, missing_in_source

_LOGGER = logging.getLogger(__name__)

# How long close_all waits for the workers to close. A normal close takes about
# 1.5 s. A run being stopped may leave a worker busy in a bundle that nobody
# waits for any more; rather than hang there, close_all returns, and the
# stopped run's clean-up (pipeline.lifecycle) kills what is left.
CLOSE_TIMEOUT_SECONDS = 30.0


def _close(handler) -> None:
    try:
        handler.close()
    except Exception:  # as Beam's own close_all: one failed close must not stop the rest
        _LOGGER.error("error closing worker handler %s", handler, exc_info=True)


def _close_all_together(original_close_all):
    def close_all(self):
        handlers = {
            handler for handler_list in self._cached_handlers.values() for handler in handler_list
        }
        if len(handlers) > 1:
            # Daemon threads, so that a close that never ends cannot keep the
            # process alive either.
            threads = [
                threading.Thread(target=_close, args=(handler,), daemon=True, name="close-worker")
                for handler in handlers
            ]
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + CLOSE_TIMEOUT_SECONDS
            for thread in threads:
                thread.join(max(0.0, deadline - time.monotonic()))
            if any(thread.is_alive() for thread in threads):
                _LOGGER.warning(
                    "worker processes did not close within %.0f s; going on without them",
                    CLOSE_TIMEOUT_SECONDS,
                )
            # Closed (or given up on): Beam's close_all now only stops the
            # shared gRPC server.
            self._cached_handlers = collections.defaultdict(list)
        original_close_all(self)

    return close_all


class ParallelWorkerClose(Workaround):
    name = "parallel_worker_close"
    summary = "local worker processes close together at the end of a run"

    def missing_internals(self) -> list[str]:
        from apache_beam.runners.portability.fn_api_runner import worker_handlers

        manager = getattr(worker_handlers, "WorkerHandlerManager", None)
        if manager is None:
            return ["worker_handlers.WorkerHandlerManager"]
        missing = missing_attributes(manager, ["close_all"])
        return missing or missing_in_source(
            manager.close_all, ["self._cached_handlers"], "WorkerHandlerManager.close_all"
        )

    def patches(self) -> Sequence[Patch]:
        from apache_beam.runners.portability.fn_api_runner import worker_handlers

        manager = worker_handlers.WorkerHandlerManager
        return [Patch(manager, "close_all", _close_all_together(manager.close_all))]
