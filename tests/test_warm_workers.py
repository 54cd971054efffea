"""pipeline.warm_workers: Beam's multi-process local runner takes the processes
started early as its workers, falls back to new ones when it must, and no
waiting process outlives its block."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

from pipeline import children, warm_workers


@pytest.fixture(autouse=True, scope="module")
def runner_imports_what_workers_import():
    # The runner's environment must be what the waiting processes' imports leave
    # theirs: TensorFlow's import sets variables. preprocess imports it while
    # building the job; here, up front.
    for module in warm_workers.WORKER_IMPORTS:
        __import__(module)


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


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read()
    except OSError:
        return b""


def test_the_runner_takes_the_waiting_processes_as_its_workers():
    with warm_workers.started(2) as pool:
        assert len(waiting_pids()) == 2
        run_squares(2)
    assert pool.claimed == 2
    assert waiting_pids() == []


def test_a_changed_environment_gets_new_worker_processes(monkeypatch):
    with warm_workers.started(2) as pool:
        monkeypatch.setenv("PREPROCESS_TEST_CHANGED", "1")
        run_squares(2)
    assert pool.claimed == 0
    assert waiting_pids() == []


def test_other_commands_are_not_handed_a_waiting_process():
    with warm_workers.started(1) as pool:
        assert pool.claim("/bin/true", dict(os.environ)) is None
        assert pool.claimed == 0
        assert len(waiting_pids()) == 1
    assert waiting_pids() == []


def test_more_workers_than_waiting_processes_start_the_rest_anew():
    with warm_workers.started(1) as pool:
        run_squares(2)
    assert pool.claimed == 1


def test_unclaimed_processes_are_stopped_when_the_block_ends():
    with warm_workers.started(2):
        pids = waiting_pids()
        assert len(pids) == 2
    assert not any(children._alive(pid) and _cmdline(pid) for pid in pids)


def test_one_block_at_a_time():
    outer = warm_workers.started(1)
    with outer, pytest.raises(RuntimeError, match="already started"), warm_workers.started(1):
        pass
    assert waiting_pids() == []


def test_a_waiting_process_that_died_is_skipped():
    with warm_workers.started(2) as pool:
        first = pool._waiting[0]._process
        first.kill()
        first.wait()
        run_squares(2)
    # One was dead: the runner got the other and one new process.
    assert pool.claimed == 1


def test_no_new_worker_process_once_the_block_has_ended():
    # A run being stopped: its clean-up has listed the processes to kill.
    with warm_workers.started(1) as pool:
        pass
    with pytest.raises(RuntimeError, match="no new worker process"):
        pool.start_new("true", shell=True, env=dict(os.environ))


def test_a_report_cut_short_gives_no_worker_and_stops_the_process():
    sleeper = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], stdin=subprocess.PIPE
    )
    waiting = warm_workers._WaitingProcess(sleeper, io.BytesIO(b'{"PATH": "/us'))
    assert waiting.hand_over(dict(os.environ), dict(os.environ)) is None
    assert sleeper.poll() is not None
