"""Progress lines: due every interval, with rows, rate and phase, and read back."""

from __future__ import annotations

import logging
import os
import threading

from pipeline.logs import WorkerProgressFilter
from transforms.progress import (
    DEFAULT_INTERVAL_SECONDS,
    INTERVAL_VARIABLE,
    PhaseProgress,
    ProgressReport,
    interval_from_environment,
    parse_line,
)


def test_a_line_is_due_once_per_interval_with_rows_and_rate(caplog):
    now = [100.0]
    progress = PhaseProgress("validate", interval_seconds=10, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="preprocess.progress"):
        assert progress.add(1000) is None
    assert [r.getMessage().split(" [")[0] for r in caplog.records] == ["progress: validate started"]
    now[0] = 105.0
    assert progress.add(1000) is None
    now[0] = 110.0
    line = progress.add(2000)
    assert line.startswith("progress: validate 4,000 rows in 10 s (400 rows/s) [worker ")
    now[0] = 115.0
    assert progress.add(1) is None


def test_forwarded_worker_progress_becomes_a_plain_line():
    forwarded = (
        'Worker: severity: INFO timestamp {   seconds: 1 } message: "progress: validate '
        '10 rows in 10 s (1 rows/s) [worker 7]" instruction_id: "bundle_1"'
    )
    record = logging.LogRecord("root", logging.INFO, "f", 1, forwarded, (), None)
    assert WorkerProgressFilter().filter(record)
    assert record.getMessage() == "progress: validate 10 rows in 10 s (1 rows/s) [worker 7]"
    other = logging.LogRecord("root", logging.INFO, "f", 1, 'Worker: message: "x"', (), None)
    WorkerProgressFilter().filter(other)
    assert other.getMessage() == 'Worker: message: "x"'


def test_progress_lines_read_back_as_reports():
    now = [0.0]
    progress = PhaseProgress("read and validate", interval_seconds=10, clock=lambda: now[0])
    progress.add(500)
    now[0] = 20.0
    report = parse_line(progress.add(41_500))
    assert report == ProgressReport(
        "read and validate", os.getpid(), started=False, rows=42_000,
        elapsed_seconds=20.0, rows_per_second=2_100.0,
    )  # fmt: skip
    started = parse_line(f"progress: read and validate started [worker {os.getpid()}]")
    assert started == ProgressReport("read and validate", os.getpid(), started=True)
    assert parse_line("progress: something else") is None
    assert parse_line("phase: running the pipeline") is None


def test_one_shared_counter_per_phase_adds_every_thread():
    shared = PhaseProgress.shared("test sharing")
    assert PhaseProgress.shared("test sharing") is shared
    assert PhaseProgress.shared("another test phase") is not shared
    before = shared.rows

    def count():
        for _ in range(1000):
            shared.add(1)

    threads = [threading.Thread(target=count) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert shared.rows - before == 4000


def test_the_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(INTERVAL_VARIABLE, "2")
    assert interval_from_environment() == 2.0
    monkeypatch.setenv(INTERVAL_VARIABLE, "soon")
    assert interval_from_environment() == DEFAULT_INTERVAL_SECONDS
    monkeypatch.delenv(INTERVAL_VARIABLE)
    assert interval_from_environment() == DEFAULT_INTERVAL_SECONDS
