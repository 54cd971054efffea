"""Logging set-up of the command-line entry points.

Two things make a local run's log readable. Beam forwards every log record of a
worker process to the runner as a printed protobuf message; `WorkerProgressFilter`
turns our progress lines (transforms/progress.py) back into plain lines. And
Beam's note for every DoFn type hint written as a string (which all hints are
under `from __future__ import annotations`) is noise, so it is silenced.
"""

from __future__ import annotations

import logging
import re

LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"
_FORWARDED_PROGRESS = re.compile(r'message: "(progress: [^"]*)"')
_QUIET_LOGGERS = ("apache_beam.typehints.native_type_compatibility",)


class WorkerProgressFilter(logging.Filter):
    """Rewrites a forwarded worker record that carries a progress line to that line."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("Worker: "):
            match = _FORWARDED_PROGRESS.search(message)
            if match:
                record.msg, record.args = match.group(1), ()
        return True


def configure_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format=LOG_FORMAT)
    for handler in logging.getLogger().handlers:
        handler.addFilter(WorkerProgressFilter())
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
