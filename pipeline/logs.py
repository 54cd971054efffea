"""Logging of the command-line entry points: a short console and a full log file.

The console shows what a person running a job wants to see: the run's phase
lines, one progress line, warnings and errors, and the summary the entry point
prints. Everything else goes to the run's log file: every record at INFO and
above, and whatever TensorFlow's C++ code and the local runner's worker
processes write to stderr themselves.

    configure_console(level)      at start: the console handler on the root logger
    with run_log(path):           for the run: the log file (see `run_log_path`)

What reaches the console, and how:
  - records whose message starts with "phase: " (the entry points log one per
    phase of a run) and `note()`s: always, as plain lines;
  - progress records (transforms/progress.py) from every worker process: added
    up into one line, "progress: read and validate 418,259 rows (41,490
    rows/s), 12 s elapsed". On a terminal the line is redrawn in place (\\r); on
    anything else (a pipe, CI) a phase's start is one line and its counts are a
    line at most every PLAIN_PROGRESS_SECONDS, so a log collector gets no
    \\r-spam;
  - any other record at `level` or above (--log_level, WARNING by default), as
    "warning: message", one line; a record with a traceback shows it only when
    there is no log file to hold it.

How the chatter is kept out:
  - Beam's local runner re-logs every record that a worker process forwards
    (under its job service's logger, as "Worker: severity: INFO ... message:
    ..."; "Python sdk harness exiting" is one of them), and its own start-up
    at INFO; TensorFlow and tfx-bsl log
    their notes at INFO ("Feature x has a shape ..."): levels sort them.
    `WorkerProgressFilter` turns a forwarded progress record back into its line.
  - TensorFlow's C++ messages, written to file descriptor 2 before absl's log
    is initialised, ignore TF_CPP_MIN_LOG_LEVEL in TF 2.21 (only its level 3
    drops the cuInit error; port.cc and cudart_stub print regardless), and Beam
    starts its worker processes with the runner's stderr inherited, where the
    workers' TensorFlow writes the same plus its own "INFO:tensorflow:" lines.
    So `run_log` points descriptor 2 at the log file for the run, and the
    console (sys.stderr) at a duplicate of the original descriptor: no Beam or
    TensorFlow internals are touched, and the workers inherit the log file.
    That redirection is skipped when sys.stderr is not the process's own (a
    test capturing it, say), and with --log_level INFO or DEBUG, which ask for
    all of it on the console.
  - TF_CPP_MIN_LOG_LEVEL is still set to 2 unless the user set it, before
    TensorFlow is imported anywhere: it silences what TensorFlow still filters.
  - Beam's note for every DoFn type hint written as a string (all of ours,
    under `from __future__ import annotations`) is dropped everywhere.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator

from pipeline.layout import LOGS_DIR
from transforms.progress import INTERVAL_VARIABLE, ProgressReport, parse_line

FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Log files kept per output directory: each run adds one, the oldest go.
KEEP_LOGS = 10
PHASE_PREFIX = "phase: "
# Non-terminal consoles: a progress line at most this often.
PLAIN_PROGRESS_SECONDS = 10.0
# Terminal consoles: how often the local workers report, for a line that moves.
TERMINAL_PROGRESS_SECONDS = 2.0
_NOTE = "console_note"
_FORWARDED_PROGRESS = re.compile(r'message: "(progress: [^"]*)"')
_FORWARDED_MESSAGE = re.compile(r'message: "((?:[^"\\]|\\.)*)"')
_FORWARDED_LOCATION = re.compile(r'log_location: "([^"]*)"')
_FORWARDED_TRACE = re.compile(r'trace: "((?:[^"\\]|\\.)*)"')
_QUIET_LOGGERS = ("apache_beam.typehints.native_type_compatibility",)
# Warnings that every local run logs and that say nothing about this run; they
# still go to the log file.
_CONSOLE_NOISE = (
    # Beam's SDK worker, started by the local runner without a
    # semi_persistent_directory, which only Dataflow's container provides.
    "No semi_persistent_directory found",
)

_console: ConsoleHandler | None = None
_console_stream = None
# The exception a run log recorded on its way out, and the log's path.
_ended_with: tuple[BaseException, str] | None = None


class WorkerProgressFilter(logging.Filter):
    """Rewrites a forwarded worker record that carries a progress line to that line."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("Worker: "):
            match = _FORWARDED_PROGRESS.search(message)
            if match:
                record.msg, record.args = match.group(1), ()
        return True


class FileFormatter(logging.Formatter):
    """The log file's lines: time, level, logger, message; a forwarded worker
    record as "worker: <its message> [<where it was logged>]", and its
    traceback if it has one, instead of the printed protobuf message that
    Beam's local runner logs."""

    def __init__(self):
        super().__init__(FILE_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        message = record.message
        if message.startswith("Worker: "):
            forwarded = _FORWARDED_MESSAGE.search(message)
            location = _FORWARDED_LOCATION.search(message)
            if forwarded:
                record.message = "worker: " + _unescape(forwarded.group(1))
                if location:
                    record.message += f" [{location.group(1)}]"
                trace = _FORWARDED_TRACE.search(message)
                if trace:
                    record.message += "\n" + _unescape(trace.group(1))
        try:
            return super().formatMessage(record)
        finally:
            record.message = message


class ProgressBoard:
    """The latest progress report of every worker process, phase by phase."""

    def __init__(self):
        self._phases: dict[str, dict[int, ProgressReport]] = {}
        self._latest: str | None = None

    def update(self, report: ProgressReport) -> None:
        workers = self._phases.setdefault(report.phase, {})
        if report.started and report.worker in workers:
            return
        workers[report.worker] = report
        if not report.started:
            self._latest = report.phase

    def line(self, elapsed_seconds: float) -> str:
        """'progress: <phase> <rows> rows[; <phase> ...] (<rate> rows/s), <s> s elapsed',
        the rate being that of the phase reported last, over all its workers; a
        phase without counts yet is '<phase> started'."""
        parts = []
        for phase, workers in self._phases.items():
            if all(report.started for report in workers.values()):
                parts.append(f"{phase} started")
            else:
                parts.append(f"{phase} {sum(report.rows for report in workers.values()):,} rows")
        rate = sum(report.rows_per_second for report in self._phases.get(self._latest, {}).values())
        rate_text = f" ({rate:,.0f} rows/s)" if rate else ""
        return f"progress: {'; '.join(parts)}{rate_text}, {elapsed_seconds:,.0f} s elapsed"


class ConsoleHandler(logging.Handler):
    """The console's handler; see the module docstring for what it shows.

    `stream` is where it writes, by default whatever sys.stderr is at the time
    (a run log rebinds it); `terminal` says whether to redraw the progress line
    in place, by default whether that stream is a terminal."""

    def __init__(
        self,
        level: int = logging.WARNING,
        stream=None,
        terminal: bool | None = None,
        clock=time.monotonic,
        plain_interval_seconds: float = PLAIN_PROGRESS_SECONDS,
    ):
        super().__init__(logging.NOTSET)
        self.console_level = level
        self.log_path: str | None = None
        self._stream = stream
        self._terminal = terminal
        self._clock = clock
        self._started = clock()
        self._plain_interval = plain_interval_seconds
        self._board = ProgressBoard()
        self._drawn = ""
        self._last_plain: float | None = None
        self._announced: set[str] = set()
        self.addFilter(WorkerProgressFilter())

    @property
    def stream(self):
        return self._stream if self._stream is not None else sys.stderr

    def is_terminal(self) -> bool:
        if self._terminal is not None:
            return self._terminal
        try:
            return self.stream.isatty()
        except (AttributeError, ValueError):
            return False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            report = parse_line(message)
            if report is not None:
                self._show_progress(report)
            elif getattr(record, _NOTE, False) or message.startswith(PHASE_PREFIX):
                # A new phase of the run: the last progress line stays as it was.
                self.finish_progress()
                self._write(message)
            elif record.levelno >= self.console_level and not _is_noise(message):
                self._write_above_progress(self._one_line(record, message))
        except Exception:  # noqa: BLE001 - logging's own convention
            self.handleError(record)

    def finish_progress(self) -> None:
        """Ends the progress line drawn on a terminal, so that what follows
        (a phase line, the summary on stdout) starts on a line of its own."""
        with self._locked():
            if self._drawn:
                self._put("\n")
                self._drawn = ""
            self._board = ProgressBoard()

    def _show_progress(self, report: ProgressReport) -> None:
        self._board.update(report)
        now = self._clock()
        if self.is_terminal():
            self._draw(self._board.line(now - self._started))
        elif report.started:
            if report.phase not in self._announced:
                self._announced.add(report.phase)
                self._write(f"progress: {report.phase} started")
        elif self._last_plain is None or now - self._last_plain >= self._plain_interval:
            self._last_plain = now
            self._write(self._board.line(now - self._started))

    def _one_line(self, record: logging.LogRecord, message: str) -> str:
        if message.startswith("Worker: "):
            forwarded = _FORWARDED_MESSAGE.search(message)
            if forwarded:
                message = "worker: " + _unescape(forwarded.group(1))
        text = f"{record.levelname.lower()}: {message}"
        log_path = self.log_path
        if record.exc_info:
            log_path = log_path or _log_holding(record.exc_info[1])
            if not log_path:
                return f"{text}\n{self.formatException(record.exc_info)}"
            return f"{text.splitlines()[0]} (traceback in {log_path})"
        if "\n" in text and log_path:
            return f"{text.splitlines()[0]} (more in {log_path})"
        return text

    def _draw(self, line: str) -> None:
        # A line longer than the terminal wraps, and \r then redraws only its tail.
        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = shutil.get_terminal_size((100, 24)).columns
        # A pseudo-terminal may report no size at all.
        self._drawn = line[: columns - 1] if columns > 20 else line
        self._put("\r" + self._drawn + "\x1b[K")

    def _write_above_progress(self, text: str) -> None:
        drawn = self._drawn
        if drawn:
            self._put("\r\x1b[K")
        self._write(text)
        if drawn:
            self._drawn = drawn
            self._put("\r" + drawn)

    def _write(self, text: str) -> None:
        self._drawn = ""
        self._put(text + "\n")

    def _put(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def formatException(self, exc_info) -> str:
        return logging.Formatter().formatException(exc_info)

    @contextlib.contextmanager
    def _locked(self):
        self.acquire()
        try:
            yield
        finally:
            self.release()


def _unescape(text: str) -> str:
    """A string field as protobuf's text format prints it (non-ASCII as octal
    escapes of its UTF-8 bytes), as text."""
    try:
        return text.encode("utf-8").decode("unicode_escape").encode("latin-1").decode("utf-8")
    except UnicodeError:
        return text


def _is_noise(message: str) -> bool:
    return any(noise in message for noise in _CONSOLE_NOISE)


def _log_holding(error: BaseException | None) -> str | None:
    if _ended_with is not None and error is not None and _ended_with[0] is error:
        return _ended_with[1]
    return None


def level_number(level: int | str) -> int:
    if isinstance(level, int):
        return level
    number = logging.getLevelName(str(level).upper())
    if not isinstance(number, int):
        raise ValueError(f"not a log level: {level!r}")
    return number


def configure_console(level: int | str = logging.WARNING) -> ConsoleHandler:
    """Sets up the console for an entry point; call it first. Replaces the
    console handler of an earlier call (tests run several jobs in one process)
    and leaves other handlers alone."""
    global _console
    # Before TensorFlow is imported here or in a worker process, which inherit
    # the environment; a value the user set wins.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    root = logging.getLogger()
    if _console is not None:
        root.removeHandler(_console)
    _console = ConsoleHandler(level_number(level))
    if _console.is_terminal():
        # The local workers' environment is this one; Dataflow's is not.
        os.environ.setdefault(INTERVAL_VARIABLE, str(TERMINAL_PROGRESS_SECONDS))
    root.addHandler(_console)
    # Phase and progress records are INFO, and the run log wants INFO too.
    root.setLevel(min(_console.console_level, logging.INFO))
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    return _console


def note(message: str) -> None:
    """Logs `message` at INFO where the console shows it whatever its level."""
    logging.getLogger("pipeline").info(message, extra={_NOTE: True})


def run_log_path(output_dir: str, run_id: str) -> str:
    """OUTPUT/_logs/<run_id>.log for a local output directory (pipeline/commit.py
    leaves that folder alone); for one on another filesystem (gs://...), a
    local file under the system's temp directory, as a log file is written
    while the run goes and object stores cannot append."""
    if "://" in output_dir:
        return os.path.join(tempfile.gettempdir(), "beam-tft-logs", f"{run_id}.log")
    return os.path.join(output_dir, LOGS_DIR, f"{run_id}.log")


def console_stream():
    """Where the person running the job reads: a duplicate of the process's
    stderr made before any run log redirected it (so it stays the terminal
    during a run; for faulthandler, say), or sys.__stderr__ when sys.stderr is
    not the process's own."""
    global _console_stream
    if _console_stream is None and _stderr_is_the_process_stderr():
        sys.stderr.flush()
        _console_stream = open(  # noqa: SIM115 - lives as long as the process
            os.dup(2), "w", buffering=1, encoding=sys.stderr.encoding, errors="backslashreplace"
        )
    return _console_stream if _console_stream is not None else sys.__stderr__


def _stderr_is_the_process_stderr() -> bool:
    try:
        return sys.stderr is sys.__stderr__ and sys.stderr.fileno() == 2
    except (AttributeError, ValueError, OSError):
        return False


@contextlib.contextmanager
def _stderr_into(log_file) -> Iterator[None]:
    """Points file descriptor 2 (and so the worker processes started meanwhile)
    at `log_file`, and sys.stderr at the console, while the block runs."""
    if not _stderr_is_the_process_stderr():
        yield
        return
    console = console_stream()
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(log_file.fileno(), 2)
    sys.stderr = console
    try:
        yield
    finally:
        console.flush()
        sys.stderr = sys.__stderr__
        os.dup2(saved, 2)
        os.close(saved)


def _prune(directory: str, keep: int) -> None:
    logs = sorted(name for name in os.listdir(directory) if name.endswith(".log"))
    for name in logs[: max(0, len(logs) - keep)]:
        with contextlib.suppress(OSError):
            os.remove(os.path.join(directory, name))


@contextlib.contextmanager
def run_log(path: str) -> Iterator[str]:
    """Writes the run's log to `path` while the block runs: every record at INFO
    and above (DEBUG too with --log_level DEBUG), and, unless the console shows
    INFO, what is written to stderr below Python (TensorFlow's C++ messages,
    the worker processes). Says the path on the console first. An exception
    leaving the block is recorded in the file with its traceback, so that the
    console can name the file instead of printing it. Keeps the newest
    KEEP_LOGS logs of the directory. Call configure_console first."""
    global _ended_with
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    _prune(directory, KEEP_LOGS - 1)
    console = _console or configure_console()
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(min(console.console_level, logging.INFO))
    handler.setFormatter(FileFormatter())
    handler.addFilter(WorkerProgressFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    note(f"log: {path}")
    console.log_path = path
    # With --log_level INFO or DEBUG the person asked for the chatter: stderr
    # then stays the console, TensorFlow's C++ lines and the workers' included.
    redirect = _stderr_into(handler.stream) if console.console_level > logging.INFO else None
    try:
        with redirect or contextlib.nullcontext():
            yield path
    except BaseException as error:
        record = logging.getLogger("pipeline").makeRecord(
            "pipeline", logging.INFO, __file__, 0, "the run ended with an exception",
            (), (type(error), error, error.__traceback__),
        )  # fmt: skip
        handler.handle(record)
        _ended_with = (error, path)
        raise
    finally:
        console.finish_progress()
        console.log_path = None
        root.removeHandler(handler)
        handler.close()
