"""pipeline.workarounds.early_workers: Beam's multi-process local runner takes the processes
started early as its workers, falls back to new ones when it must, and no
waiting process outlives its block."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import sys

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

from pipeline import children
from pipeline.workarounds import early_workers
from pipeline.workarounds.early_workers import EarlyWorkers
from pipeline.workarounds.guard import applied
from tests.support import wait_for


@pytest.fixture(autouse=True, scope="module")
def runner_imports_what_workers_import():
    # The runner's environment must be what the waiting processes' imports leave
    # theirs: TensorFlow's import sets variables. preprocess imports it while
    # building the job; here, up front.
    for module in early_workers.WORKER_IMPORTS:
        __import__(module)


@contextlib.contextmanager
def started(count: int):
    """The workaround in force for the block; yields its pool of processes."""
    with applied(EarlyWorkers(count)) as in_force:
        assert in_force
        yield early_workers.active_pool()


def run_squares(workers: int) -> None:
    options = PipelineOptions(
        flags=[],
        runner="FnApiRunner",
        direct_num_workers=workers,
        direct_running_mode="multi_processing",
    )
    with beam.Pipeline(options=options) as p:
        squares = p | beam.Create(range(50)) | beam.Reshuffle() | beam.Map(lambda x: x * x)
        assert_that(squares, equal_to([x * x for x in range(50)]))


def waiting_pids() -> list[int]:
    return [
        pid
        for pid in children.descendants()
        if children.WARM_WORKER_MODULE.encode() in _cmdline(pid)
    ]


def started_waiting(count: int) -> list[int]:
    """The waiting processes once all `count` have exec'd: between fork and exec
    a child's command line is still its parent's, which a busy machine shows."""
    return wait_for(
        lambda: len(pids := waiting_pids()) == count and pids,
        timeout=60,
        message=lambda: f"{count} waiting processes (found {waiting_pids()})",
    )


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read()
    except OSError:
        return b""


def test_the_runner_takes_the_waiting_processes_as_its_workers():
    with started(2) as pool:
        assert len(started_waiting(2)) == 2
        run_squares(2)
    assert pool.claimed == 2
    assert waiting_pids() == []


def test_a_changed_environment_gets_new_worker_processes(monkeypatch):
    with started(2) as pool:
        monkeypatch.setenv("PREPROCESS_TEST_CHANGED", "1")
        run_squares(2)
    assert pool.claimed == 0
    assert waiting_pids() == []


def test_other_commands_are_not_handed_a_waiting_process():
    with started(1) as pool:
        assert pool.claim("/bin/true", dict(os.environ)) is None
        assert pool.claimed == 0
        assert len(started_waiting(1)) == 1
    assert waiting_pids() == []


def test_more_workers_than_waiting_processes_start_the_rest_anew():
    with started(1) as pool:
        run_squares(2)
    assert pool.claimed == 1


def test_unclaimed_processes_are_stopped_when_the_block_ends():
    with started(2):
        pids = started_waiting(2)
        assert len(pids) == 2
    assert not any(children._alive(pid) and _cmdline(pid) for pid in pids)


def test_a_second_block_at_the_same_time_runs_as_beam_would(caplog):
    with started(1), caplog.at_level(logging.WARNING):
        with applied(EarlyWorkers(1)) as in_force:
            assert not in_force
            assert len(started_waiting(1)) == 1
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "early_workers is off" in warnings[0], warnings
        assert "already started" in warnings[0]
    assert waiting_pids() == []


def test_a_waiting_process_that_died_is_skipped():
    with started(2) as pool:
        first = pool._waiting[0]._process
        first.kill()
        first.wait()
        run_squares(2)
    # One was dead: the runner got the other and one new process.
    assert pool.claimed == 1


def test_no_new_worker_process_once_the_block_has_ended():
    # A run being stopped: its clean-up has listed the processes to kill.
    with started(1) as pool:
        pass
    with pytest.raises(RuntimeError, match="no new worker process"):
        pool.start_new("true", shell=True, env=dict(os.environ))


def test_a_report_cut_short_gives_no_worker_and_stops_the_process():
    sleeper = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], stdin=subprocess.PIPE
    )
    waiting = early_workers._WaitingProcess(sleeper, io.BytesIO(b'{"PATH": "/us'))
    assert waiting.hand_over(dict(os.environ), dict(os.environ)) is None
    assert sleeper.poll() is not None
