"""pipeline.workarounds.parallel_worker_close: the local runner closes its worker
handlers at once."""

from __future__ import annotations

import threading

import pytest
from apache_beam.runners.portability.fn_api_runner import worker_handlers

from pipeline.workarounds import parallel_worker_close
from pipeline.workarounds.guard import applied
from pipeline.workarounds.parallel_worker_close import ParallelWorkerClose


class FakeHandler:
    """Closes only once every handler's close has started (or gives up)."""

    def __init__(self, barrier: threading.Barrier, closed: list):
        self._barrier = barrier
        self._closed = closed

    def close(self):
        # Generous deadlock guard, not a speed limit: one at a time, the
        # barrier never fills and this raises.
        self._barrier.wait(timeout=60)
        self._closed.append(self)


@pytest.fixture
def together():
    with applied(ParallelWorkerClose()) as in_force:
        assert in_force
        yield


def test_worker_handlers_are_closed_together_and_forgotten(together):
    manager = worker_handlers.WorkerHandlerManager({}, None)
    barrier, closed = threading.Barrier(3), []
    handlers = [FakeHandler(barrier, closed) for _ in range(3)]
    manager._cached_handlers["env"] = handlers
    manager.close_all()
    assert sorted(map(id, closed)) == sorted(map(id, handlers))
    assert not manager._cached_handlers


def test_nested_blocks_wrap_once_and_restore_beam_s_own():
    original = worker_handlers.WorkerHandlerManager.close_all
    with applied(ParallelWorkerClose()):
        patched = worker_handlers.WorkerHandlerManager.close_all
        with applied(ParallelWorkerClose()):
            assert worker_handlers.WorkerHandlerManager.close_all is patched
        assert patched is not original
    assert worker_handlers.WorkerHandlerManager.close_all is original


class StuckHandler:
    def __init__(self, release: threading.Event):
        self._release = release

    def close(self):
        self._release.wait()


def test_a_worker_that_never_closes_does_not_hang_close_all(together, monkeypatch):
    monkeypatch.setattr(parallel_worker_close, "CLOSE_TIMEOUT_SECONDS", 0.5)
    manager = worker_handlers.WorkerHandlerManager({}, None)
    release = threading.Event()
    manager._cached_handlers["env"] = [StuckHandler(release), StuckHandler(release)]
    closer = threading.Thread(target=manager.close_all, daemon=True)
    closer.start()
    closer.join(60)  # deadlock guard only
    release.set()
    assert not closer.is_alive()
    assert not manager._cached_handlers
