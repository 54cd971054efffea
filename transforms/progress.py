"""Progress lines for long runs: rows processed, rate and phase, per worker.

A batch job over millions of rows that prints nothing for minutes looks hung,
and Beam's metrics only arrive when the job ends on the local runners. So the
DoFns at the heart of each phase count their rows here, and each worker process
logs when it starts a phase and then one INFO line per phase at most every
`interval_seconds`:

    progress: validate 1,200,000 rows in 31 s (38,700 rows/s) [worker 4242]

On Dataflow these lines land in the worker logs. Counts are per worker process:
with several workers, each prints its own share.
"""

from __future__ import annotations

import logging
import os
import time

DEFAULT_INTERVAL_SECONDS = 10.0

_LOGGER = logging.getLogger("preprocess.progress")


class PhaseProgress:
    """Counts the rows of one phase in this process and logs them now and then."""

    def __init__(self, phase: str, interval_seconds: float = DEFAULT_INTERVAL_SECONDS, clock=None):
        self.phase = phase
        self.rows = 0
        self._interval = interval_seconds
        self._clock = clock or time.monotonic
        self._started = None
        self._last_logged = None

    def add(self, rows: int) -> str | None:
        """Counts `rows`; returns (and logs) a progress line when one is due."""
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
