"""Progress lines: due every interval, with rows, rate and phase."""

from __future__ import annotations

import logging

from pipeline.logs import WorkerProgressFilter
from transforms.progress import PhaseProgress


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
