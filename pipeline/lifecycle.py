"""The life of a command's run: stop signals, lost workers, clean-up, exit codes.

One implementation for the batch and the streaming command:

- SIGINT (Ctrl-C) and SIGTERM raise StopRequested in the main thread while a
  run is supervised, so that a stopped run unwinds through the same clean-up
  as a failed one.
- On the local multi-process runner, a worker process that dies fails the run
  with a message that names it (pipeline/children.py), rather than Beam's
  "Channel closed prematurely".
- However the run ends other than success, `on_abort` runs first (the batch
  job stops its workers and removes its staging directory there), then one
  line goes to stderr and the exit code says how it ended.
- `kill -USR1 <pid>` prints every thread's stack, to see where a run hangs.

Exit codes: 0 success; 1 a failed run; 2 bad flags, spec or inputs (found
before anything runs); 130 stopped by SIGINT or SIGTERM, as a shell reports a
process stopped by SIGINT.
"""

from __future__ import annotations

import contextlib
import dataclasses
import faulthandler
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence

from pipeline import children

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130


class RunFailed(RuntimeError):
    """The pipeline ran but its result must not be used (exit code 1).
    `keep_outputs`: leave what the run wrote for the user to inspect."""

    def __init__(self, message: str, keep_outputs: bool = False):
        super().__init__(message)
        self.keep_outputs = keep_outputs


class WorkerLost(RunFailed):
    """A worker process of the local runner ended abnormally (raised in the main
    thread, so that the run stops with a message that names the worker)."""


class StopRequested(Exception):
    """SIGINT or SIGTERM arrived (raised in the main thread by the handler)."""


@dataclasses.dataclass
class StopState:
    """Which stop signal arrived, or which worker process was lost, if any."""

    signal_name: str | None = None
    lost_worker: str | None = None
    # Whether the stop handler is installed (only in the main thread).
    handling_signals: bool = False

    def worker_lost(self, message: str) -> None:
        """Called from a watching thread: interrupts the main thread, whose
        handler then raises WorkerLost. Without the handler (a run started off the
        main thread) SIGTERM would kill the process, so it only records."""
        if self.lost_worker is None:
            self.lost_worker = message
            if self.handling_signals:
                os.kill(os.getpid(), signal.SIGTERM)

    def check(self) -> None:
        """Raises WorkerLost or StopRequested if a worker was lost or a stop signal
        arrived, even if the exception the handler raised was swallowed on its way
        up (some of the runner's threads catch everything)."""
        if self.lost_worker:
            raise WorkerLost(self.lost_worker)
        if self.signal_name:
            raise StopRequested(f"received {self.signal_name}")


@contextlib.contextmanager
def stop_signals_raise() -> Iterator[StopState]:
    """Turns SIGINT and SIGTERM into StopRequested while the block runs. Yields
    a StopState to check at the points where a run must not go on."""
    state = StopState()

    def on_stop(signum, frame):
        if state.lost_worker:
            raise WorkerLost(state.lost_worker)
        state.signal_name = signal.Signals(signum).name
        raise StopRequested(f"received {state.signal_name}")

    if threading.current_thread() is not threading.main_thread():
        yield state
        return
    previous = {sig: signal.signal(sig, on_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    state.handling_signals = True
    try:
        yield state
    finally:
        state.handling_signals = False
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def stop_in_chain(error: BaseException) -> BaseException | None:
    """The KeyboardInterrupt, StopRequested or WorkerLost that `error` wraps, if
    any (Beam wraps an exception raised while it builds or runs the graph)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KeyboardInterrupt | StopRequested | WorkerLost):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def answered_help_or_started(argv: Sequence[str], command: str, doc: str, option_classes) -> bool:
    """The start of every command: with --help, prints the command's flags and
    returns True; otherwise sets up the console (pipeline/logs.py) and the
    stack dump, and returns False."""
    from pipeline.logs import configure_console, console_stream
    from pipeline.options import console_level, help_requested, help_text

    if help_requested(argv):
        print(help_text(command, doc, option_classes))
        return True
    configure_console(console_level(argv))
    # The console, which a run log leaves on the terminal (fd 2 is the log then).
    register_stack_dump(console_stream())
    return False


def register_stack_dump(console=None) -> None:
    """`kill -USR1 <pid>` prints every thread's stack to `console` (default: the
    process's real stderr; a replaced sys.stderr may have no file descriptor).
    Main thread only."""
    if threading.current_thread() is threading.main_thread():
        with contextlib.suppress(AttributeError, ValueError, OSError):
            faulthandler.register(signal.SIGUSR1, file=console or sys.__stderr__, all_threads=True)


def stop_worker_processes() -> None:
    """Stops every process the run started (Beam's local runner does not)."""
    stopped = children.stop_descendants()
    if stopped:
        logging.info("stopped %d worker process(es) of the run", len(stopped))


def supervise(
    body: Callable[[StopState], int],
    on_abort: Callable[[bool], None],
    watch_workers: bool = False,
    aborted: str = "nothing was committed",
) -> int:
    """Runs `body(stop_state)` under stop signals (and, with `watch_workers`,
    watching the local runner's worker processes); returns its exit code, or
    the code of how it failed. On any failure or stop it first calls
    `on_abort(keep_outputs)`, then prints one line to stderr ending in
    `aborted` (what was left undone)."""
    watch = None
    try:
        with stop_signals_raise() as stop_state:
            watch = children.WorkerWatch(stop_state.worker_lost) if watch_workers else None
            with watch or contextlib.nullcontext():
                return body(stop_state)
    except WorkerLost as error:
        return _abort(on_abort, False, f"error: run failed: {error}; {aborted}", EXIT_FAILED)
    except RunFailed as error:
        return _abort(on_abort, error.keep_outputs, f"error: run failed: {error}", EXIT_FAILED)
    except (KeyboardInterrupt, StopRequested) as stop:
        message = f"error: {stop or 'interrupted'}: stopped; {aborted}"
        return _abort(on_abort, False, message, EXIT_INTERRUPTED)
    except Exception as error:
        stop = stop_in_chain(error)
        lost = watch.lost if watch is not None else None
        if isinstance(stop, WorkerLost) or lost:
            # The runner may notice first, with a message that names no process.
            logging.error("pipeline failed: %s: %s", type(error).__name__, error)
            message = f"error: run failed: {lost or stop}; {aborted}"
            return _abort(on_abort, False, message, EXIT_FAILED)
        if stop is not None:
            message = f"error: {stop or 'interrupted'}: stopped; {aborted}"
            return _abort(on_abort, False, message, EXIT_INTERRUPTED)
        logging.exception("pipeline failed")
        message = f"error: run failed: {type(error).__name__}: {error}\n{aborted}"
        return _abort(on_abort, False, message, EXIT_FAILED)


def _abort(on_abort: Callable[[bool], None], keep_outputs: bool, message: str, code: int) -> int:
    on_abort(keep_outputs)
    print(message, file=sys.stderr)
    return code


def wait_for(wait: Callable[[], None], stop_state: StopState) -> None:
    """Runs the blocking `wait` (a runner's wait_until_finish) in a thread while
    the main thread stays free to receive a stop signal; re-raises what `wait`
    raised, or StopRequested when a signal arrived first."""
    failure: list[BaseException] = []

    def waiting() -> None:
        try:
            wait()
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread
            failure.append(error)

    thread = threading.Thread(target=waiting, name="wait_until_finish", daemon=True)
    thread.start()
    # A join with a timeout returns to the interpreter, where signal handlers run.
    while thread.is_alive():
        thread.join(0.5)
    stop_state.check()
    if failure:
        raise failure[0]
