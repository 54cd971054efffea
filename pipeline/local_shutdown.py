"""Stops the local batch runner's worker processes together rather than in turn.

At the end of a run Beam's FnApiRunner closes its SDK worker processes one
after the other and waits for each to exit. A worker that has loaded
TensorFlow takes about 1.5 s to exit, so with two workers 3 s of every run
passed after the last stage with nothing left to do (benchmarks/stage_times.py
shows it as "after the last stage"). `close_workers_together()` closes them in
parallel threads. It touches WorkerHandlerManager.close_all, a private method
of the pinned apache-beam; `check_supported()` fails loudly if it moves.
"""

from __future__ import annotations

import collections
import logging
import threading
from concurrent import futures

from apache_beam.runners.portability.fn_api_runner import worker_handlers

_PATCH_LOCK = threading.Lock()
_LOGGER = logging.getLogger(__name__)


def check_supported() -> None:
    if not hasattr(worker_handlers.WorkerHandlerManager, "close_all"):
        raise RuntimeError(
            "this apache-beam release lacks WorkerHandlerManager.close_all; install the "
            "version pinned in constraints.txt"
        )


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
            with futures.ThreadPoolExecutor(len(handlers)) as pool:
                list(pool.map(_close, handlers))
            # Closed: Beam's close_all now only stops the shared gRPC server.
            self._cached_handlers = collections.defaultdict(list)
        original_close_all(self)

    return close_all


def close_workers_together() -> None:
    """Idempotent; stays in force for the life of the process."""
    check_supported()
    manager = worker_handlers.WorkerHandlerManager
    with _PATCH_LOCK:
        if getattr(manager, "_preprocess_together", False):
            return
        manager.close_all = _close_all_together(manager.close_all)
        manager._preprocess_together = True
