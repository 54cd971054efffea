"""Progress lines for long runs: rows processed, rate and phase, per worker.

A batch job over millions of rows that prints nothing for minutes looks hung,
and Beam's metrics only arrive when the job ends on the local runners. So the
DoFns at the heart of each phase count their rows here, and each worker process
logs when it starts a phase and then one INFO line per phase at most every
`interval_seconds`:

    progress: validate 1,200,000 rows in 31 s (38,700 rows/s) [worker 4242]

On Dataflow these lines land in the worker logs. Counts are per worker process:
with several workers, each prints its own share, and the command line's console
(pipeline/logs.py) adds them up, reading the lines back with `parse_line`.

The interval is 10 s unless the environment variable named by
`INTERVAL_VARIABLE` sets another; the command line sets a shorter one for its
local workers when it draws a live progress line on a terminal (Dataflow's
workers never see the launcher's environment, so their logs keep 10 s).
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from typing import NamedTuple

DEFAULT_INTERVAL_SECONDS = 10.0
INTERVAL_VARIABLE = "BEAM_TFT_PROGRESS_SECONDS"

_LOGGER = logging.getLogger("preprocess.progress")
_WORKER = r" \[worker (?P<worker>\d+)\]$"
_STARTED_LINE = re.compile(r"^progress: (?P<phase>.+?) started" + _WORKER)
_COUNT_LINE = re.compile(
    r"^progress: (?P<phase>.+?) (?P<rows>[\d,]+) rows in (?P<elapsed>[\d,]+) s"
    r"(?: \((?P<rate>[\d,]+) rows/s\))?" + _WORKER
)

_SHARED: dict[str, PhaseProgress] = {}
_SHARED_LOCK = threading.Lock()


def interval_from_environment() -> float:
    """The interval that INTERVAL_VARIABLE sets, or the default when it is unset
    or not a positive number."""
    try:
        seconds = float(os.environ.get(INTERVAL_VARIABLE, ""))
    except ValueError:
        return DEFAULT_INTERVAL_SECONDS
    return seconds if seconds > 0 else DEFAULT_INTERVAL_SECONDS


class PhaseProgress:
    """Counts the rows of one phase in this process and logs them now and then.

    `add` may be called from several threads (the SDK harness runs bundles in a
    thread pool)."""

    def __init__(self, phase: str, interval_seconds: float | None = None, clock=None):
        self.phase = phase
        self.rows = 0
        self._interval = (
            interval_from_environment() if interval_seconds is None else interval_seconds
        )
        self._clock = clock or time.monotonic
        self._started = None
        self._last_logged = None
        self._lock = threading.Lock()

    @classmethod
    def shared(cls, phase: str) -> PhaseProgress:
        """This process's one counter of `phase`. A worker runs one DoFn instance
        per stage that does the phase (one per split, say); sharing the counter
        gives one line per phase and worker, with the worker's whole count, which
        is what the console adds up. Counts then run on across the pipelines
        that one process runs (only tests run several)."""
        with _SHARED_LOCK:
            if phase not in _SHARED:
                _SHARED[phase] = cls(phase)
            return _SHARED[phase]

    def add(self, rows: int) -> str | None:
        """Counts `rows`; returns (and logs) a progress line when one is due."""
        with self._lock:
            now = self._clock()
            if self._started is None:
                # A phase's first line comes at once, so that a short phase is seen too.
                self._started = self._last_logged = now
                _LOGGER.info("progress: %s started [worker %d]", self.phase, os.getpid())
            self.rows += rows
            if now - self._last_logged < self._interval:
                return None
            self._last_logged = now
            line = self.line(now)
        _LOGGER.info(line)
        return line

    def line(self, now: float | None = None) -> str:
        elapsed = ((now if now is not None else self._clock()) - (self._started or 0.0)) or 0.0
        rate = f" ({self.rows / elapsed:,.0f} rows/s)" if elapsed > 0 else ""
        return (
            f"progress: {self.phase} {self.rows:,} rows in {elapsed:,.0f} s{rate} "
            f"[worker {os.getpid()}]"
        )


class ProgressReport(NamedTuple):
    """One progress line, read back: a phase started, or its rows so far, in one
    worker process."""

    phase: str
    worker: int
    started: bool
    rows: int = 0
    elapsed_seconds: float = 0.0
    rows_per_second: float = 0.0


def parse_line(text: str) -> ProgressReport | None:
    """The report in a line that PhaseProgress logged, or None for any other text."""
    if not text.startswith("progress: "):
        return None
    match = _STARTED_LINE.match(text)
    if match:
        return ProgressReport(match["phase"], int(match["worker"]), started=True)
    match = _COUNT_LINE.match(text)
    if not match:
        return None

    def number(name: str) -> float:
        return float((match[name] or "0").replace(",", ""))

    return ProgressReport(
        match["phase"],
        int(match["worker"]),
        started=False,
        rows=int(number("rows")),
        elapsed_seconds=number("elapsed"),
        rows_per_second=number("rate"),
    )
